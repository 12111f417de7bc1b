/**
 * The embedded session store: one SQLite file, the single-node default.
 * This folder is the only importer of `libsql` (a better-sqlite3-compatible
 * binding). The binding is synchronous, so every method does a bounded amount
 * of work: listings are capped pages, event reads stop at a byte budget.
 *
 * @see https://www.sqlite.org/wal.html
 * @see https://github.com/tursodatabase/libsql-js
 */
import { mkdir, open } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { GatehouseError } from "@gatehouse/proto/errors";
import Database from "libsql";
import { chainEvents, EMPTY_TAIL } from "../../sessions/chain.js";
import {
  auditKey,
  decodeKeysetCursor,
  type KeysetCursor,
  keysetPage,
  MAX_PAGE,
  pageLimit,
  purgeLimit,
  sessionKey,
} from "../cursor.js";
import { apiKeyClash, auditDetailsJson, eventAttrsJson, policyBodyJson } from "../records.js";
import type {
  AgentRecord,
  ApiKeyFilter,
  ApiKeyRecord,
  AppendResult,
  ApprovalDecisionUpdate,
  ApprovalFilter,
  ApprovalRecord,
  ApprovalStatus,
  AuditFilter,
  AuditRecord,
  ChainTail,
  EventKind,
  NewEvent,
  Page,
  PurgeResult,
  RevokedSessionRecord,
  Role,
  Seal,
  SessionFilter,
  SessionRecord,
  Store,
  StoredEvent,
  StoredPolicyRecord,
  Subject,
} from "../types.js";
import { SCHEMA_DDL, SCHEMA_MIGRATIONS, SCHEMA_VERSION } from "./schema.js";

type Connection = InstanceType<typeof Database>;
type Statement = ReturnType<Connection["prepare"]>;

/** Options of {@link SqliteStore.open}. */
export interface SqliteStoreOptions {
  /** The database file; its directory is created when missing. */
  path: string;
}

/** The most sessions one listing returns, whatever limit the caller asks for. */
export const MAX_SESSION_PAGE = MAX_PAGE;

/**
 * Event reads stop once they hold this many body bytes (but always return at
 * least one event), so a reader of a session with large bodies gets them in
 * several calls instead of one unbounded allocation.
 */
export const READ_EVENTS_BYTE_BUDGET = 64 * 1024 * 1024;

/**
 * How long a statement waits for a lock held by another connection to the same
 * file (a second process, such as the CLI reading sessions) before failing.
 */
const BUSY_TIMEOUT_MS = 5000;

/** SQLite result codes (by prefix) that mean the file or disk is the problem, not the request. */
const UNAVAILABLE_CODES = [
  "SQLITE_BUSY",
  "SQLITE_LOCKED",
  "SQLITE_IOERR",
  "SQLITE_FULL",
  "SQLITE_CANTOPEN",
  "SQLITE_READONLY",
  "SQLITE_CORRUPT",
  "SQLITE_NOTADB",
  "SQLITE_PROTOCOL",
  "SQLITE_PERM",
  "SQLITE_NOLFS",
  "SQLITE_AUTH",
];

interface SessionRow {
  id: string;
  connection: string;
  subject_kind: string;
  subject_id: string;
  subject_claims: string;
  labels: string;
  created_at: number;
  expires_at: number;
  closed_at: number | null;
  seal: string | null;
}

interface EventRow {
  session_id: string;
  seq: number;
  event_id: string;
  exchange_id: string;
  at: number;
  kind: string;
  hash: string;
  attrs: string;
  body: ArrayBuffer | null;
}

interface AgentRow {
  id: string;
  name: string;
  token_hash: string;
  created_at: number;
  revoked_at: number | null;
  last_seen_at: number | null;
  connections: string | null;
}

interface ApiKeyRow {
  id: string;
  name: string;
  role: string;
  kind: string;
  key_hash: string;
  created_by: string;
  created_at: number;
  expires_at: number | null;
  revoked_at: number | null;
  last_used_at: number | null;
}

interface ApprovalRow {
  id: string;
  session_id: string;
  exchange_id: string;
  connection: string;
  agent_account_id: string;
  requester_kind: string;
  requester_id: string;
  policy: string;
  rule: string;
  stage: string;
  message: string;
  matched: string;
  status: string;
  created_at: number;
  expires_at: number;
  decided_at: number | null;
  decided_by: string | null;
  reason: string | null;
  preview: string;
}

interface PolicyRow {
  name: string;
  body: string;
  updated_at: number;
  updated_by: string;
}

interface AuditRow {
  id: string;
  at: number;
  actor: string;
  action: string;
  target: string | null;
  details: string;
}

const SESSION_COLUMNS =
  "id, connection, subject_kind, subject_id, subject_claims, labels, created_at, expires_at, closed_at, seal";
const EVENT_COLUMNS = "session_id, seq, event_id, exchange_id, at, kind, hash, attrs, body";
const AGENT_COLUMNS = "id, name, token_hash, created_at, revoked_at, last_seen_at, connections";
const API_KEY_COLUMNS =
  "id, name, role, kind, key_hash, created_by, created_at, expires_at, revoked_at, last_used_at";
