/**
 * A session as people read it: its exchanges, each with the request and the
 * response rebuilt from the recorded events (bodies joined and parsed, a
 * streamed Anthropic response reassembled into its final message).
 */
import type { SessionRecord, StoredEvent } from "../store/types.js";
import { iso, isoMicros, isoOrNull } from "../time.js";
import { reassembleMessage } from "./anthropic-message.js";
import { sessionStatus } from "./service.js";

export interface ExchangeView {
  id: string;
  kind: string;
  method: string;
  path: string;
  /** Status sent to the client; null while the exchange is in progress. */
  status: number | null;
  /** completed | cancelled | failed | refused, or null while in progress. */
  outcome: string | null;
  startedAt: string;
  endedAt: string | null;
  /**
   * What the policies made of it: `deny` (a rule denied it, or its approval was denied,
   * expired, cancelled or could not be asked for), `pending` (an approval is awaited),
   * `approved`, `flag` (flagged only), or `allow` (nothing matched, or an allow rule).
   */
  decision: "allow" | "flag" | "pending" | "approved" | "deny";
  /** Every rule that matched and every approval outcome, in order (`decisions` events). */
  decisions: PolicyDecisionView[];
  error: { code: string; message: string } | null;
  /** Secrets masked in the response, per type (counts, never values); null while in progress. */
  masked: Record<string, number> | null;
  request: { headers: Record<string, string>; body: unknown };
  response: {
    status: number;
    headers: Record<string, string>;
    body?: unknown;
    /** The reassembled message of a streamed (SSE) Messages response. */
    message?: Record<string, unknown> | null;
    /** Whether the stream reached message_stop. */
    complete?: boolean;
    /** An error event the stream carried. */
    streamError?: { type: string; message: string } | null;
  } | null;
}

/** A `policy.decision` event as recorded: names and outcomes, never the matched text. */
export interface PolicyDecisionView {
  at: string;
  policy: string;
  rule: string;
  action: string;
  stage: string;
  message: string;
  matched: string[];
  approval: { id: string; status: string; decidedBy: string; reason: string } | null;
  /** Response rules: the tool call judged, as the client would have received it. */
  toolCall: { id: string; name: string; input: string } | null;
}

const FAILED_APPROVAL = new Set(["denied", "expired", "cancelled", "unavailable"]);

function decisionView(e: StoredEvent): PolicyDecisionView {
  const a = e.attrs;
  const text = (key: string) => String(a[key] ?? "");
  return {
    at: isoMicros(e.at),
    policy: text("policy"),
    rule: text("rule"),
    action: text("action"),
    stage: text("stage"),
    message: text("message"),
    matched: Array.isArray(a.matched) ? a.matched.map(String) : [],
    approval: text("approvalId")
      ? {
          id: text("approvalId"),
          status: text("approvalStatus"),
          decidedBy: text("decidedBy"),
          reason: text("reason"),
        }
      : null,
    toolCall:
      text("toolUseId") || text("toolName")
        ? { id: text("toolUseId"), name: text("toolName"), input: text("preview") }
        : null,
  };
}

/** The exchange's overall decision from its decision events; see {@link ExchangeView.decision}. */
function overallDecision(decisions: readonly PolicyDecisionView[]): ExchangeView["decision"] {
  const approvals = new Map<string, string>();
  for (const d of decisions) if (d.approval) approvals.set(d.approval.id, d.approval.status);
  if (
    decisions.some((d) => d.action === "deny") ||
    [...approvals.values()].some((s) => FAILED_APPROVAL.has(s))
  ) {
    return "deny";
  }
  if ([...approvals.values()].some((s) => s === "pending")) return "pending";
  if (approvals.size > 0) return "approved";
  return decisions.some((d) => d.action === "flag") ? "flag" : "allow";
}

/**
 * A session without its exchanges: what lists show, and all that a verifier
 * needs besides the event stream (the seal).
 */
export interface SessionSummary {
  id: string;
  connection: string;
  subject: SessionRecord["subject"];
  labels: Record<string, string>;
  status: string;
  createdAt: string;
  expiresAt: string;
  closedAt: string | null;
  /** The signed count and last hash of the record; null until the session is closed. */
  seal: { count: number; lastHash: string; sealedAt: string; jws: string } | null;
}

export interface SessionView extends SessionSummary {
  exchanges: ExchangeView[];
}

export function sessionSummary(session: SessionRecord, now: number): SessionSummary {
  return {
    id: session.id,
    connection: session.connection,
    subject: session.subject,
    labels: session.labels,
    status: sessionStatus(session, now),
    createdAt: iso(session.createdAt),
    expiresAt: iso(session.expiresAt),
    closedAt: isoOrNull(session.closedAt),
    seal: session.seal && { ...session.seal, sealedAt: iso(session.seal.sealedAt) },
  };
}

