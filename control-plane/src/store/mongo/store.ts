/**
 * The session store on MongoDB, for deployments that run several control-plane
 * replicas or keep records at scale. This folder is the only importer of the
 * `mongodb` driver.
 *
 * It asks no more of the server than MongoDB-compatible servers broadly offer
 * (FerretDB is the one the tests run against): single-document writes, unique
 * indexes, ordered inserts. No transactions, change streams, server-side
 * JavaScript or `$where`. Where SQLite relies on a transaction, this store
 * relies on a unique index and retries instead; see {@link MongoStore.appendEvents}.
 *
 * @see https://www.mongodb.com/docs/drivers/node/current/
 * @see https://www.mongodb.com/docs/manual/reference/write-concern/
 */
import { setTimeout as delay } from "node:timers/promises";
import { GatehouseError } from "@gatehouse/proto/errors";
import {
  type Collection,
  type Db,
  type Document,
  MongoBulkWriteError,
  MongoClient,
  MongoServerError,
  ObjectId,
} from "mongodb";
import { chainEvents, EMPTY_TAIL } from "../../sessions/chain.js";
import { auditKey, decodeKeysetCursor, keysetPage, pageLimit, purgeLimit, sessionKey } from "../cursor.js";
import { apiKeyClash, auditDetailsJson, eventAttrsJson, policyBodyJson } from "../records.js";
import type {
  AgentRecord,
  ApiKeyFilter,
  ApiKeyRecord,
  AppendResult,
  ApprovalDecisionUpdate,
  ApprovalFilter,
  ApprovalRecord,
  AuditFilter,
  AuditRecord,
  ChainTail,
  EventKind,
  NewEvent,
  Page,
  PurgeResult,
  RevokedSessionRecord,
  Seal,
  SessionFilter,
  SessionRecord,
  Store,
  StoredEvent,
  StoredPolicyRecord,
} from "../types.js";
import { describe, isDuplicateKey, storeError, writeErrorsOf } from "./errors.js";
import { keysetAfter, sessionListQuery } from "./queries.js";
import {
  type AgentDocument,
  type ApiKeyDocument,
  type ApprovalDecisionDocument,
  type ApprovalDocument,
  type AuditDocument,
  type ChunkDocument,
  COLLECTIONS,
  type CollectionName,
  type EventDocument,
  INDEX,
  INDEXES,
  type MetaDocument,
  MONGO_SCHEMA_VERSION,
  type PolicyDocument,
  type SessionDocument,
} from "./schema.js";
import { SessionQueue } from "./session-queue.js";
import { redactMongoUri, scrubSecrets, uriOption } from "./uri.js";

/** Options of {@link MongoStore.open}. */
export interface MongoStoreOptions {
  /** A MongoDB connection string, `mongodb://…` or `mongodb+srv://…`; may hold credentials. */
  uri: string;
  /** The database that holds Gatehouse's collections. */
  database: string;
  /**
   * How long an operation waits for a usable server before failing with
   * GATE_STORE_UNAVAILABLE, at open and afterwards. Default: the connection
   * string's `serverSelectionTimeoutMS`, else 10 000.
   */
  serverSelectionTimeoutMs?: number;
}

const MIB = 1024 * 1024;

/**
 * Bodies up to this size are kept in the event document; larger ones go to
 * the chunk collection. Half of BSON's 16 MiB document limit, leaving room for
 * the other fields and for servers (FerretDB among them) that hold binary data
 * less compactly.
 *
 * @see https://www.mongodb.com/docs/manual/reference/limits/#mongodb-limit-BSON-Document-Size
 */
export const INLINE_BODY_MAX_BYTES = 8 * MIB;

/** The size of each piece of a body too large for its event document. */
export const BODY_CHUNK_BYTES = 4 * MIB;

/**
 * Event reads stop once they hold this many body bytes (but always return at
 * least one event), as the SQLite store's do.
 */
export const READ_EVENTS_BYTE_BUDGET = 64 * MIB;

/**
 * How many times one append re-reads the chain tail after another writer took
 * the seqs it meant to use. Every collision means the other writer stored
 * events, so the record moves on; running out means this writer kept losing,
 * and the agent resends later.
 */
const APPEND_ATTEMPTS = 100;

const DEFAULT_SERVER_SELECTION_TIMEOUT_MS = 10_000;

/** A MongoDB error code the server answers for a collection that does not exist. */
const NAMESPACE_NOT_FOUND = 26;

interface PendingEvent {
  /** The event as it will be read back: attrs as they survive JSON. */
  event: NewEvent;
  attrs: string;
  /** Set once the body has been written to the chunk collection. */
  bodyId: ObjectId | null;
}

interface SessionAppend {
  appended: number;
  duplicates: number;
  /** The chain tail after this call's last stored event; null when it stored none. */
  tail: ChainTail | null;
}

/**
 * A {@link Store} in one MongoDB database.
 *
 * Durability: writes use write concern `{ w: "majority", j: true }`, so
 * `appendEvents` resolves (and the agent then deletes its spooled copy) only
 * once the events are in the journal of a majority of the replica set, and
 * survive a failover or a power cut.
 *
 * Atomicity: without transactions, a call that fails part-way may have stored
 * some of its events (always a prefix of each session's events, in order, with
 * the chain intact). The agent resends the whole batch, and events already
 * stored are recognised by id, so the record ends up as if the call had
 * succeeded once.
 *
 * Conditional updates (a close, a seal, a revocation, a use of an API key)
 * rely on the server applying a single-document update atomically, as MongoDB
 * does. FerretDB 1.x reads the document and then writes it, so two such
 * updates at once may both match, and the later write wins. Approval
 * decisions, which must be taken exactly once, are claimed by a unique `_id`
 * instead; see {@link MongoStore.decideApproval}.
 */
export class MongoStore implements Store {
  /** The connection string with secrets replaced by `***`, for messages. */
  readonly location: string;
  readonly database: string;
  readonly #uri: string;
  readonly #client: MongoClient;
  readonly #db: Db;
  #closed = false;
  readonly #appends = new SessionQueue();

  private constructor(uri: string, database: string, client: MongoClient) {
    this.#uri = uri;
    this.location = redactMongoUri(uri);
    this.database = database;
    this.#client = client;
    this.#db = client.db(database);
  }

