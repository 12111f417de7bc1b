/**
 * A small client for the Gatehouse REST API. It has no dependencies beyond
 * Node's fetch, so CI runners can import it cheaply.
 */

/** An error the Gatehouse API returned; `code` is one of the GATE_… codes in docs/errors.md. */
export class GatehouseApiError extends Error {
  override readonly name: string = "GatehouseApiError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface OpenSessionOptions {
  connection: string;
  ttlSeconds?: number;
  labels?: Record<string, string>;
}

export interface OpenedSession {
  id: string;
  /** Short-lived token for the connection; send it to the proxy, never log it. */
  token: string;
  expiresAt: string;
  connection: string;
  /** Base URL of the connection at an agent, e.g. http://agent:7080/c/claude. */
  proxyUrl: string;
}

/** The signed count and last hash of a closed session's record (compact JWS over them in `jws`). */
export interface SessionSeal {
  count: number;
  lastHash: string;
  sealedAt: string;
  jws: string;
}

/** A session without its exchanges, as lists, closes and `getSessionSummary` return it. */
export interface SessionSummary {
  id: string;
  connection: string;
  subject: { kind: string; id: string; claims: Record<string, string> };
  labels: Record<string, string>;
  status: "open" | "closed" | "expired";
  createdAt: string;
  expiresAt: string;
  closedAt: string | null;
  /** Null until the session is closed. */
  seal: SessionSeal | null;
}

/** A policy rule that matched an exchange, or an approval outcome: names, never the matched text. */
export interface PolicyDecisionView {
  at: string;
  policy: string;
  rule: string;
  action: "allow" | "deny" | "require_approval" | "flag";
  stage: "request" | "response";
  message: string;
  /** The match fields that matched, e.g. `["tool", "toolInput"]`. */
  matched: string[];
  /** For require_approval: the approval and where it stood at this point. */
  approval: { id: string; status: string; decidedBy: string; reason: string } | null;
  /** Response rules: the tool call judged, its input as the client would have received it (masked). */
  toolCall: { id: string; name: string; input: string } | null;
}

export interface ExchangeView {
  id: string;
  kind: string;
  method: string;
  path: string;
  status: number | null;
  outcome: string | null;
  startedAt: string;
  endedAt: string | null;
  /**
   * What the policies made of it: `deny` (a rule denied it, or its approval was denied,
   * expired, cancelled or could not be asked for), `pending`, `approved`, `flag`, or `allow`.
   */
  decision: "allow" | "flag" | "pending" | "approved" | "deny";
  /** Every rule that matched and every approval outcome, in order. */
  decisions: PolicyDecisionView[];
  error: { code: string; message: string } | null;
  /** Secrets masked in the response, per type (counts, never values); null while in progress. */
  masked: Record<string, number> | null;
  request: { headers: Record<string, string>; body: unknown };
  response: {
    status: number;
    headers: Record<string, string>;
    body?: unknown;
    message?: Record<string, unknown> | null;
    complete?: boolean;
    streamError?: { type: string; message: string } | null;
  } | null;
}

export interface SessionView extends SessionSummary {
  exchanges: ExchangeView[];
}

/** An agent account, as `GET /v1/agents` shows it. */
export interface AgentAccount {
  id: string;
  name: string;
  createdAt: string;
  /** When its token was revoked; null while it may link. */
  revokedAt: string | null;
  lastSeenAt: string | null;
  /** Connections its agents may serve; null: every connection. */
  connections: string[] | null;
  /** Links of this account to the control-plane replica that answered. */
  live: Array<{
    agentId: string;
    version: string;
    proxyUrl: string;
    connections: string[];
    connectedAt: string;
  }>;
}

/** Where an approval is: `pending` until an approver decides, it expires, or the agent gives up on it. */
export type ApprovalStatus = "pending" | "approved" | "denied" | "expired" | "cancelled";

/**
 * A request, or a tool call in the model's answer, that an agent holds until a
 * person decides, as `GET /v1/approvals/{id}` shows it.
 */
export interface ApprovalView {
  id: string;
  status: ApprovalStatus;
  sessionId: string;
  exchangeId: string;
  connection: string;
  /** Who opened the session: they may not decide it themselves. */
  requester: { kind: string; id: string };
  policy: string;
  rule: string;
  /** `request`: a request to the model is held; `response`: a tool call in its answer. */
  stage: "request" | "response";
  /** The rule's message. */
  message: string;
  /** What is held, masked, at most 4 KiB. */
  preview: string;
  /** The names of the match fields that matched. */
  matched: string[];
  createdAt: string;
  expiresAt: string;
  decidedAt: string | null;
  /** An API key id, `<issuer>#<sub>` of a person, `system` (expiry) or `agent` (cancelled). */
  decidedBy: string | null;
  reason: string | null;
}

export interface ListApprovalsQuery {
  status?: ApprovalStatus;
  limit?: number;
  cursor?: string;
}

export interface ListSessionsQuery {
  connection?: string;
  status?: "open" | "closed" | "expired";
  subject?: string;
  limit?: number;
  cursor?: string;
}

export interface GatehouseClientOptions {
  /** Control-plane REST base URL, e.g. http://127.0.0.1:7070. */
  url: string;
  /**
   * Sent as `Authorization: Bearer`: an API key (the control plane's admin key,
   * `GATEHOUSE_ADMIN_TOKEN` or the one `gatehouse up` keeps); or, for a CI runner, the
   * job's OIDC ID token, to open a session (`ciIdToken` obtains it), and that session's own
   * token, to close it.
   */
  token: string;
  fetch?: typeof fetch;
}

