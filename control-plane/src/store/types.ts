/**
 * The session store, as the rest of the control plane sees it. Each backend
 * (store/sqlite, store/mongo) implements {@link Store} and passes the shared
 * compliance suite in test/conformance/store.
 *
 * Times are milliseconds since the Unix epoch unless a name says otherwise.
 */

/** Who opened a session. */
export interface Subject {
  /** How the subject proved who it is. */
  kind: "api-key" | "oidc";
  /** Stable identifier: the API key id, or `<issuer>#<sub>` for OIDC. */
  id: string;
  /** Identifying claims kept with the record (repository, workflow, run id, actor…). */
  claims: Record<string, string>;
}

export interface SessionRecord {
  id: string;
  connection: string;
  subject: Subject;
  labels: Record<string, string>;
  createdAt: number;
  expiresAt: number;
  /** Set once, when the session is closed; null while it is open. */
  closedAt: number | null;
  /** Signature over the event chain, set when the session is closed. */
  seal: Seal | null;
}

/**
 * Proof that a session's record is complete and unaltered: the control plane
 * signs how many events the session had and the hash of the last one.
 */
export interface Seal {
  count: number;
  lastHash: string;
  sealedAt: number;
  /** Compact JWS (EdDSA) over `{sid, count, lastHash, sealedAt}`. */
  jws: string;
}

export type SessionStatus = "open" | "closed" | "expired";

export interface SessionFilter {
  connection?: string;
  /** `expired` means open but past `expiresAt` at `now`. */
  status?: SessionStatus;
  subjectId?: string;
  /** Reference time for the `open`/`expired` distinction. */
  now: number;
  limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
}

export interface Page<T> {
  items: T[];
  /** Pass as `cursor` to get the next page; null on the last page. */
  nextCursor: string | null;
}

export type EventKind =
  | "request.head"
  | "request.body"
  | "response.head"
  | "response.body"
  | "response.sse"
  | "exchange.end"
  /** A policy rule matched, or an approval it asked for was decided (attrs: the PolicyDecision). */
  | "policy.decision"
  /**
   * An event whose payload this control plane does not know, from a newer
   * agent: kept (and chained) like any other so the record stays complete.
   * `body` holds the encoded SessionEvent as the agent sent it, for a later
   * version to read; `attrs.payload` names the payload when it is known.
   * Session views skip it.
   */
  | "unrecognized";

/** An event as the agent reported it, before the store sequenced it. */
export interface NewEvent {
  /** `<exchangeId>:<index>`; storing the same id twice in a session is a no-op. */
  id: string;
  sessionId: string;
  exchangeId: string;
  /** When the agent observed it, in microseconds since the Unix epoch. */
  at: number;
  kind: EventKind;
  /** The event's fields other than bytes, as plain JSON. */
  attrs: Record<string, unknown>;
  /** Raw bytes for body events; null otherwise. Any size. */
  body: Uint8Array | null;
}

export interface StoredEvent extends NewEvent {
  /** 1, 2, 3… within the session, in the order the store accepted the events. */
  seq: number;
  /** Hex SHA-256 chaining this event to the previous one; see sessions/chain.ts. */
  hash: string;
}

export interface AppendResult {
  appended: number;
  duplicates: number;
  /** The sessions that received new events, with their chain tail after the append. */
  tails: Map<string, ChainTail>;
}

export interface ChainTail {
  count: number;
  lastHash: string;
}

/** An agent allowed to dial the control plane. Only the token's hash is kept. */
export interface AgentRecord {
  id: string;
  name: string;
  /** Hex SHA-256 of the agent token. */
  tokenHash: string;
  createdAt: number;
  revokedAt: number | null;
  lastSeenAt: number | null;
  /**
   * The connections the agent may serve and record for; null: every connection.
   * Fixed when the account is created.
   */
  connections: string[] | null;
}

/** What a REST caller may do: change things, decide approvals, or only read. */
export type Role = "admin" | "approver" | "auditor";

/**
 * A credential for the REST API: an API key made for automation
 * (`POST /v1/api-keys`), or the token an admin's OIDC sign-in was given. Only
 * the key's hash is kept; the key itself is shown once, when it is made.
 */
export interface ApiKeyRecord {
  /** UUIDv7, so ids sort by creation time. */
  id: string;
  /** What it is for (an API key), or who signed in (a login). */
  name: string;
  role: Role;
  kind: "api-key" | "login";
  /** Hex SHA-256 of the key. */
  keyHash: string;
  /** The actor that made it: an API key id, `<issuer>#<sub>` of a login, or `bootstrap-admin`. */
  createdBy: string;
  createdAt: number;
  /** Null: never expires. */
  expiresAt: number | null;
  revokedAt: number | null;
  lastUsedAt: number | null;
}