  /**
   * Connects, then creates the collections and indexes that are missing and
   * records the schema version, so a misconfigured store fails at start-up
   * rather than at the first event. A connection string the driver cannot
   * parse throws GATE_CONFIG_INVALID; a server that cannot be reached within
   * `serverSelectionTimeoutMs` throws GATE_STORE_UNAVAILABLE. Both name the
   * connection string with its password replaced by `***`.
   */
  static async open(options: MongoStoreOptions): Promise<MongoStore> {
    const { uri, database } = options;
    const location = redactMongoUri(uri);
    const fromUri = uriOption(uri, "serverSelectionTimeoutMS");
    const timeoutMs =
      options.serverSelectionTimeoutMs ??
      (fromUri === undefined ? DEFAULT_SERVER_SELECTION_TIMEOUT_MS : Number(fromUri));
    if (!/^[A-Za-z0-9_-]{1,63}$/.test(database)) {
      throw new GatehouseError(
        "GATE_CONFIG_INVALID",
        `the MongoDB database name ${JSON.stringify(database)} is not usable; use 1 to 63 letters, digits, '_' or '-'`,
      );
    }
    let client: MongoClient;
    try {
      client = new MongoClient(uri, {
        serverSelectionTimeoutMS: timeoutMs,
        appName: "gatehouse-control-plane",
        writeConcern: { w: "majority", journal: true },
        // Bodies come back as Buffers rather than BSON Binary wrappers.
        promoteBuffers: true,
        ignoreUndefined: true,
      });
    } catch (cause) {
      // No cause kept: a parse error may quote the connection string, password included.
      throw new GatehouseError(
        "GATE_CONFIG_INVALID",
        `the MongoDB connection string ${location} is not valid (${scrubSecrets(describe(cause), uri)}); write it as mongodb://[user:password@]host[:port][,host…][/?options] or mongodb+srv://…, with reserved characters in the user name and password percent-encoded`,
      );
    }
    try {
      await client.connect();
    } catch (cause) {
      await client.close().catch(() => undefined);
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `cannot reach MongoDB at ${location} within ${timeoutMs / 1000} s (${scrubSecrets(describe(cause), uri)}); check that the server is running and reachable from this host (host names, port, firewall, DNS for mongodb+srv), that the TLS options match the server, and that the user name and password are right`,
      );
    }
    const store = new MongoStore(uri, database, client);
    try {
      await store.#prepare();
    } catch (cause) {
      await client.close().catch(() => undefined);
      throw storeError(uri, `preparing database ${database}`, cause);
    }
    return store;
  }

  async ping(): Promise<void> {
    await this.#run("answering a ping", () => this.#db.command({ ping: 1 }));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#client.close();
  }

  async insertSession(session: SessionRecord): Promise<void> {
    await this.#run(`storing session ${session.id}`, async () => {
      // Raised before the insert: a listing of open sessions must never look
      // back less far than a stored session lives (see listSessions).
      await this.#raiseMaxTtl(session.expiresAt - session.createdAt);
      try {
        await this.#sessions().insertOne(sessionToDocument(session));
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
        throw new GatehouseError(
          "GATE_INVALID_REQUEST",
          `session ${session.id} already exists; session ids must be unique`,
        );
      }
    });
  }

  async getSession(id: string): Promise<SessionRecord | null> {
    const doc = await this.#run(`reading session ${id}`, () => this.#sessions().findOne({ _id: id }));
    return doc === null ? null : sessionFromDocument(doc);
  }

  /**
   * Newest first, by `(createdAt, id)` descending, paged by keyset. Each query
   * has the shape of one index, named in `hint` ({@link sessionListQuery}), so
   * a page costs about `limit` index entries however deep into a million
   * sessions it is.
   */
  async listSessions(filter: SessionFilter): Promise<Page<SessionRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "session list");
    return this.#run("listing sessions", async () => {
      // Only listings of open sessions need the longest lifetime (one read by _id).
      const maxTtl = filter.status === "open" ? await this.#maxTtl() : 0;
      const { filter: query, sort, hint } = sessionListQuery(filter, after, maxTtl);
      const docs = await this.#sessions()
        .find(query, { sort, limit: limit + 1, hint })
        .toArray();
      return keysetPage(docs.map(sessionFromDocument), limit, sessionKey);
    });
  }

  /**
   * Sets `closedAt` only where it is still null, so of two closes the first
   * wins and both return the same record.
   */
  async closeSession(id: string, closedAt: number): Promise<SessionRecord | null> {
    const doc = await this.#run(`closing session ${id}`, async () => {
      const sessions = this.#sessions();
      const before = await sessions.findOne({ _id: id });
      if (before === null || before.closedAt !== null) return before;
      await sessions.updateOne(
        { _id: id, closedAt: null },
        { $set: { closedAt, closed: true, revoked: closedAt < before.expiresAt } },
      );
      return sessions.findOne({ _id: id });
    });
    return doc === null ? null : sessionFromDocument(doc);
  }

  /**
   * A conditional update: the seal is written only where none is stored or
   * the stored one covers no more events. When it is not written, the seal in
   * effect is read back; should that one have been replaced meanwhile by a
   * shorter one (it cannot: seals only move forward), the update is tried again.
   */
  async setSeal(id: string, seal: Seal): Promise<Seal> {
    return this.#run(`sealing session ${id}`, async () => {
      const sessions = this.#sessions();
      const stored: Seal = {
        count: seal.count,
        lastHash: seal.lastHash,
        sealedAt: seal.sealedAt,
        jws: seal.jws,
      };
      // Each pass that fails to write finds a stored seal covering more events, unless it
      // changes between the two reads; a bounded number of passes covers any real race.
      for (let attempt = 1; attempt <= 10; attempt++) {
        const update = await sessions.updateOne(
          { _id: id, $or: [{ seal: null }, { "seal.count": { $lte: seal.count } }] },
          { $set: { seal: stored } },
        );
        if (update.matchedCount > 0) return stored;
        const current = await sessions.findOne({ _id: id }, { projection: { seal: 1 } });
        if (current === null) {
          throw new GatehouseError(
            "GATE_NOT_FOUND",
            `session ${id} not found; only a stored session can be sealed`,
          );
        }
        if (current.seal !== null && current.seal.count > seal.count) return sealFromDocument(current.seal);
      }
      throw new GatehouseError(
        "GATE_INTERNAL",
        `session ${id} holds a seal this store cannot compare with a new one; inspect its seal field`,
      );
    });
  }

  async listRevokedSessions(now: number, closedAfter?: number): Promise<RevokedSessionRecord[]> {
    const docs = await this.#run("listing revoked sessions", () =>
      closedAfter === undefined
        ? this.#sessions()
            .find(
              { revoked: true, expiresAt: { $gt: now } },
              {
                sort: { expiresAt: 1, _id: 1 },
                projection: { _id: 1, expiresAt: 1, closedAt: 1 },
                hint: INDEX.sessionsRevoked,
              },
            )
            .toArray()
        : this.#sessions()
            .find(
              { revoked: true, closedAt: { $gt: closedAfter }, expiresAt: { $gt: now } },
              {
                sort: { closedAt: 1, _id: 1 },
                projection: { _id: 1, expiresAt: 1, closedAt: 1 },
                hint: INDEX.sessionsRevokedByClose,
              },
            )
            .toArray(),
    );
    return docs.map((doc) => ({ id: doc._id, expiresAt: doc.expiresAt, closedAt: doc.closedAt ?? 0 }));
  }

  /**
   * Per session, one at a time within this process ({@link SessionQueue}):
   * drop ids already stored (or repeated in the batch), write bodies too large
   * for a document to the chunk collection, read the chain tail, chain the
   * events after it and insert them in one ordered insert. If another writer
   * (another replica) took one of those seqs first, or stored one of the
   * events meanwhile, the unique indexes refuse the insert at that event; the
   * events before it are stored, and the rest are chained again after the new
   * tail. An ordered insert stops at its first refusal, so a session's seqs
   * never have a gap, and every stored event's hash covers the one before it.
   */
  async appendEvents(events: NewEvent[]): Promise<AppendResult> {
    const result: AppendResult = { appended: 0, duplicates: 0, tails: new Map() };
    if (events.length === 0) return result;
    const groups = new Map<string, PendingEvent[]>();
    for (const event of events) {
      const attrs = eventAttrsJson(event);
      const pending: PendingEvent = {
        event: { ...event, attrs: JSON.parse(attrs) as Record<string, unknown> },
        attrs,
        bodyId: null,
      };
      const group = groups.get(event.sessionId);
      if (group === undefined) groups.set(event.sessionId, [pending]);
      else group.push(pending);
    }
    for (const [sessionId, group] of groups) {
      const part = await this.#appends.run(sessionId, () =>
        this.#run(`appending ${group.length} events to session ${sessionId}`, () =>
          this.#appendToSession(sessionId, group),
        ),
      );
      result.appended += part.appended;
      result.duplicates += part.duplicates;
      if (part.tail !== null) result.tails.set(sessionId, part.tail);
    }
    return result;
  }

  async #appendToSession(sessionId: string, group: PendingEvent[]): Promise<SessionAppend> {
    const seen = new Set<string>();
    let pending: PendingEvent[] = [];
    let duplicates = 0;
    for (const item of group) {
      if (seen.has(item.event.id)) duplicates += 1;
      else {
        seen.add(item.event.id);
        pending.push(item);
      }
    }
    const stored = await this.#storedIds(sessionId, pending);
    duplicates += stored.size;
    pending = pending.filter((p) => !stored.has(p.event.id));
    if (pending.length === 0) return { appended: 0, duplicates, tail: null };

    for (const item of pending) {
      const body = item.event.body;
      if (body !== null && body.byteLength > INLINE_BODY_MAX_BYTES) {
        item.bodyId = await this.#writeChunks(sessionId, body);
      }
    }

    let appended = 0;
    let tail: ChainTail | null = null;
    for (let attempt = 1; ; attempt++) {
      const chained = chainEvents(
        await this.#tailOf(sessionId),
        pending.map((p) => p.event),
      );
      const docs = chained.stored.map((event, i) => eventToDocument(event, pending[i]));
      let inserted: number;
      try {
        await this.#events().insertMany(docs, { ordered: true });
        inserted = docs.length;
      } catch (error) {
        inserted = insertedBeforeConflict(error);
      }
      const last = chained.stored[inserted - 1];
      if (last !== undefined) {
        appended += inserted;
        tail = { count: last.seq, lastHash: last.hash };
      }
      pending = pending.slice(inserted);
      if (pending.length === 0) break;

      // Refused at pending[0]: another writer took its seq, or stored it (or a
      // later one of ours) meanwhile. What it stored is a duplicate now.
      const taken = await this.#storedIds(sessionId, pending);
      if (taken.size > 0) {
        const lost = pending.filter((p) => taken.has(p.event.id));
        duplicates += lost.length;
        await this.#dropChunks(lost);
        pending = pending.filter((p) => !taken.has(p.event.id));
        if (pending.length === 0) break;
      }
      if (attempt >= APPEND_ATTEMPTS) {
        throw new GatehouseError(
          "GATE_STORE_UNAVAILABLE",
          `the MongoDB session store at ${this.location} gave up appending to session ${sessionId} after ${attempt} attempts: other writers kept taking the next sequence numbers; the events not stored yet will be resent`,
        );
      }
      // Writers in other processes: spread the retries so they stop colliding.
      await delay(Math.floor(Math.random() * Math.min(attempt, 20) * 2));
    }
    return { appended, duplicates, tail };
  }

  /** The ids among `pending` already stored for the session. */
  async #storedIds(sessionId: string, pending: PendingEvent[]): Promise<Set<string>> {
    if (pending.length === 0) return new Set();
    const docs = await this.#events()
      .find(
        { sessionId, eventId: { $in: pending.map((p) => p.event.id) } },
        { projection: { _id: 0, eventId: 1 }, hint: INDEX.eventsById },
      )
      .toArray();
    return new Set(docs.map((doc) => doc.eventId));
  }

  async #tailOf(sessionId: string): Promise<ChainTail> {
    const last = await this.#events().findOne(
      { sessionId },
      { sort: { seq: -1 }, projection: { _id: 0, seq: 1, hash: 1 }, hint: INDEX.eventsBySeq },
    );
    return last === null ? { ...EMPTY_TAIL } : { count: last.seq, lastHash: last.hash };
  }

  /**
   * Writes a body in {@link BODY_CHUNK_BYTES} pieces under a fresh body id,
   * before the event that points at it, so a stored event never points at a
   * missing body. Pieces of an event that is then not stored (a crash, or a
   * racing writer stored it first) are left without an event; retention
   * removes them with their session.
   */
  async #writeChunks(sessionId: string, body: Uint8Array): Promise<ObjectId> {
    const bodyId = new ObjectId();
    const chunks: ChunkDocument[] = [];
    for (let offset = 0, n = 0; offset < body.byteLength; offset += BODY_CHUNK_BYTES, n++) {
      chunks.push({ bodyId, sessionId, n, data: body.subarray(offset, offset + BODY_CHUNK_BYTES) });
    }
    await this.#chunks().insertMany(chunks, { ordered: true });
    return bodyId;
  }

  async #dropChunks(lost: PendingEvent[]): Promise<void> {
    const ids = lost.flatMap((p) => (p.bodyId === null ? [] : [p.bodyId]));
    if (ids.length > 0) {
      await this.#chunks().deleteMany({ bodyId: { $in: ids } }, { hint: INDEX.chunksByBody });
    }
  }

  /**
   * Events with `seq > afterSeq`, in order, at most `limit`; fewer when their
   * bodies exceed {@link READ_EVENTS_BYTE_BUDGET}. Bodies kept in chunks are
   * put together again here; callers see no difference.
   */
  async readEvents(sessionId: string, afterSeq: number, limit: number): Promise<StoredEvent[]> {
    if (!(limit >= 1)) return [];
    const take = Math.floor(limit);
    return this.#run(`reading events of session ${sessionId}`, async () => {
      const docs: EventDocument[] = [];
      let bytes = 0;
      const cursor = this.#events().find(
        { sessionId, seq: { $gt: afterSeq } },
        { sort: { seq: 1 }, limit: take, hint: INDEX.eventsBySeq, projection: { _id: 0 } },
      );
      try {
        for await (const doc of cursor) {
          if (docs.length > 0 && bytes + doc.bodySize > READ_EVENTS_BYTE_BUDGET) break;
          bytes += doc.bodySize;
          docs.push(doc);
        }
      } finally {
        await cursor.close();
      }
      const events: StoredEvent[] = [];
      for (const doc of docs) {
        const { bodyId } = doc;
        const body = bodyId === null ? bytesOf(doc.body) : await this.#readChunks({ ...doc, bodyId });
        events.push(eventFromDocument(doc, body));
      }
      return events;
    });
  }

  async #readChunks(doc: EventDocument & { bodyId: ObjectId }): Promise<Uint8Array> {
    const body = new Uint8Array(doc.bodySize);
    let offset = 0;
    let expected = 0;
    const cursor = this.#chunks().find(
      { bodyId: doc.bodyId },
      { sort: { n: 1 }, hint: INDEX.chunksByBody, projection: { _id: 0, n: 1, data: 1 } },
    );
    for await (const chunk of cursor) {
      const data = bytesOf(chunk.data) ?? new Uint8Array(0);
      if (chunk.n !== expected || offset + data.byteLength > body.byteLength) break;
      body.set(data, offset);
      offset += data.byteLength;
      expected += 1;
    }
    await cursor.close();
    if (offset !== body.byteLength) {
      throw new GatehouseError(
        "GATE_INTERNAL",
        `the body of event ${doc.eventId} (seq ${doc.seq}) of session ${doc.sessionId} is incomplete in the MongoDB session store at ${this.location}: ${offset} of ${doc.bodySize} bytes found`,
      );
    }
    return body;
  }

  async chainTail(sessionId: string): Promise<ChainTail> {
    return this.#run(`reading the chain tail of session ${sessionId}`, () => this.#tailOf(sessionId));
  }

  async insertAgent(agent: AgentRecord): Promise<void> {
    await this.#run(`storing agent ${agent.id}`, () => {
      const agents = this.#agents();
      return insertCredential(
        () => agents.findOne({ $or: [{ _id: agent.id }, { tokenHash: agent.tokenHash }] }, CLASH_PROJECTION),
        () => agents.insertOne(agentToDocument(agent)),
        (clashId) => agentClash(agent, clashId),
      );
    });
  }

  async findAgentByTokenHash(tokenHash: string): Promise<AgentRecord | null> {
    const doc = await this.#run("looking up an agent by token", () =>
      this.#agents().findOne({ tokenHash }, { hint: INDEX.agentsByToken }),
    );
    return doc === null ? null : agentFromDocument(doc);
  }

  async listAgents(): Promise<AgentRecord[]> {
    const docs = await this.#run("listing agents", () =>
      this.#agents()
        .find({}, { sort: { createdAt: 1, _id: 1 } })
        .toArray(),
    );
    return docs.map(agentFromDocument);
  }

  /** Revoking a revoked agent keeps the first revocation time. */
  async revokeAgent(id: string, revokedAt: number): Promise<AgentRecord | null> {
    const doc = await this.#run(`revoking agent ${id}`, async () => {
      const agents = this.#agents();
      await agents.updateOne({ _id: id, revokedAt: null }, { $set: { revokedAt } });
      return agents.findOne({ _id: id });
    });
    return doc === null ? null : agentFromDocument(doc);
  }

  async touchAgent(id: string, lastSeenAt: number): Promise<void> {
    await this.#run(`recording that agent ${id} was seen`, () =>
      this.#agents().updateOne({ _id: id }, { $set: { lastSeenAt } }),
    );
  }

  async insertApiKey(key: ApiKeyRecord): Promise<void> {
    await this.#run(`storing API key ${key.id}`, () => {
      const apiKeys = this.#apiKeys();
      return insertCredential(
        () => apiKeys.findOne({ $or: [{ _id: key.id }, { keyHash: key.keyHash }] }, CLASH_PROJECTION),
        () => apiKeys.insertOne(apiKeyToDocument(key)),
        (clashId) => apiKeyClash(key, clashId),
      );
    });
  }

  async findApiKeyByHash(keyHash: string): Promise<ApiKeyRecord | null> {
    const doc = await this.#run("looking up an API key by key", () =>
      this.#apiKeys().findOne({ keyHash }, { hint: INDEX.apiKeysByHash }),
    );
    return doc === null ? null : apiKeyFromDocument(doc);
  }

  async getApiKey(id: string): Promise<ApiKeyRecord | null> {
    const doc = await this.#run(`reading API key ${id}`, () => this.#apiKeys().findOne({ _id: id }));
    return doc === null ? null : apiKeyFromDocument(doc);
  }

  /** Newest first by `(createdAt, id)`, keyset-paged on the api_keys_by_time index like session listings. */
  async listApiKeys(filter: ApiKeyFilter): Promise<Page<ApiKeyRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "API key list");
    const docs = await this.#run("listing API keys", () =>
      this.#apiKeys()
        .find(keysetAfter<ApiKeyDocument>("createdAt", after), {
          sort: { createdAt: -1, _id: -1 },
          limit: limit + 1,
          hint: INDEX.apiKeysByTime,
        })
        .toArray(),
    );
    return keysetPage(docs.map(apiKeyFromDocument), limit, sessionKey);
  }

  /**
   * Sets `revokedAt` only where it is still null, so of two revocations the
   * first wins and both return the same record.
   */
  async revokeApiKey(id: string, revokedAt: number): Promise<ApiKeyRecord | null> {
    const doc = await this.#run(`revoking API key ${id}`, async () => {
      const apiKeys = this.#apiKeys();
      await apiKeys.updateOne({ _id: id, revokedAt: null }, { $set: { revokedAt } });
      return apiKeys.findOne({ _id: id });
    });
    return doc === null ? null : apiKeyFromDocument(doc);
  }

  /**
   * Moves `lastUsedAt` only forward, in the update's condition, so a use
   * reported late (by a slower replica, say) cannot hide a later one. Null
   * is matched apart: a number range never matches it.
   */
  async touchApiKey(id: string, lastUsedAt: number): Promise<void> {
    await this.#run(`recording a use of API key ${id}`, () =>
      this.#apiKeys().updateOne(
        { _id: id, $or: [{ lastUsedAt: null }, { lastUsedAt: { $lt: lastUsedAt } }] },
        { $set: { lastUsedAt } },
      ),
    );
  }

  async appendAudit(entry: AuditRecord): Promise<void> {
    const details = auditDetailsJson(entry);
    await this.#run(`storing audit entry ${entry.id}`, async () => {
      try {
        await this.#audit().insertOne({
          _id: entry.id,
          at: entry.at,
          actor: entry.actor,
          action: entry.action,
          target: entry.target,
          details,
        });
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
        throw new GatehouseError(
          "GATE_INVALID_REQUEST",
          `audit entry ${entry.id} already exists; audit entry ids must be unique`,
        );
      }
    });
  }

  /** Newest first by `(at, id)`, keyset-paged on the audit_by_time index like session listings. */
  async listAudit(filter: AuditFilter): Promise<Page<AuditRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "audit log");
    const docs = await this.#run("listing the audit log", () =>
      this.#audit()
        .find(keysetAfter<AuditDocument>("at", after), {
          sort: { at: -1, _id: -1 },
          limit: limit + 1,
          hint: INDEX.auditByTime,
        })
        .toArray(),
    );
    const items = docs.map(
      (doc): AuditRecord => ({
        id: doc._id,
        at: doc.at,
        actor: doc.actor,
        action: doc.action,
        target: doc.target,
        details: JSON.parse(doc.details) as Record<string, unknown>,
      }),
    );
    return keysetPage(items, limit, auditKey);
  }

  /**
   * An insert, refused by `_id` when the id is stored already; the stored
   * record is then read and returned as it is.
   */
  async insertApproval(approval: ApprovalRecord): Promise<ApprovalRecord> {
    const doc = approvalToDocument(approval);
    return this.#run(`storing approval ${approval.id}`, async () => {
      try {
        await this.#approvals().insertOne(doc);
        return approvalFromDocument(doc);
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
      }
      const stored = await this.#approvals().findOne({ _id: approval.id });
      if (stored === null) {
        throw new GatehouseError(
          "GATE_INTERNAL",
          `the MongoDB session store at ${this.location} refused approval ${approval.id} as stored already, but holds none with that id`,
        );
      }
      return approvalFromDocument(stored);
    });
  }

  async getApproval(id: string): Promise<ApprovalRecord | null> {
    const doc = await this.#run(`reading approval ${id}`, () => this.#approvals().findOne({ _id: id }));
    return doc === null ? null : approvalFromDocument(doc);
  }

  async getApprovals(ids: readonly string[]): Promise<ApprovalRecord[]> {
    if (ids.length === 0) return [];
    const docs = await this.#run(`reading ${ids.length} approvals`, () =>
      this.#approvals()
        .find({ _id: { $in: [...new Set(ids)] } })
        .toArray(),
    );
    return docs.map(approvalFromDocument);
  }

  /**
   * Newest first by `(createdAt, id)`, keyset-paged on approvals_by_time, or
   * approvals_by_status when a status is asked for, like session listings.
   */
  async listApprovals(filter: ApprovalFilter): Promise<Page<ApprovalRecord>> {
    const limit = pageLimit(filter.limit);
    const after = filter.cursor === undefined ? null : decodeKeysetCursor(filter.cursor, "approval list");
    const { status } = filter;
    const page = keysetAfter<ApprovalDocument>("createdAt", after);
    const docs = await this.#run(
      status === undefined ? "listing approvals" : `listing ${status} approvals`,
      () =>
        this.#approvals()
          .find(status === undefined ? page : { ...page, status }, {
            sort: { createdAt: -1, _id: -1 },
            limit: limit + 1,
            hint: status === undefined ? INDEX.approvalsByTime : INDEX.approvalsByStatus,
          })
          .toArray(),
    );
    return keysetPage(docs.map(approvalFromDocument), limit, sessionKey);
  }

  /**
   * Claims the decision first, by inserting it under the approval's id into
   * approval_decisions: the one insert that succeeds takes the approval, on
   * any server (see {@link ApprovalDecisionDocument}). The claimed decision,
   * this call's or the one that beat it, is then written into the approval
   * where it is still pending; racing writers write the same values.
   */
  async decideApproval(id: string, decision: ApprovalDecisionUpdate): Promise<ApprovalRecord | null> {
    return this.#run(`deciding approval ${id}`, async () => {
      const doc = await this.#approvals().findOne({ _id: id });
      if (doc === null) return null;
      const approval = approvalFromDocument(doc);
      if (approval.status !== "pending") return approval;
      const { taken } = await this.#claimDecision(id, decision);
      await this.#writeDecision([id], taken);
      return { ...approval, ...taken };
    });
  }

  /**
   * Claims an expiry for each pending approval due by `now`, as
   * {@link MongoStore.decideApproval} claims a decision, and returns those it
   * won, in order of expiry. Where another decision was claimed first, that one
   * is written instead (finishing it, should its writer have stopped between
   * claim and write) and the approval is not returned.
   */
  async expireApprovals(now: number, reason: string): Promise<ApprovalRecord[]> {
    return this.#run("expiring approvals", async () => {
      const due = await this.#approvals()
        .find(
          { status: "pending", expiresAt: { $lte: now } },
          { sort: { expiresAt: 1, _id: 1 }, hint: INDEX.approvalsByExpiry },
        )
        .toArray();
      const expiry: ApprovalDecisionUpdate = {
        status: "expired",
        decidedAt: now,
        decidedBy: "system",
        reason,
      };
      const marked: ApprovalRecord[] = [];
      for (const doc of due) {
        const claim = await this.#claimDecision(doc._id, expiry);
        if (claim.won) marked.push({ ...approvalFromDocument(doc), ...claim.taken });
        else await this.#writeDecision([doc._id], claim.taken);
      }
      if (marked.length > 0) {
        await this.#writeDecision(
          marked.map((approval) => approval.id),
          expiry,
        );
      }
      return marked;
    });
  }

  /** The decision approval `id` takes: `decision` when this call claimed it first, else the stored one. */
  async #claimDecision(
    id: string,
    decision: ApprovalDecisionUpdate,
  ): Promise<{ won: boolean; taken: ApprovalDecisionUpdate }> {
    const taken = decisionOf(decision);
    try {
      await this.#approvalDecisions().insertOne({ _id: id, ...taken });
      return { won: true, taken };
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
    }
    const stored = await this.#approvalDecisions().findOne({ _id: id });
    if (stored === null) {
      throw new GatehouseError(
        "GATE_INTERNAL",
        `the MongoDB session store at ${this.location} refused a decision on approval ${id} as claimed already, but holds none`,
      );
    }
    return { won: false, taken: decisionOf(stored) };
  }

  async #writeDecision(ids: string[], decision: ApprovalDecisionUpdate): Promise<void> {
    await this.#approvals().updateMany(
      { _id: { $in: ids }, status: "pending" },
      { $set: decisionOf(decision) },
    );
  }

  async listPolicies(): Promise<StoredPolicyRecord[]> {
    const docs = await this.#run("listing policies", () =>
      this.#policies()
        .find({}, { sort: { _id: 1 } })
        .toArray(),
    );
    return docs.map(
      (doc): StoredPolicyRecord => ({
        name: doc._id,
        body: JSON.parse(doc.body) as Record<string, unknown>,
        updatedAt: doc.updatedAt,
        updatedBy: doc.updatedBy,
      }),
    );
  }

  /** An upsert; when two first upserts of one name race and one is refused, it tries once more as an update. */
  async putPolicy(policy: StoredPolicyRecord): Promise<void> {
    const body = policyBodyJson(policy);
    const put = () =>
      this.#policies().updateOne(
        { _id: policy.name },
        { $set: { body, updatedAt: policy.updatedAt, updatedBy: policy.updatedBy } },
        { upsert: true },
      );
    await this.#run(`storing policy ${policy.name}`, async () => {
      try {
        await put();
      } catch (error) {
        if (!isDuplicateKey(error)) throw error;
        await put();
      }
    });
  }

  async deletePolicy(name: string): Promise<boolean> {
    const result = await this.#run(`deleting policy ${name}`, () =>
      this.#policies().deleteOne({ _id: name }),
    );
    return result.deletedCount > 0;
  }

  /**
   * Takes the sessions closed longest ago (sessions_by_close), deletes their
   * body chunks and events, and the session documents last: a purge cut short
   * leaves each unfinished session in place, found again by the next call.
   */
  async purgeClosedSessions(closedBefore: number, limit: number): Promise<PurgeResult> {
    const take = purgeLimit(limit);
    return this.#run("purging closed sessions", async () => {
      const ids = (
        await this.#sessions()
          .find(
            { closedAt: { $lt: closedBefore } },
            { sort: { closedAt: 1 }, limit: take, projection: { _id: 1 }, hint: INDEX.sessionsByClose },
          )
          .toArray()
      ).map((doc) => doc._id);
      if (ids.length === 0) return { sessions: 0, events: 0, ids };
      // Events before their bodies' chunks, so an interrupted purge never leaves an
      // event pointing at chunks that are gone; the session row, deleted last, keeps
      // what is left findable by the next call.
      const events = await this.#events().deleteMany(
        { sessionId: { $in: ids } },
        { hint: INDEX.eventsBySeq },
      );
      await this.#chunks().deleteMany({ sessionId: { $in: ids } }, { hint: INDEX.chunksBySession });
      const sessions = await this.#sessions().deleteMany({ _id: { $in: ids }, closed: true });
      // Another replica purging at the same time may have taken some of them; they are
      // listed by both, which the audit log can bear better than a gap.
      return { sessions: sessions.deletedCount, events: events.deletedCount, ids };
    });
  }

  /**
   * Checks the schema version, creates what is missing, and writes, so a
   * read-only account fails here rather than at the first event. Indexes are
   * created one per command, and only those missing: FerretDB 1.x fails a
   * createIndexes command that names several indexes some of which exist.
   */
  async #prepare(): Promise<void> {
    const meta = this.#meta();
    const version = await meta.findOne({ _id: "schema_version" });
    if (version !== null && version.value > MONGO_SCHEMA_VERSION) {
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `the MongoDB database ${this.database} at ${this.location} has schema version ${version.value}, newer than this release understands (${MONGO_SCHEMA_VERSION}); upgrade Gatehouse or point the store at another database`,
      );
    }
    const byCollection = new Map<CollectionName, typeof INDEXES>();
    for (const spec of INDEXES) {
      byCollection.set(spec.collection, [...(byCollection.get(spec.collection) ?? []), spec]);
    }
    for (const [name, specs] of byCollection) {
      const collection = this.#db.collection(name);
      const existing = new Set(await indexNames(collection));
      for (const spec of specs) {
        if (existing.has(spec.name)) continue;
        await collection.createIndex(spec.key, { name: spec.name, ...(spec.unique ? { unique: true } : {}) });
      }
    }
    await this.#upsertMeta("schema_version", { $max: { value: MONGO_SCHEMA_VERSION } });
    await this.#upsertMeta("max_ttl_ms", { $max: { value: 0 } });
    await this.#upsertMeta("opened_at", { $set: { value: Date.now() } });
  }

  async #raiseMaxTtl(ttl: number): Promise<void> {
    await this.#upsertMeta("max_ttl_ms", { $max: { value: ttl } });
  }

  async #maxTtl(): Promise<number> {
    const doc = await this.#meta().findOne({ _id: "max_ttl_ms" });
    return doc?.value ?? 0;
  }

  /**
   * Two first upserts of one document can race, and servers differ in
   * whether they retry the loser; when it is refused, the document exists
   * and a second try updates it.
   */
  async #upsertMeta(
    id: MetaDocument["_id"],
    update: { $max: { value: number } } | { $set: { value: number } },
  ): Promise<void> {
    try {
      await this.#meta().updateOne({ _id: id }, update, { upsert: true });
    } catch (error) {
      if (!isDuplicateKey(error)) throw error;
      await this.#meta().updateOne({ _id: id }, update, { upsert: true });
    }
  }

  /** Runs `work`, turning driver failures into Gatehouse errors that say what was being done. */
  async #run<T>(doing: string, work: () => Promise<T>): Promise<T> {
    if (this.#closed) {
      throw new GatehouseError(
        "GATE_STORE_UNAVAILABLE",
        `the MongoDB session store at ${this.location} is closed; open it again to use it`,
      );
    }
    try {
      return await work();
    } catch (cause) {
      throw storeError(this.#uri, doing, cause);
    }
  }

  #sessions(): Collection<SessionDocument> {
    return this.#db.collection<SessionDocument>(COLLECTIONS.sessions);
  }

  #events(): Collection<EventDocument> {
    return this.#db.collection<EventDocument>(COLLECTIONS.events);
  }

  #chunks(): Collection<ChunkDocument> {
    return this.#db.collection<ChunkDocument>(COLLECTIONS.chunks);
  }

  #agents(): Collection<AgentDocument> {
    return this.#db.collection<AgentDocument>(COLLECTIONS.agents);
  }

  #audit(): Collection<AuditDocument> {
    return this.#db.collection<AuditDocument>(COLLECTIONS.audit);
  }

  #apiKeys(): Collection<ApiKeyDocument> {
    return this.#db.collection<ApiKeyDocument>(COLLECTIONS.apiKeys);
  }

  #approvals(): Collection<ApprovalDocument> {
    return this.#db.collection<ApprovalDocument>(COLLECTIONS.approvals);
  }

  #approvalDecisions(): Collection<ApprovalDecisionDocument> {
    return this.#db.collection<ApprovalDecisionDocument>(COLLECTIONS.approvalDecisions);
  }

  #policies(): Collection<PolicyDocument> {
    return this.#db.collection<PolicyDocument>(COLLECTIONS.policies);
  }

  #meta(): Collection<MetaDocument> {
    return this.#db.collection<MetaDocument>(COLLECTIONS.meta);
  }
}