const APPROVAL_COLUMNS =
  "id, session_id, exchange_id, connection, agent_account_id, requester_kind, requester_id, policy, rule," +
  " stage, message, matched, status, created_at, expires_at, decided_at, decided_by, reason, preview";
/** The columns of each table whose rows are read back whole. */
const COLUMNS = {
  sessions: SESSION_COLUMNS,
  agents: AGENT_COLUMNS,
  api_keys: API_KEY_COLUMNS,
  approvals: APPROVAL_COLUMNS,
} as const;

/**
 * A {@link Store} in one SQLite file, in WAL mode.
 *
 * Durability: `synchronous=FULL`. The control plane acknowledges events to the
 * agent once `appendEvents` resolves, and the agent then deletes them from its
 * spool, so a committed batch must survive not only a crash of this process
 * (which WAL with `synchronous=NORMAL` already gives) but also a crash of the
 * machine or a power cut, which `NORMAL` does not: it may lose the last
 * commits. `FULL` syncs the WAL on every commit; batching events per call keeps
 * that to one fsync per batch.
 *
 * @see https://www.sqlite.org/pragma.html#pragma_synchronous
 */
export class SqliteStore implements Store {
  readonly path: string;
  #db: Connection | null;
  readonly #statements = new Map<string, Statement>();

  private constructor(path: string, db: Connection) {
    this.path = path;
    this.#db = db;
  }