export interface ApiKeyFilter {
  limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
}

/** A session closed before its token expired: agents must refuse the token until `expiresAt`. */
export interface RevokedSessionRecord {
  id: string;
  expiresAt: number;
  closedAt: number;
}

/**
 * One entry of the audit log: who did what to which thing, kept apart from
 * session records so administrative actions (closing a session, revoking an
 * agent, purging old records) can be reviewed later.
 */
export interface AuditRecord {
  /** UUIDv7, so ids sort by creation time; storing an id twice is refused. */
  id: string;
  at: number;
  /** Who acted: an admin key id, `<issuer>#<sub>`, or `system` for the control plane itself. */
  actor: string;
  /** What was done, e.g. `session.close`, `agent.revoke`, `retention.purge`. */
  action: string;
  /** The id of what it was done to; null when the action has no single target. */
  target: string | null;
  /** Plain JSON with whatever else the action needs to be understood. */
  details: Record<string, unknown>;
}

export interface AuditFilter {
  limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
}

export type ApprovalStatus = "pending" | "approved" | "denied" | "expired" | "cancelled";

/**
 * A request, or a tool call in the model's answer, that an agent holds until a
 * person decides (a `require_approval` rule matched). Made when the agent asks;
 * decided once: a decided approval never changes again.
 */
export interface ApprovalRecord {
  /** Made by the agent (a UUID); the agent resends it after a relink. */
  id: string;
  sessionId: string;
  exchangeId: string;
  connection: string;
  /** The agent account whose agent asked. */
  agentAccountId: string;
  /** Who opened the session (a copy of the session's subject id and kind, for listing and the self-approval check). */
  requester: { kind: Subject["kind"]; id: string };
  policy: string;
  rule: string;
  stage: "request" | "response";
  /** The rule's message. */
  message: string;
  /** What is held, masked by the agent, at most 64 KiB (and a note of what was cut). */
  preview: string;
  /** The match fields that matched; names only. */
  matched: string[];
  status: ApprovalStatus;
  createdAt: number;
  /** After this instant a pending approval is expired. */
  expiresAt: number;
  decidedAt: number | null;
  /** An API key id, `<issuer>#<sub>` of a person, `system` (expiry) or `agent` (cancelled by the agent). */
  decidedBy: string | null;
  reason: string | null;
}

export interface ApprovalFilter {
  /** Only approvals in this status. */
  status?: ApprovalStatus;
  limit: number;
  /** Opaque cursor from a previous page's `nextCursor`. */
  cursor?: string;
}

/** How an approval was decided: only a pending approval takes it. */
export interface ApprovalDecisionUpdate {
  status: Exclude<ApprovalStatus, "pending">;
  decidedAt: number;
  decidedBy: string;
  reason: string;
}

/**
 * A policy set over REST (`PUT /v1/policies/{name}`). Policies from the config
 * file are not stored: they are the file's.
 */
export interface StoredPolicyRecord {
  name: string;
  /** The policy as validated (connections, rules…), plain JSON. */
  body: Record<string, unknown>;
  updatedAt: number;
  /** The actor that set it. */
  updatedBy: string;
}

/** What one {@link Store.purgeClosedSessions} call removed. */
export interface PurgeResult {
  sessions: number;
  events: number;
  /**
   * The ids of the sessions removed, for the audit log. With several control
   * planes purging at once, a session may be named by more than one of them.
   */
  ids: string[];
}

export interface Store {
  /** Fails with GATE_STORE_UNAVAILABLE when the store cannot be reached. */
  ping(): Promise<void>;
  close(): Promise<void>;

  insertSession(session: SessionRecord): Promise<void>;
  getSession(id: string): Promise<SessionRecord | null>;
  /** Newest first. */
  listSessions(filter: SessionFilter): Promise<Page<SessionRecord>>;
  /** Closes an open session; a closed one is returned unchanged. Null if unknown. */
  closeSession(id: string, closedAt: number): Promise<SessionRecord | null>;
  /**
   * Seals a session, unless the seal it has covers more events: a seal only
   * moves forward, so a seal computed before later events arrived, stored
   * after them, cannot shorten the proven record. Resolves with the seal in
   * effect afterwards. Fails with GATE_NOT_FOUND for an unknown session.
   */
  setSeal(id: string, seal: Seal): Promise<Seal>;
  /**
   * Sessions closed before they expired, whose tokens must still be refused at
   * `now`, ordered by `expiresAt`. With `closedAfter`, only those with
   * `closedAt > closedAfter`, ordered by `closedAt`: what a replica polls for
   * to pass closes made at other replicas on to its own agents.
   */
  listRevokedSessions(now: number, closedAfter?: number): Promise<RevokedSessionRecord[]>;