/** Index names of a collection; none when the collection does not exist yet. */
async function indexNames(collection: Collection<Document>): Promise<string[]> {
  try {
    const indexes = await collection.listIndexes().toArray();
    return indexes.flatMap((index) => (typeof index.name === "string" ? [index.name] : []));
  } catch (error) {
    if (error instanceof MongoServerError && error.code === NAMESPACE_NOT_FOUND) return [];
    throw error;
  }
}

const CLASH_PROJECTION = { projection: { _id: 1 } } as const;

/**
 * Inserts a credential (an agent, an API key) whose id and hash must both be
 * new. `find` looks for a stored one with either, so the refusal can name it;
 * the unique indexes refuse one stored by another replica in between, and
 * that refusal names none (`clash(null)`).
 */
async function insertCredential(
  find: () => Promise<{ _id: string } | null>,
  insert: () => Promise<unknown>,
  clash: (clashId: string | null) => GatehouseError,
): Promise<void> {
  const found = await find();
  if (found !== null) throw clash(found._id);
  try {
    await insert();
  } catch (error) {
    if (!isDuplicateKey(error)) throw error;
    throw clash(null);
  }
}

/**
 * How many documents of an ordered insert were stored before it was refused
 * for a duplicate key. Anything else is rethrown: an ordered insert that
 * fails for another reason may have stored a prefix, which a resend finds.
 */