/**
 * Recorded header pairs as one object, repeated names joined. Header names are
 * whatever a client or upstream sent, `__proto__` and `constructor` included: an
 * object without a prototype keeps every one of them as an ordinary key (on a
 * plain `{}`, `__proto__` would set the prototype and vanish from the JSON).
 */
function headerObject(pairs: unknown): Record<string, string> {
  const out: Record<string, string> = Object.create(null);
  if (!Array.isArray(pairs)) return out;
  for (const pair of pairs) {
    if (!Array.isArray(pair)) continue;
    const [name, value] = pair as [string, string];
    const earlier = out[name];
    out[name] = earlier === undefined ? value : `${earlier}, ${value}`;
  }
  return out;
}

/**
 * The masking summary of an exchange's end; `{}` for records made before it was kept. Type names
 * come from the agent, so the object has no prototype for a `__proto__` to reach.
 */
function maskedCounts(masked: unknown): Record<string, number> {
  const out: Record<string, number> = Object.create(null);
  if (masked === null || typeof masked !== "object") return out;
  for (const [type, count] of Object.entries(masked)) {
    if (typeof count === "number") out[type] = count;
  }
  return out;
}

/** JSON when it parses, text when it is UTF-8, else base64. */
function renderBody(chunks: Uint8Array[]): unknown {
  if (chunks.length === 0) return null;
  const bytes = Buffer.concat(chunks);
  if (bytes.length === 0) return null;
  const text = new TextDecoder("utf-8", { fatal: true });
  let decoded: string;
  try {
    decoded = text.decode(bytes);
  } catch {
    return { base64: bytes.toString("base64") };
  }
  try {
    return JSON.parse(decoded);
  } catch {
    return decoded;
  }
}

interface ExchangeEvents {
  head?: StoredEvent;
  requestBody: Uint8Array[];
  responseHead?: StoredEvent;
  responseBody: Uint8Array[];
  sse: Array<{ event: string; data: string }>;
  decisions: PolicyDecisionView[];
  end?: StoredEvent;
}

export function exchangeViews(events: Iterable<StoredEvent>): ExchangeView[] {
  const byExchange = new Map<string, ExchangeEvents>();
  for (const e of events) {
    // Kept for the record's completeness; there is nothing in it a view can show.
    if (e.kind === "unrecognized") continue;
    let x = byExchange.get(e.exchangeId);
    if (!x) {
      x = { requestBody: [], responseBody: [], sse: [], decisions: [] };
      byExchange.set(e.exchangeId, x);
    }
    switch (e.kind) {
      case "request.head":
        x.head = e;
        break;
      case "request.body":
        if (e.body) x.requestBody.push(e.body);
        break;
      case "response.head":
        x.responseHead = e;
        break;
      case "response.body":
        if (e.body) x.responseBody.push(e.body);
        break;
      case "response.sse":
        x.sse.push({ event: String(e.attrs.event ?? ""), data: String(e.attrs.data ?? "") });
        break;
      case "policy.decision":
        x.decisions.push(decisionView(e));
        break;
      case "exchange.end":
        x.end = e;
        break;
    }
  }
  const views: ExchangeView[] = [];
  for (const [id, x] of byExchange) {
    const head = x.head?.attrs ?? {};
    const end = x.end?.attrs;
    let response: ExchangeView["response"] = null;
    if (x.responseHead) {
      response = {
        status: Number(x.responseHead.attrs.status),
        headers: headerObject(x.responseHead.attrs.headers),
      };
      if (x.sse.length > 0) {
        const rebuilt = reassembleMessage(x.sse);
        response.message = rebuilt.message;
        response.complete = rebuilt.complete;
        response.streamError = rebuilt.error;
      } else {
        response.body = renderBody(x.responseBody);
      }
    }
    const errorCode = end ? String(end.errorCode ?? "") : "";
    views.push({
      id,
      kind: String(head.kind ?? ""),
      method: String(head.method ?? ""),
      path: String(head.path ?? ""),
      status: end ? Number(end.status) : null,
      outcome: end ? String(end.outcome) : null,
      startedAt: isoMicros(x.head?.at ?? 0),
      endedAt: x.end ? isoMicros(x.end.at) : null,
      decision: overallDecision(x.decisions),
      decisions: x.decisions,
      error: errorCode ? { code: errorCode, message: String(end?.errorMessage ?? "") } : null,
      masked: end ? maskedCounts(end.masked) : null,
      request: { headers: headerObject(head.headers), body: renderBody(x.requestBody) },
      response,
    });
  }
  return views;
}

export function sessionView(session: SessionRecord, events: Iterable<StoredEvent>, now: number): SessionView {
  return {
    ...sessionSummary(session, now),
    exchanges: exchangeViews(events),
  };
}