  /**
   * Sequences, chains and stores events, atomically per call. Events of one
   * session keep their relative order. Events already stored (same session and
   * id) are skipped, so a resent batch changes nothing.
   */
  appendEvents(events: NewEvent[]): Promise<AppendResult>;
  /** Events with `seq > afterSeq`, in order, at most `limit`. */
  readEvents(sessionId: string, afterSeq: number, limit: number): Promise<StoredEvent[]>;
  chainTail(sessionId: string): Promise<ChainTail>;

  insertAgent(agent: AgentRecord): Promise<void>;
  findAgentByTokenHash(tokenHash: string): Promise<AgentRecord | null>;
  listAgents(): Promise<AgentRecord[]>;
  revokeAgent(id: string, revokedAt: number): Promise<AgentRecord | null>;
  touchAgent(id: string, lastSeenAt: number): Promise<void>;

  /** Stores an API key record; an id or key hash stored before is refused with GATE_INVALID_REQUEST. */
  insertApiKey(key: ApiKeyRecord): Promise<void>;
  findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | null>;
  getApiKey(id: string): Promise<ApiKeyRecord | null>;
  /** Newest first, by `(createdAt, id)` descending, paged by keyset like {@link Store.listSessions}. */
  listApiKeys(filter: ApiKeyFilter): Promise<Page<ApiKeyRecord>>;
  /** Revokes a key; one revoked before keeps its first `revokedAt`. Null if unknown. */
  revokeApiKey(id: string, revokedAt: number): Promise<ApiKeyRecord | null>;
  /** Records a use; `lastUsedAt` only moves forward. */
  touchApiKey(id: string, lastUsedAt: number): Promise<void>;

  /** Stores an audit entry; an id stored before is refused with GATE_INVALID_REQUEST. */
  appendAudit(entry: AuditRecord): Promise<void>;
  /**
   * Newest first, by `(at, id)` descending, paged by keyset like
   * {@link Store.listSessions}: entries added while a caller pages do not shift
   * later pages.
   */
  listAudit(filter: AuditFilter): Promise<Page<AuditRecord>>;

  /**
   * Stores a new pending approval. An id stored before is not stored again: the
   * record already stored is returned as it is (the agent resends after a relink).
   */
  insertApproval(approval: ApprovalRecord): Promise<ApprovalRecord>;
  getApproval(id: string): Promise<ApprovalRecord | null>;
  /** Several at once (ids not stored are left out), in no particular order. */
  getApprovals(ids: readonly string[]): Promise<ApprovalRecord[]>;
  /** Newest first, by `(createdAt, id)` descending, paged by keyset like {@link Store.listSessions}. */
  listApprovals(filter: ApprovalFilter): Promise<Page<ApprovalRecord>>;
  /**
   * Decides a pending approval, atomically: of two decisions racing (two
   * approvers, or an approver and expiry), exactly one is taken. Resolves with
   * the record afterwards (unchanged when it was not pending: the caller sees
   * who decided first); null if unknown.
   */
  decideApproval(id: string, decision: ApprovalDecisionUpdate): Promise<ApprovalRecord | null>;
  /**
   * Marks every pending approval with `expiresAt <= now` expired (`decidedBy:
   * "system"`, `reason` as given) and returns those it marked.
   */
  expireApprovals(now: number, reason: string): Promise<ApprovalRecord[]>;

  /** Policies set over REST, by name ascending. */
  listPolicies(): Promise<StoredPolicyRecord[]>;
  /** Creates or replaces the policy of that name. */
  putPolicy(policy: StoredPolicyRecord): Promise<void>;
  /** Removes it; false when there was none. */
  deletePolicy(name: string): Promise<boolean>;

  /**
   * Retention: deletes up to `limit` sessions closed before `closedBefore`
   * (`closedAt < closedBefore`), oldest close first, with all their events and
   * event bodies. Open sessions, and events of sessions with no session record,
   * are never touched. Each call does a bounded amount of work; callers repeat
   * it until it reports 0 sessions. A call interrupted part-way leaves the
   * sessions it had not finished in place, so the next call completes them.
   */
  purgeClosedSessions(closedBefore: number, limit: number): Promise<PurgeResult>;
}