function insertedBeforeConflict(error: unknown): number {
  if (!(error instanceof MongoBulkWriteError)) throw error;
  const writeErrors = writeErrorsOf(error);
  const first = writeErrors.reduce<{ code: number; index: number } | null>(
    (min, e) => (min === null || e.index < min.index ? e : min),
    null,
  );
  if (first === null || first.code !== 11000) throw error;
  return first.index;
}

function bytesOf(value: Uint8Array | null | undefined): Uint8Array | null {
  if (value === null || value === undefined) return null;
  // A fresh view without Buffer's prototype, so records read the same from every store.
  return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
}

function sessionToDocument(session: SessionRecord): SessionDocument {
  return {
    _id: session.id,
    connection: session.connection,
    subjectKind: session.subject.kind,
    subjectId: session.subject.id,
    subjectClaims: JSON.stringify(session.subject.claims),
    labels: JSON.stringify(session.labels),
    createdAt: session.createdAt,
    expiresAt: session.expiresAt,
    closedAt: session.closedAt,
    seal:
      session.seal === null
        ? null
        : {
            count: session.seal.count,
            lastHash: session.seal.lastHash,
            sealedAt: session.seal.sealedAt,
            jws: session.seal.jws,
          },
    closed: session.closedAt !== null,
    revoked: session.closedAt !== null && session.closedAt < session.expiresAt,
  };
}

