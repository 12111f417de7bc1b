/**
 * The collections and indexes of the MongoDB session store, created
 * idempotently when a store is opened, and the shape of their documents.
 *
 * Only what MongoDB-compatible servers broadly share is used: plain
 * (non-partial, non-sparse) indexes, top-level field names without dots or
 * dollars, no transactions, no server-side JavaScript. Free-form maps (labels,
 * claims, event attrs, JWKs, audit details) are kept as JSON text, because
 * their keys may hold dots or start with `$`, which such servers refuse as
 * field names, and because the hash chain covers attrs as they survive JSON.
 *
 * @see https://www.mongodb.com/docs/manual/indexes/
 * @see https://www.mongodb.com/docs/manual/core/index-partial/ (not used: FerretDB lacks it)
 */
import type { ObjectId } from "mongodb";
import type { ApiKeyRecord, ApprovalDecisionUpdate, ApprovalRecord, Seal } from "../types.js";

/**
 * The version of the layout below. Kept in the `meta` collection so that a
 * later release can migrate a database and an older one refuses a newer one.
 *
 * - 1: the first release.
 * - 2: the `api_keys` collection (REST credentials, by key hash). Its
 *   indexes are created in older databases as in new ones, when a store opens.
 * - 3: the `approvals`, `approval_decisions` and `policies` collections. The
 *   approvals' indexes are created in older databases as in new ones, when a
 *   store opens; the other two need none but `_id`'s.
 */
export const MONGO_SCHEMA_VERSION = 3;

export const COLLECTIONS = {
  sessions: "sessions",
  events: "events",
  /** Pieces of event bodies too large for one document. */
  chunks: "event_body_chunks",
  agents: "agents",
  audit: "audit",
  /** REST credentials: API keys and the tokens of OIDC sign-ins. */
  apiKeys: "api_keys",
  /** Requests (or tool calls) agents hold until a person decides. */
  approvals: "approvals",
  /** The one decision each approval takes, claimed by its `_id`; see {@link ApprovalDecisionDocument}. */
  approvalDecisions: "approval_decisions",
  /** Policies set over REST. */
  policies: "policies",
  /** Schema version and the longest session lifetime seen (see {@link MetaDocument}). */
  meta: "meta",
} as const;

export type CollectionName = (typeof COLLECTIONS)[keyof typeof COLLECTIONS];

export interface IndexSpec {
  collection: CollectionName;
  name: string;
  key: Record<string, 1 | -1>;
  unique?: true;
}

/**
 * Index names the store's queries name in `hint`, so a plan does not depend on
 * the planner's statistics (servers that do not use hints ignore them).
 */
export const INDEX = {
  sessionsByTime: "sessions_by_time",
  sessionsByState: "sessions_by_state",
  sessionsByConnection: "sessions_by_connection",
  sessionsByConnectionState: "sessions_by_connection_state",
  sessionsBySubject: "sessions_by_subject",
  sessionsRevoked: "sessions_revoked",
  sessionsRevokedByClose: "sessions_revoked_by_close",
  sessionsByClose: "sessions_by_close",
  eventsBySeq: "events_by_seq",
  eventsById: "events_by_id",
  chunksByBody: "chunks_by_body",
  chunksBySession: "chunks_by_session",
  agentsByToken: "agents_by_token",
  auditByTime: "audit_by_time",
  apiKeysByHash: "api_keys_by_hash",
  apiKeysByTime: "api_keys_by_time",
  approvalsByTime: "approvals_by_time",
  approvalsByStatus: "approvals_by_status",
  approvalsByExpiry: "approvals_by_expiry",
} as const;

/**
 * Session listings walk one of these in `(createdAt, _id)` order, newest
 * first, so a page costs about `limit` index entries however many sessions
 * there are. Status filters put `closed` (an equality) ahead of the sort key,
 * and carry `expiresAt` after it, so open/expired is decided on index keys
 * without fetching rejected documents. `revoked` does the same for the
 * revocation polls: only sessions closed before they expired have it set.
 */