  /**
   * Opens (creating when missing) the store at `options.path`: makes its
   * directory, switches to WAL, creates the schema, and proves the file is
   * writable, so a misconfigured path fails at start-up rather than at the
   * first event. Throws GATE_STORE_UNAVAILABLE naming the path otherwise.
   */
  static async open(options: SqliteStoreOptions): Promise<SqliteStore> {
    const path = resolve(options.path);
    try {
      await mkdir(dirname(path), { recursive: true });
    } catch (cause) {
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `cannot create the directory of the session store ${path} (${errorText(cause)}); check that the store path points into a directory this process may create and write`,
        { cause },
      );
    }
    let db: Connection | null = null;
    try {
      // The store holds the records and hashed credentials: a new file (and so its WAL, which
      // SQLite gives the same mode) is readable by this user only.
      await (await open(path, "a", 0o600)).close();
      db = new Database(path, { timeout: BUSY_TIMEOUT_MS });
      prepareFile(db, path);
      return new SqliteStore(path, db);
    } catch (cause) {
      try {
        db?.close();
      } catch {
        // The open already failed; that failure is the one worth reporting.
      }
      if (cause instanceof GatehouseError) throw cause;
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `cannot open the session store ${path} (${errorText(cause)}); check that the file is a Gatehouse SQLite database (or absent) and that it and its directory are writable by this process`,
        { cause },
      );
    }
  }

  async ping(): Promise<void> {
    this.#run("answering a ping", () => this.#statement("SELECT 1 AS ok").get([]));
  }

  async close(): Promise<void> {
    const db = this.#db;
    if (db === null) return;
    this.#db = null;
    this.#statements.clear();
    db.close();
  }

  async insertSession(session: SessionRecord): Promise<void> {
    this.#write(`storing session ${session.id}`, () => {
      if (this.#statement("SELECT 1 AS found FROM sessions WHERE id = ?").get([session.id]) !== undefined) {
        throw new GatehouseError(
          "GATE_INVALID_REQUEST",
          `session ${session.id} already exists; session ids must be unique`,
        );
      }
      this.#statement(`INSERT INTO sessions (${SESSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run([
        session.id,
        session.connection,
        session.subject.kind,
        session.subject.id,
        JSON.stringify(session.subject.claims),
        JSON.stringify(session.labels),
        session.createdAt,
        session.expiresAt,
        session.closedAt,
        session.seal === null ? null : JSON.stringify(session.seal),
      ]);
      // Lets listings of open sessions look only as far back as the longest
      // lifetime any session has had (see listSessions).
      this.#statement("UPDATE meta SET value = max(value, ?) WHERE key = 'max_ttl_ms'").run([
        session.expiresAt - session.createdAt,
      ]);
    });
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const row = this.#rowWhere<SessionRow>(`reading session ${id}`, "sessions", "id", id);
    return row === undefined ? null : sessionFromRow(row);
  }

  /**
   * Newest first, by `(createdAt, id)` descending, paged by keyset: the cursor
   * holds the last returned sort key, so sessions created while a caller pages
   * neither shift nor repeat later pages. At most {@link MAX_SESSION_PAGE} per page.
   */
  async listSessions(filter: SessionFilter): Promise<Page<SessionRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "session list");
    const where: string[] = [];
    const params: unknown[] = [];
    const status = filter.status;
    let index: string;
    if (filter.connection !== undefined) {
      index =
        status === undefined
          ? "sessions_by_connection"
          : status === "closed"
            ? "sessions_closed_by_connection"
            : "sessions_unclosed_by_connection";
      where.push("connection = ?");
      params.push(filter.connection);
    } else if (filter.subjectId !== undefined) {
      index = "sessions_by_subject";
    } else {
      index =
        status === undefined
          ? "sessions_by_time"
          : status === "closed"
            ? "sessions_closed"
            : "sessions_unclosed";
    }
    if (filter.subjectId !== undefined) {
      where.push("subject_id = ?");
      params.push(filter.subjectId);
    }
    if (status === "closed") {
      where.push("closed_at IS NOT NULL");
    } else if (status === "open") {
      // An open session was created less than the longest session lifetime
      // ago; bounding created_at by that keeps the scan to recent sessions
      // even when older unclosed (expired) sessions abound.
      where.push(
        "closed_at IS NULL",
        "expires_at > ?",
        "created_at > ? - (SELECT value FROM meta WHERE key = 'max_ttl_ms')",
      );
      params.push(filter.now, filter.now);
    } else if (status === "expired") {
      where.push("closed_at IS NULL", "expires_at <= ?");
      params.push(filter.now);
    }
    if (after !== null) {
      where.push("(created_at, id) < (?, ?)");
      params.push(after.time, after.id);
    }
    params.push(limit + 1);
    const sql =
      `SELECT ${SESSION_COLUMNS} FROM sessions INDEXED BY ${index}` +
      (where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "") +
      " ORDER BY created_at DESC, id DESC LIMIT ?";
    const rows = this.#run("listing sessions", () => this.#statement(sql).all(params) as SessionRow[]);
    return keysetPage(rows.map(sessionFromRow), limit, sessionKey);
  }

  async closeSession(id: string, closedAt: number): Promise<SessionRecord | null> {
    const row = this.#setOnce<SessionRow>(`closing session ${id}`, "sessions", "closed_at", id, closedAt);
    return row === undefined ? null : sessionFromRow(row);
  }

  /**
   * Read and write share one IMMEDIATE transaction, so two replicas sealing the
   * same session at once cannot both see the old seal and the shorter one win.
   * Throws GATE_NOT_FOUND when the session does not exist: a seal needs a session to belong to.
   */
  async setSeal(id: string, seal: Seal): Promise<Seal> {
    return this.#write(`sealing session ${id}`, () => {
      const row = this.#statement("SELECT seal FROM sessions WHERE id = ?").get([id]) as
        | { seal: string | null }
        | undefined;
      if (row === undefined) {
        throw new GatehouseError(
          "GATE_NOT_FOUND",
          `session ${id} not found; only a stored session can be sealed`,
        );
      }
      const current = row.seal === null ? null : (JSON.parse(row.seal) as Seal);
      if (current !== null && current.count > seal.count) return current;
      this.#statement("UPDATE sessions SET seal = ? WHERE id = ?").run([JSON.stringify(seal), id]);
      return seal;
    });
  }

  async listRevokedSessions(now: number, closedAfter?: number): Promise<RevokedSessionRecord[]> {
    const rows = this.#run(
      "listing revoked sessions",
      () =>
        (closedAfter === undefined
          ? this.#statement(
              "SELECT id, expires_at, closed_at FROM sessions INDEXED BY sessions_revoked" +
                " WHERE closed_at IS NOT NULL AND closed_at < expires_at AND expires_at > ? ORDER BY expires_at, id",
            ).all([now])
          : this.#statement(
              "SELECT id, expires_at, closed_at FROM sessions INDEXED BY sessions_revoked_by_close" +
                " WHERE closed_at IS NOT NULL AND closed_at < expires_at AND closed_at > ? AND expires_at > ?" +
                " ORDER BY closed_at, id",
            ).all([closedAfter, now])) as Array<{ id: string; expires_at: number; closed_at: number }>,
    );
    return rows.map((row) => ({ id: row.id, expiresAt: row.expires_at, closedAt: row.closed_at }));
  }

  /**
   * One transaction per call. Events are grouped by session in first-seen
   * order; each group drops ids already stored (or repeated in the batch),
   * then extends the session's chain from its last stored event. Events of a
   * session with no session row are stored like any other: losing them is
   * worse than keeping them unattached.
   */
  async appendEvents(events: NewEvent[]): Promise<AppendResult> {
    if (events.length === 0) return { appended: 0, duplicates: 0, tails: new Map() };
    const groups = new Map<string, Array<{ event: NewEvent; attrs: string }>>();
    for (const event of events) {
      const attrs = eventAttrsJson(event);
      const group = groups.get(event.sessionId);
      if (group === undefined) groups.set(event.sessionId, [{ event, attrs }]);
      else group.push({ event, attrs });
    }
    return this.#write(`appending ${events.length} events`, () => {
      const exists = this.#statement("SELECT 1 AS found FROM events WHERE session_id = ? AND event_id = ?");
      const tailOf = this.#statement(
        "SELECT seq, hash FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1",
      );
      const insert = this.#statement(
        `INSERT INTO events (${EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      );
      const result: AppendResult = { appended: 0, duplicates: 0, tails: new Map() };
      for (const [sessionId, group] of groups) {
        const seen = new Set<string>();
        const fresh: NewEvent[] = [];
        const attrsText: string[] = [];
        for (const { event, attrs } of group) {
          if (seen.has(event.id) || exists.get([sessionId, event.id]) !== undefined) {
            result.duplicates += 1;
            continue;
          }
          seen.add(event.id);
          // Chain what will be read back: attrs as they survive JSON, so a
          // value JSON alters (a Date, say) cannot break the chain later.
          fresh.push({ ...event, attrs: JSON.parse(attrs) as Record<string, unknown> });
          attrsText.push(attrs);
        }
        if (fresh.length === 0) continue;
        const last = tailOf.get([sessionId]) as { seq: number; hash: string } | undefined;
        const chained = chainEvents(
          last === undefined ? EMPTY_TAIL : { count: last.seq, lastHash: last.hash },
          fresh,
        );
        chained.stored.forEach((stored, i) => {
          insert.run([
            sessionId,
            stored.seq,
            stored.id,
            stored.exchangeId,
            stored.at,
            stored.kind,
            stored.hash,
            attrsText[i],
            stored.body,
          ]);
        });
        result.appended += chained.stored.length;
        result.tails.set(sessionId, chained.tail);
      }
      return result;
    });
  }

  /**
   * Events with `seq > afterSeq`, in order, at most `limit`; fewer when their
   * bodies exceed {@link READ_EVENTS_BYTE_BUDGET}. An empty array means there
   * are no more events yet.
   */
  async readEvents(sessionId: string, afterSeq: number, limit: number): Promise<StoredEvent[]> {
    if (!(limit >= 1)) return [];
    const take = Math.floor(limit);
    const rows = this.#run(`reading events of session ${sessionId}`, () => {
      const sizes = this.#statement(
        "SELECT coalesce(length(body), 0) AS size FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
      ).all([sessionId, afterSeq, take]) as Array<{ size: number }>;
      let count = 0;
      let bytes = 0;
      for (const { size } of sizes) {
        if (count > 0 && bytes + size > READ_EVENTS_BYTE_BUDGET) break;
        bytes += size;
        count += 1;
      }
      if (count === 0) return [];
      return this.#statement(
        `SELECT ${EVENT_COLUMNS} FROM events WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
      ).all([sessionId, afterSeq, count]) as EventRow[];
    });
    return rows.map(eventFromRow);
  }

  async chainTail(sessionId: string): Promise<ChainTail> {
    const last = this.#run(
      `reading the chain tail of session ${sessionId}`,
      () =>
        this.#statement("SELECT seq, hash FROM events WHERE session_id = ? ORDER BY seq DESC LIMIT 1").get([
          sessionId,
        ]) as { seq: number; hash: string } | undefined,
    );
    return last === undefined ? { ...EMPTY_TAIL } : { count: last.seq, lastHash: last.hash };
  }

  async insertAgent(agent: AgentRecord): Promise<void> {
    this.#write(`storing agent ${agent.id}`, () => {
      const clash = this.#statement("SELECT id FROM agents WHERE id = ? OR token_hash = ?").get([
        agent.id,
        agent.tokenHash,
      ]) as { id: string } | undefined;
      if (clash !== undefined) {
        throw new GatehouseError(
          "GATE_INVALID_REQUEST",
          clash.id === agent.id
            ? `agent ${agent.id} already exists; agent ids must be unique`
            : `agent ${agent.id} has the same token as agent ${clash.id}; issue a new token`,
        );
      }
      this.#statement(`INSERT INTO agents (${AGENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`).run([
        agent.id,
        agent.name,
        agent.tokenHash,
        agent.createdAt,
        agent.revokedAt,
        agent.lastSeenAt,
        agent.connections === null ? null : JSON.stringify(agent.connections),
      ]);
    });
  }

  async findAgentByTokenHash(tokenHash: string): Promise<AgentRecord | null> {
    const row = this.#rowWhere<AgentRow>("looking up an agent by token", "agents", "token_hash", tokenHash);
    return row === undefined ? null : agentFromRow(row);
  }

  async listAgents(): Promise<AgentRecord[]> {
    const rows = this.#run(
      "listing agents",
      () =>
        this.#statement(`SELECT ${AGENT_COLUMNS} FROM agents ORDER BY created_at, id`).all([]) as AgentRow[],
    );
    return rows.map(agentFromRow);
  }

  /** Revoking a revoked agent keeps the first revocation time. */
  async revokeAgent(id: string, revokedAt: number): Promise<AgentRecord | null> {
    const row = this.#setOnce<AgentRow>(`revoking agent ${id}`, "agents", "revoked_at", id, revokedAt);
    return row === undefined ? null : agentFromRow(row);
  }

  async touchAgent(id: string, lastSeenAt: number): Promise<void> {
    this.#write(`recording that agent ${id} was seen`, () =>
      this.#statement("UPDATE agents SET last_seen_at = ? WHERE id = ?").run([lastSeenAt, id]),
    );
  }

  async insertApiKey(key: ApiKeyRecord): Promise<void> {
    this.#write(`storing API key ${key.id}`, () => {
      const clash = this.#statement("SELECT id FROM api_keys WHERE id = ? OR key_hash = ?").get([
        key.id,
        key.keyHash,
      ]) as { id: string } | undefined;
      if (clash !== undefined) throw apiKeyClash(key, clash.id);
      this.#statement(`INSERT INTO api_keys (${API_KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run([
        key.id,
        key.name,
        key.role,
        key.kind,
        key.keyHash,
        key.createdBy,
        key.createdAt,
        key.expiresAt,
        key.revokedAt,
        key.lastUsedAt,
      ]);
    });
  }

  async findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | null> {
    const row = this.#rowWhere<ApiKeyRow>("looking up an API key by key", "api_keys", "key_hash", keyHash);
    return row === undefined ? null : apiKeyFromRow(row);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    const row = this.#rowWhere<ApiKeyRow>(`reading API key ${id}`, "api_keys", "id", id);
    return row === undefined ? null : apiKeyFromRow(row);
  }

  /** Newest first by `(createdAt, id)`, walking the api_keys_by_time index like session listings. */
  async listApiKeys(filter: ApiKeyFilter): Promise<Page<ApiKeyRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "API key list");
    const rows = this.#newestFirst<ApiKeyRow>(
      "listing API keys",
      `SELECT ${API_KEY_COLUMNS} FROM api_keys INDEXED BY api_keys_by_time`,
      "created_at",
      after,
      limit,
    );
    return keysetPage(rows.map(apiKeyFromRow), limit, sessionKey);
  }

  /** Revoking a revoked key keeps the first revocation time. */
  async revokeApiKey(id: string, revokedAt: number): Promise<ApiKeyRecord | null> {
    const row = this.#setOnce<ApiKeyRow>(`revoking API key ${id}`, "api_keys", "revoked_at", id, revokedAt);
    return row === undefined ? null : apiKeyFromRow(row);
  }

  /**
   * Moves `lastUsedAt` only forward, in the update's condition, so a use
   * reported late (by a slower replica, say) cannot hide a later one.
   */
  async touchApiKey(id: string, lastUsedAt: number): Promise<void> {
    this.#write(`recording a use of API key ${id}`, () =>
      this.#statement(
        "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
      ).run([lastUsedAt, id, lastUsedAt]),
    );
  }

  async appendAudit(entry: AuditRecord): Promise<void> {
    const details = auditDetailsJson(entry);
    this.#write(`storing audit entry ${entry.id}`, () => {
      if (this.#statement("SELECT 1 AS found FROM audit WHERE id = ?").get([entry.id]) !== undefined) {
        throw new GatehouseError(
          "GATE_INVALID_REQUEST",
          `audit entry ${entry.id} already exists; audit entry ids must be unique`,
        );
      }
      this.#statement(
        "INSERT INTO audit (id, at, actor, action, target, details) VALUES (?, ?, ?, ?, ?, ?)",
      ).run([entry.id, entry.at, entry.actor, entry.action, entry.target, details]);
    });
  }

  /** Newest first by `(at, id)`, walking the audit_by_time index like session listings. */
  async listAudit(filter: AuditFilter): Promise<Page<AuditRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "audit log");
    const rows = this.#newestFirst<AuditRow>(
      "listing the audit log",
      "SELECT id, at, actor, action, target, details FROM audit INDEXED BY audit_by_time",
      "at",
      after,
      limit,
    );
    return keysetPage(rows.map(auditFromRow), limit, auditKey);
  }

  /**
   * `ON CONFLICT DO NOTHING` rather than `INSERT OR IGNORE`: only a stored id
   * is passed over, while a record missing a field is still refused. The row is
   * read back in the same transaction, so a resend gets the stored record,
   * decided or not.
   */
  async insertApproval(approval: ApprovalRecord): Promise<ApprovalRecord> {
    const row = this.#write(`storing approval ${approval.id}`, () => {
      this.#statement(
        `INSERT INTO approvals (${APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)` +
          " ON CONFLICT (id) DO NOTHING",
      ).run([
        approval.id,
        approval.sessionId,
        approval.exchangeId,
        approval.connection,
        approval.agentAccountId,
        approval.requester.kind,
        approval.requester.id,
        approval.policy,
        approval.rule,
        approval.stage,
        approval.message,
        JSON.stringify(approval.matched),
        approval.status,
        approval.createdAt,
        approval.expiresAt,
        approval.decidedAt,
        approval.decidedBy,
        approval.reason,
        approval.preview,
      ]);
      return this.#statement(`SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE id = ?`).get([approval.id]) as
        | ApprovalRow
        | undefined;
    });
    if (row === undefined) {
      throw new GatehouseError(
        "GATE_INTERNAL",
        `the session store ${this.path} did not keep approval ${approval.id} it was just given`,
      );
    }
    return approvalFromRow(row);
  }

  async getApproval(id: string): Promise<ApprovalRecord | null> {
    const row = this.#rowWhere<ApprovalRow>(`reading approval ${id}`, "approvals", "id", id);
    return row === undefined ? null : approvalFromRow(row);
  }

  /** The ids travel as one JSON array, so one prepared statement serves any number of them. */
  async getApprovals(ids: readonly string[]): Promise<ApprovalRecord[]> {
    if (ids.length === 0) return [];
    const rows = this.#run(
      `reading ${ids.length} approvals`,
      () =>
        this.#statement(
          `SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE id IN (SELECT value FROM json_each(?))`,
        ).all([JSON.stringify(ids)]) as ApprovalRow[],
    );
    return rows.map(approvalFromRow);
  }

  /**
   * Newest first by `(createdAt, id)`, walking approvals_by_time, or
   * approvals_by_status when a status is asked for, like session listings.
   */
  async listApprovals(filter: ApprovalFilter): Promise<Page<ApprovalRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "approval list");
    const rows =
      filter.status === undefined
        ? this.#newestFirst<ApprovalRow>(
            "listing approvals",
            `SELECT ${APPROVAL_COLUMNS} FROM approvals INDEXED BY approvals_by_time`,
            "created_at",
            after,
            limit,
          )
        : this.#newestFirst<ApprovalRow>(
            `listing ${filter.status} approvals`,
            `SELECT ${APPROVAL_COLUMNS} FROM approvals INDEXED BY approvals_by_status`,
            "created_at",
            after,
            limit,
            { column: "status", value: filter.status },
          );
    return keysetPage(rows.map(approvalFromRow), limit, sessionKey);
  }

  /**
   * The update's condition (`status = 'pending'`) and the read back share one
   * IMMEDIATE transaction, so of two decisions (from this process or another)
   * the first to take the write lock is the one kept, and both read it.
   */
  async decideApproval(id: string, decision: ApprovalDecisionUpdate): Promise<ApprovalRecord | null> {
    const row = this.#write(`deciding approval ${id}`, () => {
      this.#statement(
        "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, reason = ? WHERE id = ? AND status = 'pending'",
      ).run([decision.status, decision.decidedAt, decision.decidedBy, decision.reason, id]);
      return this.#statement(`SELECT ${APPROVAL_COLUMNS} FROM approvals WHERE id = ?`).get([id]) as
        | ApprovalRow
        | undefined;
    });
    return row === undefined ? null : approvalFromRow(row);
  }

  /**
   * One transaction: the pending approvals due by `now` (from the partial
   * index approvals_pending_by_expiry), then one update of the same rows.
   * Returned in order of expiry.
   */
  async expireApprovals(now: number, reason: string): Promise<ApprovalRecord[]> {
    const due = this.#write("expiring approvals", () => {
      const rows = this.#statement(
        `SELECT ${APPROVAL_COLUMNS} FROM approvals INDEXED BY approvals_pending_by_expiry` +
          " WHERE status = 'pending' AND expires_at <= ? ORDER BY expires_at, id",
      ).all([now]) as ApprovalRow[];
      if (rows.length > 0) {
        this.#statement(
          "UPDATE approvals SET status = 'expired', decided_at = ?, decided_by = 'system', reason = ?" +
            " WHERE status = 'pending' AND expires_at <= ?",
        ).run([now, reason, now]);
      }
      return rows;
    });
    return due.map(
      (row): ApprovalRecord => ({
        ...approvalFromRow(row),
        status: "expired",
        decidedAt: now,
        decidedBy: "system",
        reason,
      }),
    );
  }

  async listPolicies(): Promise<StoredPolicyRecord[]> {
    const rows = this.#run(
      "listing policies",
      () =>
        this.#statement("SELECT name, body, updated_at, updated_by FROM policies ORDER BY name").all(
          [],
        ) as PolicyRow[],
    );
    return rows.map(
      (row): StoredPolicyRecord => ({
        name: row.name,
        body: JSON.parse(row.body) as Record<string, unknown>,
        updatedAt: row.updated_at,
        updatedBy: row.updated_by,
      }),
    );
  }

  async putPolicy(policy: StoredPolicyRecord): Promise<void> {
    const body = policyBodyJson(policy);
    this.#write(`storing policy ${policy.name}`, () =>
      this.#statement(
        "INSERT INTO policies (name, body, updated_at, updated_by) VALUES (?, ?, ?, ?)" +
          " ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
      ).run([policy.name, body, policy.updatedAt, policy.updatedBy]),
    );
  }

  async deletePolicy(name: string): Promise<boolean> {
    const result = this.#write(`deleting policy ${name}`, () =>
      this.#statement("DELETE FROM policies WHERE name = ?").run([name]),
    );
    return result.changes > 0;
  }

  /**
   * One transaction per call: the sessions closed longest ago (by the
   * sessions_by_close index), their events, then the sessions themselves.
   */
  async purgeClosedSessions(closedBefore: number, limit: number): Promise<PurgeResult> {
    const take = purgeLimit(limit);
    return this.#write("purging closed sessions", () => {
      const ids = (
        this.#statement(
          "SELECT id FROM sessions INDEXED BY sessions_by_close WHERE closed_at < ? ORDER BY closed_at LIMIT ?",
        ).all([closedBefore, take]) as Array<{ id: string }>
      ).map((row) => row.id);
      const dropEvents = this.#statement("DELETE FROM events WHERE session_id = ?");
      const dropSession = this.#statement("DELETE FROM sessions WHERE id = ? AND closed_at IS NOT NULL");
      const result: PurgeResult = { sessions: 0, events: 0, ids: [] };
      for (const id of ids) {
        result.events += dropEvents.run([id]).changes;
        if (dropSession.run([id]).changes === 0) continue;
        result.sessions += 1;
        result.ids.push(id);
      }
      return result;
    });
  }

  /** The row of `table` whose `column` (a unique one) is `value`; undefined when there is none. */
  #rowWhere<Row>(
    doing: string,
    table: keyof typeof COLUMNS,
    column: "id" | "token_hash" | "key_hash",
    value: string,
  ): Row | undefined {
    return this.#run(
      doing,
      () =>
        this.#statement(`SELECT ${COLUMNS[table]} FROM ${table} WHERE ${column} = ?`).get([value]) as
          | Row
          | undefined,
    );
  }

  /**
   * Sets a time that is set once (a close, a revocation) on row `id`, unless
   * it is set already, so the first time stays; then reads the row back, in
   * the same transaction. Undefined when there is no such row.
   */
  #setOnce<Row>(
    doing: string,
    table: keyof typeof COLUMNS,
    column: "closed_at" | "revoked_at",
    id: string,
    at: number,
  ): Row | undefined {
    return this.#write(doing, () => {
      this.#statement(`UPDATE ${table} SET ${column} = ? WHERE id = ? AND ${column} IS NULL`).run([at, id]);
      return this.#statement(`SELECT ${COLUMNS[table]} FROM ${table} WHERE id = ?`).get([id]) as
        | Row
        | undefined;
    });
  }

  /**
   * Up to `limit + 1` rows of `select` (which names the table and the index on
   * `(<time>, id)` it walks, led by `equal.column` when given), newest first by
   * `(time, id)`, only those whose `equal.column` is `equal.value` when given,
   * after the cursor's key when there is one: the shape of a keyset page, as
   * {@link keysetPage} takes it.
   */
  #newestFirst<Row>(
    doing: string,
    select: string,
    time: "at" | "created_at",
    after: KeysetCursor | null,
    limit: number,
    equal: { column: "status"; value: ApprovalStatus } | null = null,
  ): Row[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (equal !== null) {
      where.push(`${equal.column} = ?`);
      params.push(equal.value);
    }
    if (after !== null) {
      where.push(`(${time}, id) < (?, ?)`);
      params.push(after.time, after.id);
    }
    params.push(limit + 1);
    const sql =
      select +
      (where.length > 0 ? ` WHERE ${where.join(" AND ")}` : "") +
      ` ORDER BY ${time} DESC, id DESC LIMIT ?`;
    return this.#run(doing, () => this.#statement(sql).all(params) as Row[]);
  }

  /**
   * Prepared statements are kept per SQL text. Parameters are always bound as
   * one array: libsql takes a lone object argument (a Buffer, or null) for
   * named parameters.
   */
  #statement(sql: string): Statement {
    const db = this.#connection();
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #connection(): Connection {
    if (this.#db === null) {
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `the session store ${this.path} is closed; open it again to use it`,
      );
    }
    return this.#db;
  }

  /** Runs `work`, turning SQLite failures into Gatehouse errors that say what was being done. */
  #run<T>(doing: string, work: () => T): T {
    try {
      return work();
    } catch (cause) {
      throw storeError(this.path, doing, cause);
    }
  }

  /**
   * Runs `work` in a write transaction. IMMEDIATE takes the write lock before
   * the first read, so no other connection can extend a chain between reading
   * its tail and writing after it.
   */
  #write<T>(doing: string, work: () => T): T {
    return this.#run(doing, () => {
      const db = this.#connection();
      db.exec("BEGIN IMMEDIATE");
      try {
        const result = work();
        db.exec("COMMIT");
        return result;
      } catch (error) {
        // SQLite rolls some failures (a full disk, say) back by itself.
        if (db.inTransaction) db.exec("ROLLBACK");
        throw error;
      }
    });
  }
}