function sessionFromDocument(doc: SessionDocument): SessionRecord {
  return {
    id: doc._id,
    connection: doc.connection,
    subject: {
      kind: doc.subjectKind as SessionRecord["subject"]["kind"],
      id: doc.subjectId,
      claims: JSON.parse(doc.subjectClaims) as Record<string, string>,
    },
    labels: JSON.parse(doc.labels) as Record<string, string>,
    createdAt: doc.createdAt,
    expiresAt: doc.expiresAt,
    closedAt: doc.closedAt ?? null,
    seal: doc.seal === null || doc.seal === undefined ? null : sealFromDocument(doc.seal),
  };
}

function sealFromDocument(seal: Seal): Seal {
  return { count: seal.count, lastHash: seal.lastHash, sealedAt: seal.sealedAt, jws: seal.jws };
}

function eventToDocument(event: StoredEvent, pending: PendingEvent | undefined): EventDocument {
  const bodyId = pending?.bodyId ?? null;
  return {
    sessionId: event.sessionId,
    seq: event.seq,
    eventId: event.id,
    exchangeId: event.exchangeId,
    at: event.at,
    kind: event.kind,
    hash: event.hash,
    attrs: pending?.attrs ?? JSON.stringify(event.attrs),
    body: bodyId === null ? event.body : null,
    bodySize: event.body?.byteLength ?? 0,
    bodyId,
  };
}