export const INDEXES: readonly IndexSpec[] = [
  { collection: "sessions", name: INDEX.sessionsByTime, key: { createdAt: -1, _id: -1 } },
  {
    collection: "sessions",
    name: INDEX.sessionsByState,
    key: { closed: 1, createdAt: -1, _id: -1, expiresAt: 1 },
  },
  {
    collection: "sessions",
    name: INDEX.sessionsByConnection,
    key: { connection: 1, createdAt: -1, _id: -1 },
  },
  {
    collection: "sessions",
    name: INDEX.sessionsByConnectionState,
    key: { connection: 1, closed: 1, createdAt: -1, _id: -1, expiresAt: 1 },
  },
  {
    collection: "sessions",
    name: INDEX.sessionsBySubject,
    key: { subjectId: 1, createdAt: -1, _id: -1, closed: 1, expiresAt: 1 },
  },
  { collection: "sessions", name: INDEX.sessionsRevoked, key: { revoked: 1, expiresAt: 1, _id: 1 } },
  {
    collection: "sessions",
    name: INDEX.sessionsRevokedByClose,
    key: { revoked: 1, closedAt: 1, _id: 1, expiresAt: 1 },
  },
  // Retention takes the sessions closed longest ago; open sessions (closedAt null)
  // sort before every number and are never in a `$lt: <time>` range.
  { collection: "sessions", name: INDEX.sessionsByClose, key: { closedAt: 1 } },
  // Chain tail (highest seq) and reads in order; unique, so two writers that
  // read the same tail cannot both take the next seq.
  { collection: "events", name: INDEX.eventsBySeq, key: { sessionId: 1, seq: 1 }, unique: true },
  // Resends are recognised by id; unique, so a racing resend cannot store an event twice.
  { collection: "events", name: INDEX.eventsById, key: { sessionId: 1, eventId: 1 }, unique: true },
  { collection: "event_body_chunks", name: INDEX.chunksByBody, key: { bodyId: 1, n: 1 }, unique: true },
  { collection: "event_body_chunks", name: INDEX.chunksBySession, key: { sessionId: 1 } },
  { collection: "agents", name: INDEX.agentsByToken, key: { tokenHash: 1 }, unique: true },
  { collection: "audit", name: INDEX.auditByTime, key: { at: -1, _id: -1 } },
  // Unique, so a key identifies one record, and revoking it leaves no twin.
  { collection: "api_keys", name: INDEX.apiKeysByHash, key: { keyHash: 1 }, unique: true },
  { collection: "api_keys", name: INDEX.apiKeysByTime, key: { createdAt: -1, _id: -1 } },
  { collection: "approvals", name: INDEX.approvalsByTime, key: { createdAt: -1, _id: -1 } },
  // Listings by status: the equality leads, then the sort key.
  { collection: "approvals", name: INDEX.approvalsByStatus, key: { status: 1, createdAt: -1, _id: -1 } },
  // Expiry sweeps: pending approvals due by a time, without visiting decided ones.
  { collection: "approvals", name: INDEX.approvalsByExpiry, key: { status: 1, expiresAt: 1, _id: 1 } },
];

export interface SessionDocument {
  _id: string;
  connection: string;
  subjectKind: string;
  subjectId: string;
  /** JSON object text. */
  subjectClaims: string;
  /** JSON object text. */
  labels: string;
  createdAt: number;
  expiresAt: number;
  closedAt: number | null;
  seal: Seal | null;
  /** `closedAt !== null`, as an equality the status indexes can lead with. */
  closed: boolean;
  /** Closed before it expired: its token must be refused until `expiresAt`. */
  revoked: boolean;
}

export interface EventDocument {
  sessionId: string;
  seq: number;
  eventId: string;
  exchangeId: string;
  at: number;
  kind: string;
  hash: string;
  /** JSON object text. */
  attrs: string;
  /** The body when it fits in the document; null when there is none or it is in chunks. */
  body: Uint8Array | null;
  /** Body length in bytes (0 without a body), so reads can keep to a byte budget before fetching chunks. */
  bodySize: number;
  /** Set when the body is in {@link ChunkDocument}s with this `bodyId`. */
  bodyId: ObjectId | null;
}

export interface ChunkDocument {
  /** Made fresh by each append that writes the body, so writers racing on one event never share chunks. */
  bodyId: ObjectId;
  /** The event's session, so retention can delete chunks by session. */
  sessionId: string;
  /** 0, 1, 2… in body order. */
  n: number;
  data: Uint8Array;
}

export interface AgentDocument {
  _id: string;
  name: string;
  tokenHash: string;
  createdAt: number;
  revokedAt: number | null;
  lastSeenAt: number | null;
  connections: string[] | null;
}

/** An {@link ApiKeyRecord} under its id as `_id`; the key itself is never kept, only its hash. */
export type ApiKeyDocument = Omit<ApiKeyRecord, "id"> & { _id: string };

/**
 * An {@link ApprovalRecord} under its id as `_id`. Its field names are fixed
 * and `matched` holds names only, so it is stored as it is, not as JSON text.
 */
export type ApprovalDocument = Omit<ApprovalRecord, "id"> & { _id: string };

/**
 * The decision an approval took, under the approval's id. The store inserts
 * it before it writes the decision into the approval: `_id` is unique on every
 * server, so of two decisions racing exactly one insert succeeds, where a
 * conditional update on `status` would let both through on servers that read
 * and then write (FerretDB 1.x). Never removed, so a decision claimed but not
 * yet written to its approval (a crash in between) is found and finished by
 * the next call that decides or expires it.
 */
export type ApprovalDecisionDocument = ApprovalDecisionUpdate & { _id: string };

/** A policy set over REST, under its name as `_id`. */
export interface PolicyDocument {
  _id: string;
  /** JSON object text: rule patterns and other free-form values. */
  body: string;
  updatedAt: number;
  updatedBy: string;
}

export interface AuditDocument {
  _id: string;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  /** JSON object text. */
  details: string;
}

/**
 * `schema_version`: {@link MONGO_SCHEMA_VERSION} of the newest release that
 * opened the database. `max_ttl_ms`: the longest lifetime any session has had,
 * which bounds how far back a listing of open sessions must look.
 */
export interface MetaDocument {
  _id: "schema_version" | "max_ttl_ms" | "opened_at";
  value: number;
}