export class GatehouseClient {
  private readonly base: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: GatehouseClientOptions) {
    this.base = options.url.replace(/\/+$/, "");
    this.fetch = options.fetch ?? fetch;
  }

  openSession(options: OpenSessionOptions): Promise<OpenedSession> {
    return this.call("POST", "/v1/sessions", options);
  }

  closeSession(id: string): Promise<SessionSummary> {
    return this.call("DELETE", `/v1/sessions/${encodeURIComponent(id)}`);
  }

  /** The session with every exchange rebuilt from its record; for a large record, see {@link events}. */
  getSession(id: string): Promise<SessionView> {
    return this.call("GET", `/v1/sessions/${encodeURIComponent(id)}`);
  }

  /** The session without its exchanges (status, seal): cheap whatever the size of its record. */
  getSessionSummary(id: string): Promise<SessionSummary> {
    return this.call("GET", `/v1/sessions/${encodeURIComponent(id)}?view=summary`);
  }

  listSessions(
    query: ListSessionsQuery = {},
  ): Promise<{ items: SessionSummary[]; nextCursor: string | null }> {
    return this.call("GET", `/v1/sessions${queryString(query)}`);
  }

  /** The raw NDJSON event stream of a session; with `follow`, it stays open and tails new events. */
  async events(
    id: string,
    options: { after?: number; follow?: boolean; signal?: AbortSignal } = {},
  ): Promise<Response> {
    const qs = `?after=${options.after ?? 0}${options.follow ? "&follow=1" : ""}`;
    const init: RequestInit = { headers: this.headers() };
    if (options.signal) init.signal = options.signal;
    return this.send(`/v1/sessions/${encodeURIComponent(id)}/events${qs}`, init);
  }

  /** The public keys that verify session tokens and seals (JWK set). */
  jwks(): Promise<{ keys: Array<Record<string, unknown>> }> {
    return this.call("GET", "/v1/.well-known/jwks.json");
  }

  /**
   * Creates an agent account and returns its token (shown only here). With
   * `connections`, its agents may serve and record for only those; by default, every connection.
   */
  createAgent(
    name: string,
    options: { connections?: string[] } = {},
  ): Promise<{ id: string; name: string; connections: string[] | null; token: string }> {
    return this.call("POST", "/v1/agents", {
      name,
      ...(options.connections ? { connections: options.connections } : {}),
    });
  }

  listAgents(): Promise<{ items: AgentAccount[] }> {
    return this.call("GET", "/v1/agents");
  }

  /** Revokes an agent's token: the control plane refuses it from now on and ends its live links. */
  revokeAgent(id: string): Promise<Omit<AgentAccount, "live">> {
    return this.call("DELETE", `/v1/agents/${encodeURIComponent(id)}`);
  }

  /** Approvals, newest first; `status: "pending"` lists those waiting for a decision. */
  listApprovals(
    query: ListApprovalsQuery = {},
  ): Promise<{ items: ApprovalView[]; nextCursor: string | null }> {
    return this.call("GET", `/v1/approvals${queryString(query)}`);
  }

  getApproval(id: string): Promise<ApprovalView> {
    return this.call("GET", `/v1/approvals/${encodeURIComponent(id)}`);
  }

  /**
   * Lets the held request or tool call go on (role approver; not the requester).
   * `reason` (1 to 1000 characters) is recorded with the decision.
   *
   * @throws GatehouseApiError GATE_CONFLICT (409) when it was already decided or expired,
   *   GATE_FORBIDDEN (403) for the requester themself, GATE_NOT_FOUND (404).
   */
  approve(id: string, reason: string): Promise<ApprovalView> {
    return this.call("POST", `/v1/approvals/${encodeURIComponent(id)}/approve`, { reason });
  }

  /** Refuses the held request or tool call; otherwise as {@link approve}. */
  deny(id: string, reason: string): Promise<ApprovalView> {
    return this.call("POST", `/v1/approvals/${encodeURIComponent(id)}/deny`, { reason });
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.options.token}`, accept: "application/json" };
  }

  /** Sends a request; failures to reach the API and error answers become GatehouseApiError. */
  private async send(path: string, init: RequestInit): Promise<Response> {
    let res: Response;
    try {
      res = await this.fetch(`${this.base}${path}`, init);
    } catch (error) {
      if (init.signal?.aborted) throw error;
      throw new GatehouseApiError(
        0,
        "GATE_UNREACHABLE",
        `cannot reach Gatehouse at ${this.base}: ${(error as Error).message}`,
      );
    }
    if (!res.ok) throw await apiError(res);
    return res;
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const init: RequestInit = { method, headers: this.headers() };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { ...this.headers(), "content-type": "application/json" };
    }
    const res = await this.send(path, init);
    return (await res.json()) as T;
  }
}

/** `?k=v&…` of the fields set, or nothing. */
function queryString(query: object): string {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, String(v));
  return params.size > 0 ? `?${params}` : "";
}

async function apiError(res: Response): Promise<GatehouseApiError> {
  const text = await res.text();
  try {
    const { error } = JSON.parse(text) as { error: { code: string; message: string } };
    return new GatehouseApiError(res.status, error.code, error.message);
  } catch {
    return new GatehouseApiError(
      res.status,
      "GATE_UNEXPECTED_RESPONSE",
      `HTTP ${res.status}: ${text.slice(0, 200)}`,
    );
  }
}