function eventFromDocument(doc: EventDocument, body: Uint8Array | null): StoredEvent {
  return {
    id: doc.eventId,
    sessionId: doc.sessionId,
    exchangeId: doc.exchangeId,
    at: doc.at,
    kind: doc.kind as EventKind,
    attrs: JSON.parse(doc.attrs) as Record<string, unknown>,
    body,
    seq: doc.seq,
    hash: doc.hash,
  };
}

function agentToDocument(agent: AgentRecord): AgentDocument {
  return {
    _id: agent.id,
    name: agent.name,
    tokenHash: agent.tokenHash,
    createdAt: agent.createdAt,
    revokedAt: agent.revokedAt,
    lastSeenAt: agent.lastSeenAt,
    connections: agent.connections === null ? null : [...agent.connections],
  };
}

function agentFromDocument(doc: AgentDocument): AgentRecord {
  return {
    id: doc._id,
    name: doc.name,
    tokenHash: doc.tokenHash,
    createdAt: doc.createdAt,
    revokedAt: doc.revokedAt ?? null,
    lastSeenAt: doc.lastSeenAt ?? null,
    connections: doc.connections ?? null,
  };
}

/**
 * Only the fields a record has are stored, whatever else the object passed in
 * carries: a caller holding the key itself must not be able to store it by mistake.
 */
