/**
 * The SQLite schema of the embedded session store, created idempotently when a
 * store is opened. `PRAGMA user_version` records which version a file holds so
 * a later release can migrate it, and an older release refuses a newer file.
 *
 * @see https://www.sqlite.org/pragma.html#pragma_user_version
 * @see https://www.sqlite.org/partialindex.html
 */

/**
 * The schema version this code writes and reads.
 *
 * - 1: the first release.
 * - 2: `agents.connections` (an account's connection scope; NULL: every
 *   connection), added to version-1 files by {@link SCHEMA_MIGRATIONS}.
 * - 3: `signing_keys` held public keys only; the private key moved to the
 *   control plane's key file.
 * - 4: the `audit` table, and `sessions_by_close` for retention purges; both
 *   are new objects that {@link SCHEMA_DDL} creates in older files too. No
 *   `signing_keys`: the control plane trusts only the keys in its key file, so
 *   that whoever can write records can neither re-sign them nor add a key
 *   that would.
 * - 5: the `api_keys` table (REST credentials, by key hash), a new object
 *   that {@link SCHEMA_DDL} creates in older files too.
 * - 6: the `approvals` table (requests held for a person's decision) and the
 *   `policies` table (policies set over REST), new objects that
 *   {@link SCHEMA_DDL} creates in older files too.
 */
export const SCHEMA_VERSION = 6;

/**
 * Statements that bring a file of the keyed version to the next one, run in
 * the transaction that creates the schema. A new file gets the current tables
 * from {@link SCHEMA_DDL} and needs none of them.
 */
export const SCHEMA_MIGRATIONS: ReadonlyMap<number, string> = new Map([
  [1, "ALTER TABLE agents ADD COLUMN connections TEXT;"],
  // Signing keys moved out of the store (signing.keyFile): whoever can write the records
  // must not be able to re-sign them, nor add a key that verifiers would trust.
  [2, ""],
  [3, "DROP TABLE IF EXISTS signing_keys;"],
  // api_keys is a new table, which SCHEMA_DDL has created by the time migrations run.
  [4, ""],
  // So are approvals and policies, with their indexes.
  [5, ""],
]);

/**
 * Session listings walk one of these indexes in `(created_at, id)` order, newest
 * first, so a page costs about `limit` index steps however many sessions exist.
 * Status filters use the partial indexes, which hold only closed or only unclosed
 * sessions, so the rows a filter rejects are never visited; `expires_at` rides
 * along in the unclosed ones so open/expired is decided inside the index.
 * store.ts names the index each listing uses (INDEXED BY), so the plan does not
 * depend on table statistics.
 */
export const SCHEMA_DDL = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY NOT NULL,
  connection TEXT NOT NULL,
  subject_kind TEXT NOT NULL,
  subject_id TEXT NOT NULL,
  subject_claims TEXT NOT NULL,
  labels TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  closed_at INTEGER,
  seal TEXT
);
CREATE INDEX IF NOT EXISTS sessions_by_time ON sessions (created_at, id);
CREATE INDEX IF NOT EXISTS sessions_closed ON sessions (created_at, id) WHERE closed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_unclosed ON sessions (created_at, id, expires_at) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_by_connection ON sessions (connection, created_at, id);
CREATE INDEX IF NOT EXISTS sessions_closed_by_connection
  ON sessions (connection, created_at, id) WHERE closed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS sessions_unclosed_by_connection
  ON sessions (connection, created_at, id, expires_at) WHERE closed_at IS NULL;
CREATE INDEX IF NOT EXISTS sessions_by_subject
  ON sessions (subject_id, created_at, id, closed_at, expires_at);
CREATE INDEX IF NOT EXISTS sessions_revoked
  ON sessions (expires_at) WHERE closed_at IS NOT NULL AND closed_at < expires_at;
-- Replicas poll for sessions closed since their last look (listRevokedSessions with closedAfter).
CREATE INDEX IF NOT EXISTS sessions_revoked_by_close
  ON sessions (closed_at, id) WHERE closed_at IS NOT NULL AND closed_at < expires_at;
-- Retention purges take the sessions closed longest ago.
CREATE INDEX IF NOT EXISTS sessions_by_close ON sessions (closed_at) WHERE closed_at IS NOT NULL;

-- A rowid table rather than WITHOUT ROWID: bodies can be megabytes, and SQLite
-- advises WITHOUT ROWID only for small rows. body is the last column so reading
-- seq and hash (the chain tail) never walks a body's overflow pages.
CREATE TABLE IF NOT EXISTS events (
  session_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  event_id TEXT NOT NULL,
  exchange_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  kind TEXT NOT NULL,
  hash TEXT NOT NULL,
  attrs TEXT NOT NULL,
  body BLOB,
  PRIMARY KEY (session_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (session_id, event_id);

CREATE TABLE IF NOT EXISTS agents (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  token_hash TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER,
  last_seen_at INTEGER,
  -- JSON array of connection names; NULL: every connection.
  connections TEXT
);

CREATE TABLE IF NOT EXISTS audit (
  id TEXT PRIMARY KEY NOT NULL,
  at INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at, id);

-- REST credentials, found by the hash of the key a caller presents; the key itself is never kept.
-- expires_at NULL: never expires.
CREATE TABLE IF NOT EXISTS api_keys (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  role TEXT NOT NULL,
  kind TEXT NOT NULL,
  key_hash TEXT NOT NULL,
  created_by TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER,
  last_used_at INTEGER
);
-- Unique, so a key identifies one record, and revoking it leaves no twin.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_by_hash ON api_keys (key_hash);
CREATE INDEX IF NOT EXISTS api_keys_by_time ON api_keys (created_at, id);

-- Requests (or tool calls) an agent holds until a person decides. decided_* and reason stay
-- NULL while status is 'pending'; a decision is written once, only over 'pending'.
-- requester_* copy the session's subject, so listings and the self-approval check need no join.
CREATE TABLE IF NOT EXISTS approvals (
  id TEXT PRIMARY KEY NOT NULL,
  session_id TEXT NOT NULL,
  exchange_id TEXT NOT NULL,
  connection TEXT NOT NULL,
  agent_account_id TEXT NOT NULL,
  requester_kind TEXT NOT NULL,
  requester_id TEXT NOT NULL,
  policy TEXT NOT NULL,
  rule TEXT NOT NULL,
  stage TEXT NOT NULL,
  message TEXT NOT NULL,
  -- JSON array of match field names.
  matched TEXT NOT NULL,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  decided_at INTEGER,
  decided_by TEXT,
  reason TEXT,
  preview TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS approvals_by_time ON approvals (created_at, id);
CREATE INDEX IF NOT EXISTS approvals_by_status ON approvals (status, created_at, id);
-- Expiry sweeps look only at pending approvals, which are few however many were ever decided.
CREATE INDEX IF NOT EXISTS approvals_pending_by_expiry ON approvals (expires_at, id) WHERE status = 'pending';

-- Policies set over REST; those of the config file are not stored. body: the policy as JSON text.
CREATE TABLE IF NOT EXISTS policies (
  name TEXT PRIMARY KEY NOT NULL,
  body TEXT NOT NULL,
  updated_at INTEGER NOT NULL,
  updated_by TEXT NOT NULL
);

INSERT OR IGNORE INTO meta (key, value) VALUES ('max_ttl_ms', 0);
INSERT OR IGNORE INTO meta (key, value) VALUES ('opened_at', 0);
`;