/** Pragmas, schema and a write probe, run once when a file is opened. */
function prepareFile(db: Connection, path: string): void {
  const mode = (db.prepare("PRAGMA journal_mode = WAL").get([]) as { journal_mode?: string } | undefined)
    ?.journal_mode;
  if (mode !== "wal") {
    throw new GatehouseError(
      "GATE_STORE_UNAVAILABLE",
      `the session store ${path} cannot use write-ahead logging (journal mode is ${String(mode)}); put it on a local file system the process can write`,
    );
  }
  db.exec("PRAGMA synchronous = FULL");
  const version = (db.prepare("PRAGMA user_version").get([]) as { user_version?: number } | undefined)
    ?.user_version;
  if (typeof version !== "number" || version > SCHEMA_VERSION) {
    throw new GatehouseError(
      "GATE_STORE_UNAVAILABLE",
      `the session store ${path} has schema version ${String(version)}, newer than this release understands (${SCHEMA_VERSION}); upgrade Gatehouse or point the store at another file`,
    );
  }
  db.exec("BEGIN IMMEDIATE");
  try {
    // Read again under the write lock: another process may have migrated the file meanwhile.
    const current = (db.prepare("PRAGMA user_version").get([]) as { user_version?: number } | undefined)
      ?.user_version;
    db.exec(SCHEMA_DDL);
    // Version 0 is a new file: SCHEMA_DDL just made it current.
    for (let from = current ?? 0; from > 0 && from < SCHEMA_VERSION; from++) {
      const migration = SCHEMA_MIGRATIONS.get(from);
      if (migration !== undefined) db.exec(migration);
    }
    db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    // Always write, so a read-only file or directory fails here, at start-up,
    // and not when the first events arrive.
    db.prepare("UPDATE meta SET value = ? WHERE key = 'opened_at'").run([Date.now()]);
    db.exec("COMMIT");
  } catch (error) {
    if (db.inTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

function storeError(path: string, doing: string, cause: unknown): GatehouseError {
  if (cause instanceof GatehouseError) return cause;
  const code = sqliteCode(cause);
  if (code?.startsWith("SQLITE_TOOBIG")) {
    return new GatehouseError(
      "GATE_BODY_TOO_LARGE",
      `the session store ${path} cannot hold a value this large while ${doing}; send bodies in smaller chunks`,
      { cause },
    );
  }
  if (code !== undefined && UNAVAILABLE_CODES.some((prefix) => code.startsWith(prefix))) {
    return new GatehouseError(
      "GATE_STORE_UNAVAILABLE",
      `the session store ${path} failed while ${doing} (${errorText(cause)}); check that the disk has space and the file and its directory are writable, and that no other program holds the database locked`,
      { cause },
    );
  }
  return new GatehouseError(
    "GATE_INTERNAL",
    `the session store ${path} failed while ${doing}: ${errorText(cause)}`,
    {
      cause,
    },
  );
}

function sqliteCode(error: unknown): string | undefined {
  if (typeof error !== "object" || error === null || !("code" in error)) return undefined;
  return typeof error.code === "string" ? error.code : undefined;
}

function errorText(error: unknown): string {
  const code = sqliteCode(error);
  const message = error instanceof Error ? error.message : String(error);
  return code === undefined || message.includes(code) ? message : `${code}: ${message}`;
}

function auditFromRow(row: AuditRow): AuditRecord {
  return {
    id: row.id,
    at: row.at,
    actor: row.actor,
    action: row.action,
    target: row.target,
    details: JSON.parse(row.details) as Record<string, unknown>,
  };
}

function approvalFromRow(row: ApprovalRow): ApprovalRecord {
  return {
    id: row.id,
    sessionId: row.session_id,
    exchangeId: row.exchange_id,
    connection: row.connection,
    agentAccountId: row.agent_account_id,
    requester: { kind: row.requester_kind as Subject["kind"], id: row.requester_id },
    policy: row.policy,
    rule: row.rule,
    stage: row.stage as ApprovalRecord["stage"],
    message: row.message,
    preview: row.preview,
    matched: JSON.parse(row.matched) as string[],
    status: row.status as ApprovalStatus,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    decidedAt: row.decided_at,
    decidedBy: row.decided_by,
    reason: row.reason,
  };
}

function apiKeyFromRow(row: ApiKeyRow): ApiKeyRecord {
  return {
    id: row.id,
    name: row.name,
    role: row.role as Role,
    kind: row.kind as ApiKeyRecord["kind"],
    keyHash: row.key_hash,
    createdBy: row.created_by,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
  };
}

function sessionFromRow(row: SessionRow): SessionRecord {
  const subject: Subject = {
    kind: row.subject_kind as Subject["kind"],
    id: row.subject_id,
    claims: JSON.parse(row.subject_claims) as Record<string, string>,
  };
  return {
    id: row.id,
    connection: row.connection,
    subject,
    labels: JSON.parse(row.labels) as Record<string, string>,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    closedAt: row.closed_at,
    seal: row.seal === null ? null : (JSON.parse(row.seal) as Seal),
  };
}

function eventFromRow(row: EventRow): StoredEvent {
  return {
    id: row.event_id,
    sessionId: row.session_id,
    exchangeId: row.exchange_id,
    at: row.at,
    kind: row.kind as EventKind,
    attrs: JSON.parse(row.attrs) as Record<string, unknown>,
    body: row.body === null ? null : new Uint8Array(row.body),
    seq: row.seq,
    hash: row.hash,
  };
}

function agentFromRow(row: AgentRow): AgentRecord {
  return {
    id: row.id,
    name: row.name,
    tokenHash: row.token_hash,
    createdAt: row.created_at,
    revokedAt: row.revoked_at,
    lastSeenAt: row.last_seen_at,
    connections: row.connections === null ? null : (JSON.parse(row.connections) as string[]),
  };
}