function apiKeyToDocument(key: ApiKeyRecord): ApiKeyDocument {
  const { id, name, role, kind, keyHash, createdBy, createdAt, expiresAt, revokedAt, lastUsedAt } = key;
  return { _id: id, name, role, kind, keyHash, createdBy, createdAt, expiresAt, revokedAt, lastUsedAt };
}

/** A document holds what {@link apiKeyToDocument} wrote, under the record's own field names. */
function apiKeyFromDocument({ _id, ...fields }: ApiKeyDocument): ApiKeyRecord {
  return { id: _id, ...fields };
}

/** Only the fields a record has are stored, as for API keys; arrays and the requester are copied. */
function approvalToDocument(approval: ApprovalRecord): ApprovalDocument {
  return {
    _id: approval.id,
    sessionId: approval.sessionId,
    exchangeId: approval.exchangeId,
    connection: approval.connection,
    agentAccountId: approval.agentAccountId,
    requester: { kind: approval.requester.kind, id: approval.requester.id },
    policy: approval.policy,
    rule: approval.rule,
    stage: approval.stage,
    message: approval.message,
    preview: approval.preview,
    matched: [...approval.matched],
    status: approval.status,
    createdAt: approval.createdAt,
    expiresAt: approval.expiresAt,
    decidedAt: approval.decidedAt,
    decidedBy: approval.decidedBy,
    reason: approval.reason,
  };
}

function approvalFromDocument(doc: ApprovalDocument): ApprovalRecord {
  return {
    id: doc._id,
    sessionId: doc.sessionId,
    exchangeId: doc.exchangeId,
    connection: doc.connection,
    agentAccountId: doc.agentAccountId,
    requester: { kind: doc.requester.kind, id: doc.requester.id },
    policy: doc.policy,
    rule: doc.rule,
    stage: doc.stage,
    message: doc.message,
    preview: doc.preview,
    matched: [...doc.matched],
    status: doc.status,
    createdAt: doc.createdAt,
    expiresAt: doc.expiresAt,
    decidedAt: doc.decidedAt ?? null,
    decidedBy: doc.decidedBy ?? null,
    reason: doc.reason ?? null,
  };
}

/** The four fields of a decision, whatever else the object carries (a decision document's `_id`). */
function decisionOf(decision: ApprovalDecisionUpdate): ApprovalDecisionUpdate {
  return {
    status: decision.status,
    decidedAt: decision.decidedAt,
    decidedBy: decision.decidedBy,
    reason: decision.reason,
  };
}

function agentClash(agent: AgentRecord, clashId: string | null): GatehouseError {
  return new GatehouseError(
    "GATE_INVALID_REQUEST",
    clashId === agent.id
      ? `agent ${agent.id} already exists; agent ids must be unique`
      : clashId === null
        ? `agent ${agent.id} has the same id or token as a stored agent; use a new id and issue a new token`
        : `agent ${agent.id} has the same token as agent ${clashId}; issue a new token`,
  );
}
