/**
 * How the two session stores hold up at scale: each is seeded with the same
 * 100,000 sessions, then session listings are timed (first pages, deep pages by
 * cursor, filtered pages) and events are appended by concurrent writers for a
 * fixed time. The SQLite store runs in a temp dir; the MongoDB store runs
 * against FerretDB (test/support/mongo-server.ts) or MONGODB_URI. Both stores
 * are reported side by side with the targets. See bench/README.md.
 *
 * Usage: npm run bench:store [-- --flag value …]   (flags below; each also as BENCH_<FLAG> in the environment)
 */
import { createHash, randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { encodeKeysetCursor } from "@gatehouse/control-plane/store/cursor.js";
import { sessionListQuery } from "@gatehouse/control-plane/store/mongo/queries.js";
import type { SessionDocument } from "@gatehouse/control-plane/store/mongo/schema.js";
import { MongoStore } from "@gatehouse/control-plane/store/mongo/store.js";
import { SqliteStore } from "@gatehouse/control-plane/store/sqlite/store.js";
import type {
  EventKind,
  NewEvent,
  SessionFilter,
  SessionRecord,
  SessionStatus,
  Store,
  Subject,
} from "@gatehouse/control-plane/store/types.js";
import { MongoClient } from "mongodb";
import type * as MongoServerModule from "../test/support/mongo-server.js";
import { cpuMillis, machineBusyMillis } from "./child.js";
import { giveUpAfter, heading, percentile, positiveInt, readFlags, run, table, testSupport } from "./cli.js";

// ---------------------------------------------------------------- settings

const FLAGS = {
  stores: { default: "sqlite,mongo", help: "which stores to measure, in this order" },
  sessions: { default: "100000", help: "sessions seeded into each store" },
  "seed-concurrency": {
    default: "4",
    help: "session inserts in flight while seeding (FerretDB is fastest at about 4)",
  },
  limit: { default: "50", help: "page size of every listing" },
  samples: { default: "500", help: "timed pages per listing" },
  warmup: { default: "50", help: "untimed pages per listing before it is timed" },
  walk: { default: "10", help: "pages followed by cursor from each starting point" },
  "list-seconds": {
    default: "20",
    help: "time limit for the timed pages of each listing on each store (its warm-up gets a quarter of it); fewer samples if it runs out",
  },
  appenders: { default: "16", help: "sessions appended to concurrently in the ingest phase" },
  batch: { default: "32", help: "events per appendEvents call" },
  "ingest-seconds": { default: "10", help: "how long the ingest phase is timed" },
  "ingest-warmup": { default: "2", help: "seconds of untimed ingest first" },
  timeout: { default: "3600", help: "give up (exit 1) after this many seconds" },
} as const;

interface Settings {
  sessions: number;
  seedConcurrency: number;
  limit: number;
  samples: number;
  warmup: number;
  walk: number;
  listMs: number;
  appenders: number;
  batch: number;
  ingestMs: number;
  ingestWarmupMs: number;
}

class BenchFailure extends Error {}

const progress = (text: string) => process.stderr.write(`· ${text}\n`);

// ---------------------------------------------------------------- seeded sessions

/**
 * Uniform draws in [0, 1) derived from `key`, so that every run (and both
 * stores) get the same sessions and pick the same filters.
 */
function draws(key: string): (slot: number) => number {
  const bytes = createHash("sha512").update(key).digest();
  return (slot) => bytes.readUInt32BE((slot % 16) * 4) / 2 ** 32;
}

/** The choice at which the running sum of weights first exceeds `u` (weights sum to 1). */
function weighted<T>(choices: readonly (readonly [T, number])[], u: number): T {
  let sum = 0;
  for (const [choice, weight] of choices) {
    sum += weight;
    if (u < sum) return choice;
  }
  const last = choices.at(-1);
  if (last === undefined) throw new Error("nothing to choose from");
  return last[0];
}

const CONNECTIONS = [
  ["claude", 0.55],
  ["claude-ci", 0.25],
  ["openai", 0.15],
  ["github", 0.05],
] as const;

/**
 * 150 subjects with Zipf-like shares: CI workflows (OIDC) and API keys, a few
 * busy and many occasional, as an organisation's would be.
 */
const SUBJECTS: readonly (readonly [Subject, number])[] = (() => {
  const subjects: Subject[] = [];
  for (let n = 0; n < 100; n++) {
    const repository = `acme/service-${String(n).padStart(3, "0")}`;
    subjects.push({
      kind: "oidc",
      id: `https://token.actions.githubusercontent.com#repo:${repository}:ref:refs/heads/main`,
      claims: { repository, workflow: "review", ref: "refs/heads/main", actor: `dev-${n % 37}` },
    });
  }
  for (let n = 0; n < 50; n++) {
    subjects.push({
      kind: "api-key",
      id: `key_${String(n).padStart(4, "0")}`,
      claims: { name: `laptop ${n}` },
    });
  }
  const total = subjects.reduce((sum, _, rank) => sum + 1 / (rank + 1), 0);
  return subjects.map((subject, rank) => [subject, 1 / (rank + 1) / total] as const);
})();

const DAY_MS = 86_400_000;
/** Seeded sessions span this long before the reference time… */
const SPAN_MS = 30 * DAY_MS;
/** …and this share of them, the busy last hour, is within this much of it. */
const RECENT_SHARE = 0.02;
const RECENT_MS = 3_600_000;

/** A time-ordered id, as the control plane makes them (UUIDv7), with its random bits drawn from `u`. */
function uuidv7At(ms: number, u: (slot: number) => number): string {
  const random = Array.from({ length: 5 }, (_, slot) =>
    Math.floor(u(10 + slot) * 2 ** 16)
      .toString(16)
      .padStart(4, "0"),
  ).join("");
  const hex = `${ms.toString(16).padStart(12, "0")}7${random.slice(0, 3)}8${random.slice(3, 18)}`;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/**
 * Session `i` of `n`, created in index order (0 the oldest), relative to the
 * reference time `now`. Old sessions are mostly closed and sealed, some never
 * closed (expired); of those still within their lifetime, about half are open.
 */
function seededSession(i: number, n: number, now: number): SessionRecord {
  const u = draws(`session:${i}`);
  const recentFrom = Math.floor(n * (1 - RECENT_SHARE));
  // Monotonic in i: each session sits in its own slot, jittered within it.
  const createdAt =
    i < recentFrom
      ? Math.floor(now - SPAN_MS + ((i + u(0)) * (SPAN_MS - RECENT_MS)) / recentFrom)
      : Math.floor(now - RECENT_MS + ((i - recentFrom + u(0)) * RECENT_MS) / (n - recentFrom));
  const ttlMs = u(1) < 0.8 ? 900_000 : 3_600_000;
  const expiresAt = createdAt + ttlMs;
  const live = expiresAt > now;
  const closed = live ? u(2) < 0.45 : u(2) < 0.9;
  const closedAt = closed ? createdAt + Math.floor(u(3) * (Math.min(expiresAt, now) - createdAt)) + 1 : null;
  const subject = weighted(SUBJECTS, u(4));
  return {
    id: uuidv7At(createdAt, u),
    connection: weighted(CONNECTIONS, u(5)),
    subject,
    labels: { team: `team-${Math.floor(u(6) * 12)}`, ticket: `GH-${Math.floor(u(7) * 90_000) + 10_000}` },
    createdAt,
    expiresAt,
    closedAt,
    seal:
      closedAt === null
        ? null
        : {
            count: 10 + Math.floor(u(8) * 2000),
            lastHash: createHash("sha256").update(`last:${i}`).digest("hex"),
            sealedAt: closedAt,
            // The shape and size of a compact EdDSA JWS; stores keep it as text.
            jws: `eyJhbGciOiJFZERTQSIsImtpZCI6ImdoLTEifQ.${Buffer.from(JSON.stringify({ sid: `s${i}`, count: 1, lastHash: "0".repeat(64), sealedAt: closedAt })).toString("base64url")}.${"A".repeat(86)}`,
          },
  };
}

function statusAt(session: SessionRecord, now: number): SessionStatus {
  if (session.closedAt !== null) return "closed";
  return session.expiresAt <= now ? "expired" : "open";
}

/** How many seeded sessions each filter value matches, to check first pages against. */
interface Tally {
  connection: Map<string, number>;
  subject: Map<string, number>;
  status: Map<SessionStatus, number>;
}

async function seed(
  store: Store,
  s: Settings,
  now: number,
  label: string,
): Promise<{ ms: number; tally: Tally }> {
  const tally: Tally = { connection: new Map(), subject: new Map(), status: new Map() };
  const bump = <K>(map: Map<K, number>, key: K) => map.set(key, (map.get(key) ?? 0) + 1);
  let next = 0;
  let done = 0;
  const started = performance.now();
  const step = Math.max(1, Math.floor(s.sessions / 10));
  await Promise.all(
    Array.from({ length: s.seedConcurrency }, async () => {
      while (next < s.sessions) {
        const session = seededSession(next++, s.sessions, now);
        await store.insertSession(session);
        bump(tally.connection, session.connection);
        bump(tally.subject, session.subject.id);
        bump(tally.status, statusAt(session, now));
        done += 1;
        if (done % step === 0) {
          progress(
            `${label}: ${done} of ${s.sessions} sessions seeded, ${seconds(performance.now() - started)}`,
          );
        }
      }
    }),
  );
  return { ms: performance.now() - started, tally };
}

// ---------------------------------------------------------------- listings

type ListFilter = Pick<SessionFilter, "connection" | "status" | "subjectId">;

/** Where a walk starts: a filter, optionally a cursor, and what its first page must hold. */
interface WalkStart {
  filter: ListFilter;
  cursor?: string;
  /** Items the first page must have. */
  expectItems: number;
  /** The id the first page must start with, when known. */
  expectFirst?: string;
}

interface Listing {
  name: string;
  /** Pages followed by cursor from each start. */
  pages: number;
  start: (k: number) => WalkStart;
}

function listings(s: Settings, now: number, tally: Tally): Listing[] {
  const { sessions: n, limit } = s;
  const pick = (scenario: string, k: number) =>
    seededSession(Math.floor(draws(`pick:${scenario}:${k}`)(0) * n), n, now);
  const first = (filter: ListFilter, matching: number): WalkStart => ({
    filter,
    expectItems: Math.min(limit, matching),
  });
  const statusListing = (status: SessionStatus): Listing => ({
    name: `${status} sessions`,
    pages: s.walk,
    start: () => first({ status }, tally.status.get(status) ?? 0),
  });
  return [
    { name: "first page, unfiltered", pages: 1, start: () => first({}, n) },
    {
      name: "deep pages by cursor",
      pages: s.walk,
      start: (k) => {
        // From a uniformly random depth: the cursor of seeded session i is what the page
        // ending with it returns, so the next page starts with session i - 1.
        const i = 1 + Math.floor(draws(`pick:deep:${k}`)(0) * (n - 1));
        const at = seededSession(i, n, now);
        return {
          filter: {},
          cursor: encodeKeysetCursor({ time: at.createdAt, id: at.id }),
          expectItems: Math.min(limit, i),
          expectFirst: seededSession(i - 1, n, now).id,
        };
      },
    },
    {
      name: "by connection",
      pages: s.walk,
      start: (k) => {
        const connection = pick("connection", k).connection;
        return first({ connection }, tally.connection.get(connection) ?? 0);
      },
    },
    statusListing("open"),
    statusListing("closed"),
    statusListing("expired"),
    {
      name: "by subject",
      pages: s.walk,
      start: (k) => {
        const subjectId = pick("subject", k).subject.id;
        return first({ subjectId }, tally.subject.get(subjectId) ?? 0);
      },
    },
  ];
}

const before = (a: SessionRecord, b: SessionRecord) =>
  a.createdAt > b.createdAt || (a.createdAt === b.createdAt && a.id > b.id);

/**
 * Walks `listing` from successive starts until `wanted` pages are timed or
 * `budgetMs` has passed (but always times one); resolves with the latencies in ms.
 */
async function timeListing(
  store: Store,
  listing: Listing,
  s: Settings,
  now: number,
  wanted: number,
  budgetMs: number,
  startAt: number,
): Promise<number[]> {
  const samples: number[] = [];
  const started = performance.now();
  for (let k = startAt; ; k++) {
    const start = listing.start(k);
    let cursor = start.cursor;
    for (let page = 0; page < listing.pages; page++) {
      const t = performance.now();
      const result = await store.listSessions({ ...start.filter, now, limit: s.limit, cursor });
      samples.push(performance.now() - t);
      const { items } = result;
      const problem =
        page === 0 && items.length !== start.expectItems
          ? `${items.length} items instead of ${start.expectItems}`
          : page === 0 && start.expectFirst !== undefined && items[0]?.id !== start.expectFirst
            ? `first item ${items[0]?.id} instead of ${start.expectFirst}`
            : items.some((item, i) => i > 0 && !before(items[i - 1] as SessionRecord, item))
              ? "items out of order"
              : undefined;
      if (problem !== undefined) {
        throw new BenchFailure(`listing ${listing.name} ${JSON.stringify(start.filter)}: ${problem}`);
      }
      if (samples.length >= wanted || performance.now() - started > budgetMs) return samples;
      if (result.nextCursor === null) break;
      cursor = result.nextCursor;
    }
  }
}

/**
 * How the MongoDB server plans each listing's first page (`explain`, query
 * planner only), one line per distinct plan: MongoDB names the index scan,
 * FerretDB says what it pushed down to its backend.
 */
async function explainListings(
  uri: string,
  database: string,
  all: Listing[],
  now: number,
): Promise<string[]> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  try {
    const sessions = client.db(database).collection<SessionDocument>("sessions");
    const plans = new Map<string, string[]>();
    for (const listing of all) {
      const start = listing.start(0);
      // The longest lifetime seeded: the bound the store itself would read from its meta collection.
      const query = sessionListQuery({ ...start.filter, now }, null, 3_600_000);
      const explained: unknown = await sessions
        .find(query.filter, { sort: query.sort, limit: 51, hint: query.hint })
        .explain("queryPlanner");
      const plan = planSummary(explained);
      plans.set(plan, [...(plans.get(plan) ?? []), listing.name]);
    }
    return [...plans].map(([plan, names]) => `${names.join(", ")}: ${plan}`);
  } finally {
    await client.close();
  }
}

function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

function planSummary(explained: unknown): string {
  const planner = field(explained, "queryPlanner");
  const stages: string[] = [];
  for (let stage = field(planner, "winningPlan"); stage !== undefined; ) {
    const index = field(stage, "indexName");
    stages.push(`${String(field(stage, "stage"))}${index === undefined ? "" : ` ${String(index)}`}`);
    const inputs = field(stage, "inputStages");
    stage = field(stage, "inputStage") ?? (Array.isArray(inputs) ? inputs[0] : undefined);
  }
  const sqlitePlan = field(planner, "Plan");
  if (stages.length === 0 && Array.isArray(sqlitePlan)) {
    stages.push(...sqlitePlan.map((line) => `SQLite ${String(line).replace(/^.*detail=/, "")}`));
  }
  const pushdowns = ["filterPushdown", "sortPushdown", "limitPushdown"]
    .filter((key) => field(explained, key) !== undefined)
    .map((key) => `${key.replace("Pushdown", "")} pushdown ${field(explained, key) === true ? "yes" : "no"}`);
  return [stages.join(" ← ") || "no plan reported", ...pushdowns].join(", ");
}

// ---------------------------------------------------------------- ingest

interface EventShape {
  kind: EventKind;
  attrs: Record<string, unknown>;
  body: Uint8Array | null;
  /** Body bytes plus the attrs as JSON: what the store is given to keep. */
  bytes: number;
}

const shape = (kind: EventKind, attrs: Record<string, unknown>, body: Uint8Array | null): EventShape => ({
  kind,
  attrs,
  body,
  bytes: JSON.stringify(attrs).length + (body?.byteLength ?? 0),
});

/**
 * Exchanges as the agent records a streamed Messages API call: request head
 * and body (2–20 KB), response head, 20–60 SSE events of 100–300 bytes, end.
 */
function exchangeShapes(count: number): EventShape[][] {
  const prose = "Refactor the session listing so deep pages stay cheap; keep the cursor opaque. ";
  return Array.from({ length: count }, (_, x) => {
    const u = draws(`exchange:${x}`);
    const bodyBytes = 2048 + Math.floor(u(0) * 18 * 1024);
    const request = Buffer.from(
      JSON.stringify({
        model: "claude-sonnet-4-6",
        max_tokens: 4096,
        stream: true,
        messages: [
          { role: "user", content: prose.repeat(Math.ceil(bodyBytes / prose.length)).slice(0, bodyBytes) },
        ],
      }),
    );
    const headers = [
      ["content-type", "application/json"],
      ["anthropic-version", "2023-06-01"],
      ["user-agent", "claude-cli/2.1.330 (external, cli)"],
      ["x-request-id", randomUUID()],
    ];
    const deltas = 20 + Math.floor(u(1) * 41);
    const events: EventShape[] = [
      shape(
        "request.head",
        { connection: "claude", kind: "anthropic", method: "POST", path: "/v1/messages", headers },
        null,
      ),
      shape("request.body", {}, request),
      shape("response.head", { status: 200, headers: [["content-type", "text/event-stream"]] }, null),
    ];
    for (let d = 0; d < deltas; d++) {
      // The event's data is 80 bytes of JSON around the text: 100–300 bytes in all.
      const text = prose.repeat(3).slice(0, 20 + Math.floor(draws(`delta:${x}:${d}`)(0) * 200));
      events.push(
        shape(
          "response.sse",
          {
            event: "content_block_delta",
            data: JSON.stringify({
              type: "content_block_delta",
              index: 0,
              delta: { type: "text_delta", text },
            }),
          },
          null,
        ),
      );
    }
    events.push(
      shape(
        "exchange.end",
        {
          outcome: "completed",
          status: 200,
          errorCode: "",
          errorMessage: "",
          requestBytes: request.byteLength,
          responseBytes: deltas * 180,
        },
        null,
      ),
    );
    return events;
  });
}

interface IngestResult {
  events: number;
  bytes: number;
  ms: number;
  /** Latency of each timed appendEvents call, in ms. */
  calls: number[];
  /** Events stored in each whole second of the timed phase, by the time their call resolved. */
  perSecond: number[];
}

/**
 * `appenders` writers, each appending batches of `batch` events to its own
 * open session, back to back: for `warmupMs` untimed, then for `ms`. Every
 * event must be stored exactly once.
 */
async function ingest(store: Store, s: Settings, now: number): Promise<IngestResult> {
  const shapes = exchangeShapes(64);
  const sessionIds: string[] = [];
  for (let a = 0; a < s.appenders; a++) {
    const createdAt = now + a;
    const id = uuidv7At(createdAt, draws(`appender:${a}`));
    const subject = SUBJECTS[a % SUBJECTS.length]?.[0] ?? { kind: "api-key", id: "key_0000", claims: {} };
    await store.insertSession({
      id,
      connection: "claude",
      subject,
      labels: {},
      createdAt,
      expiresAt: createdAt + 3_600_000,
      closedAt: null,
      seal: null,
    });
    sessionIds.push(id);
  }
  const timed: IngestResult = {
    events: 0,
    bytes: 0,
    ms: 0,
    calls: [],
    perSecond: Array.from({ length: Math.floor(s.ingestMs / 1000) }, () => 0),
  };
  let timing = false;
  let started = 0;
  const appender = async (sessionId: string, a: number, until: () => boolean) => {
    let exchange = a;
    let exchangeId = randomUUID();
    let index = 0;
    while (!until()) {
      const batch: NewEvent[] = [];
      let bytes = 0;
      while (batch.length < s.batch) {
        const events = shapes[exchange % shapes.length] ?? [];
        const event = events[index];
        if (event === undefined) {
          exchange += 1;
          exchangeId = randomUUID();
          index = 0;
          continue;
        }
        batch.push({
          id: `${exchangeId}:${index}`,
          sessionId,
          exchangeId,
          at: Date.now() * 1000,
          kind: event.kind,
          attrs: event.attrs,
          body: event.body,
        });
        bytes += event.bytes;
        index += 1;
      }
      const counted = timing;
      const t = performance.now();
      const result = await store.appendEvents(batch);
      if (result.appended !== batch.length) {
        throw new BenchFailure(
          `appendEvents stored ${result.appended} of ${batch.length} new events (${result.duplicates} taken for duplicates)`,
        );
      }
      if (counted && timing) {
        const done = performance.now();
        timed.calls.push(done - t);
        timed.events += batch.length;
        timed.bytes += bytes;
        const second = Math.floor((done - started) / 1000);
        if (second < timed.perSecond.length)
          timed.perSecond[second] = (timed.perSecond[second] ?? 0) + batch.length;
      }
    }
  };
  const run = (ms: number) => {
    const deadline = performance.now() + ms;
    return Promise.all(sessionIds.map((id, a) => appender(id, a, () => performance.now() >= deadline)));
  };
  await run(s.ingestWarmupMs);
  started = performance.now();
  timing = true;
  await run(s.ingestMs);
  // Calls still in flight at the deadline finish and count, so the time runs until the last one did.
  timed.ms = performance.now() - started;
  return timed;
}

// ---------------------------------------------------------------- per store

type StoreKind = "sqlite" | "mongo";

interface StoreResult {
  tally: Tally;
  /** Share of the machine's CPU time that processes other than this one and its children used meanwhile. */
  otherLoad: number | null;
  /** What was measured, for the column heading. */
  title: string;
  seedMs: number;
  lists: Map<string, number[]>;
  ingest: IngestResult;
  plans: string[];
}

interface OpenedStore {
  store: Store;
  title: string;
  /** Set for MongoDB: where to ask the server for its query plans. */
  mongo?: { uri: string; database: string };
  dispose: () => Promise<void>;
}

async function openStore(kind: StoreKind): Promise<OpenedStore> {
  if (kind === "sqlite") {
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-store-bench-"));
    // The watchdog ends the process without unwinding; the store's files must not stay behind.
    const onExit = () => rmSync(dir, { recursive: true, force: true });
    process.once("exit", onExit);
    const remove = async () => {
      process.off("exit", onExit);
      await rm(dir, { recursive: true, force: true });
    };
    try {
      const store = await SqliteStore.open({ path: join(dir, "gatehouse.db") });
      return {
        store,
        title: "SQLite (embedded)",
        dispose: async () => {
          await store.close();
          await remove();
        },
      };
    } catch (error) {
      await remove();
      throw error;
    }
  }
  const { startMongoServer } = await testSupport<typeof MongoServerModule>("mongo-server");
  const server = await startMongoServer();
  try {
    const store = await MongoStore.open({ uri: server.uri, database: server.database });
    return {
      store,
      title: `MongoDB (${server.describe.startsWith("ferretdb") ? "FerretDB" : "MONGODB_URI"})`,
      mongo: { uri: server.uri, database: server.database },
      dispose: async () => {
        await store.close();
        await server.stop();
      },
    };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

async function measureStore(kind: StoreKind, s: Settings): Promise<StoreResult> {
  const opened = await openStore(kind);
  try {
    const { store } = opened;
    const startedBusy = await busy();
    const now = Date.now();
    progress(`${kind}: seeding ${s.sessions} sessions, ${s.seedConcurrency} inserts in flight`);
    const seeded = await seed(store, s, now, kind);
    progress(`${kind}: seeded in ${seconds(seeded.ms)}`);
    const all = listings(s, now, seeded.tally);
    const lists = new Map<string, number[]>();
    for (const listing of all) {
      progress(`${kind}: listing ${listing.name}`);
      await timeListing(store, listing, s, now, s.warmup, s.listMs / 4, 1_000_000);
      lists.set(listing.name, await timeListing(store, listing, s, now, s.samples, s.listMs, 0));
    }
    const plans =
      opened.mongo === undefined
        ? []
        : await explainListings(opened.mongo.uri, opened.mongo.database, all, now);
    progress(`${kind}: ingest, ${s.appenders} appenders × ${s.batch}-event batches, ${seconds(s.ingestMs)}`);
    const ingested = await ingest(store, s, now);
    return {
      title: opened.title,
      seedMs: seeded.ms,
      tally: seeded.tally,
      lists,
      ingest: ingested,
      plans,
      otherLoad: otherLoad(startedBusy, await busy()),
    };
  } finally {
    await opened.dispose();
  }
}

interface Busy {
  machine: number | null;
  own: number | null;
  at: number;
}

/**
 * CPU time used so far by the machine and by this process with its children
 * (FerretDB), whose work is the benchmark's own; from /proc (Linux).
 */
async function busy(): Promise<Busy> {
  const pids = [process.pid];
  for (const entry of await readdir("/proc").catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, "utf8").catch(() => "");
    // The parent pid is the second field after the command name, which is in parentheses.
    if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === process.pid) pids.push(Number(entry));
  }
  const [machine, ...each] = await Promise.all([machineBusyMillis(), ...pids.map(cpuMillis)]);
  const own = each.reduce<number | null>(
    (sum, used) => (sum === null || used === null ? null : sum + used),
    0,
  );
  return { machine: machine ?? null, own, at: performance.now() };
}

function otherLoad(start: Busy, end: Busy): number | null {
  if (start.machine === null || end.machine === null || start.own === null || end.own === null) return null;
  return (end.machine - start.machine - (end.own - start.own)) / ((end.at - start.at) * cpus().length);
}

// ---------------------------------------------------------------- report

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const latency = (value: number) =>
  value < 10 ? value.toFixed(2) : value < 100 ? value.toFixed(1) : value.toFixed(0);
const thousands = (value: number) => Math.round(value).toLocaleString("en-US");

/** p95 target of a listing page, in ms. */
const LIST_P95_MS = 50;
/** Sustained ingest target of the embedded store, in events per second. */
const INGEST_EVENTS_PER_S = 10_000;

function report(results: Map<StoreKind, StoreResult>, s: Settings): string[] {
  const measured = [...results.values()];
  const cells = (value: (r: StoreResult) => string) => measured.map(value);
  const verdicts = (met: (r: StoreResult) => boolean | null) =>
    measured
      .map((r) => {
        const ok = met(r);
        return ok === null ? "–" : ok ? "met" : "MISSED";
      })
      .join(" · ");
  const listNames = [...(measured[0]?.lists.keys() ?? [])];
  const rows: string[][] = [
    [
      "scenario",
      "metric",
      ...cells((r) => r.title),
      "target",
      `verdict (${cells((r) => r.title.split(" ")[0] ?? "").join(" · ")})`,
    ],
    [
      `seed ${thousands(s.sessions)} sessions`,
      "time (sessions/s)",
      ...cells((r) => `${seconds(r.seedMs)} (${thousands(s.sessions / (r.seedMs / 1000))}/s)`),
      "",
      "",
    ],
  ];
  for (const name of listNames) {
    const samples = (r: StoreResult) => r.lists.get(name) ?? [];
    rows.push([
      `list ${s.limit}: ${name}`,
      "p50 / p95 / p99 ms (n)",
      ...cells((r) => {
        const x = samples(r);
        return `${[50, 95, 99].map((p) => latency(percentile(x, p))).join(" / ")} (${x.length})`;
      }),
      `p95 < ${LIST_P95_MS} ms`,
      verdicts((r) => percentile(samples(r), 95) < LIST_P95_MS),
    ]);
  }
  const rate = (r: StoreResult) => r.ingest.events / (r.ingest.ms / 1000);
  rows.push(
    [
      `ingest: ${s.appenders} sessions × ${s.batch}-event batches, ${seconds(s.ingestMs)}`,
      "events/s",
      ...cells((r) => thousands(rate(r))),
      `≥ ${thousands(INGEST_EVENTS_PER_S)}/s (SQLite)`,
      verdicts((r) => (r === results.get("sqlite") ? rate(r) >= INGEST_EVENTS_PER_S : null)),
    ],
    [
      "",
      "slowest whole second, events",
      ...cells((r) => thousands(Math.min(...r.ingest.perSecond))),
      `≥ ${thousands(INGEST_EVENTS_PER_S)} (SQLite)`,
      verdicts((r) =>
        r === results.get("sqlite") ? Math.min(...r.ingest.perSecond) >= INGEST_EVENTS_PER_S : null,
      ),
    ],
    ["", "MB/s", ...cells((r) => (r.ingest.bytes / 1e6 / (r.ingest.ms / 1000)).toFixed(1)), "", ""],
    [
      "",
      "append call p50 / p95 ms",
      ...cells((r) => [50, 95].map((p) => latency(percentile(r.ingest.calls, p))).join(" / ")),
      "",
      "",
    ],
  );
  const tally = measured[0]?.tally;
  const lines = [table(rows), ""];
  if (tally !== undefined) {
    const share = (map: Map<string, number>) =>
      [...map]
        .sort((a, b) => b[1] - a[1])
        .map(([key, n]) => `${key} ${thousands(n)}`)
        .join(", ");
    const busiest = Math.max(...tally.subject.values());
    lines.push(
      `seeded sessions: ${share(tally.status)}; by connection: ${share(tally.connection)}; ` +
        `${tally.subject.size} subjects, the busiest with ${thousands(busiest)}.`,
    );
  }
  for (const r of measured) {
    lines.push(
      r.otherLoad === null
        ? `${r.title}: other processes' CPU use unknown (no /proc)`
        : `${r.title}: other processes used ${(Math.max(0, r.otherLoad) * 100).toFixed(0)}% of the machine's CPU time while it was measured` +
            (r.otherLoad > 0.05
              ? " — WARNING: its figures are disturbed; run again on a quiet machine."
              : "."),
    );
  }
  const mongo = results.get("mongo");
  if (mongo !== undefined && mongo.plans.length > 0) {
    lines.push(
      "",
      "MongoDB query plans of the listings (explain, first page):",
      ...mongo.plans.map((p) => `  ${p}`),
    );
  }
  lines.push(
    "",
    `n: timed pages per listing (fewer than ${s.samples} where --list-seconds ran out); ingest MB/s counts ` +
      "bodies plus attrs as JSON; events per exchange 24–64, request bodies 2–20 KB, SSE events 100–300 bytes.",
  );
  return lines;
}

// ---------------------------------------------------------------- run

async function main(): Promise<number> {
  const settings = readFlags("npm run bench:store", FLAGS);
  const s: Settings = {
    sessions: positiveInt(settings, "sessions"),
    seedConcurrency: positiveInt(settings, "seed-concurrency"),
    limit: positiveInt(settings, "limit"),
    samples: positiveInt(settings, "samples"),
    warmup: positiveInt(settings, "warmup"),
    walk: positiveInt(settings, "walk"),
    listMs: positiveInt(settings, "list-seconds") * 1000,
    appenders: positiveInt(settings, "appenders"),
    batch: positiveInt(settings, "batch"),
    ingestMs: positiveInt(settings, "ingest-seconds") * 1000,
    ingestWarmupMs: positiveInt(settings, "ingest-warmup") * 1000,
  };
  const kinds = settings.stores.split(",").map((k) => k.trim());
  for (const kind of kinds) {
    if (kind !== "sqlite" && kind !== "mongo") {
      throw new Error(`--stores takes sqlite and/or mongo; got ${JSON.stringify(kind)}`);
    }
  }
  giveUpAfter(positiveInt(settings, "timeout"));

  const say = (text = "") => process.stdout.write(`${text}\n`);
  for (const line of heading("Gatehouse session store benchmark", settings)) say(line);
  say();
  const results = new Map<StoreKind, StoreResult>();
  for (const kind of kinds as StoreKind[]) results.set(kind, await measureStore(kind, s));
  for (const line of report(results, s)) say(line);
  return 0;
}

run(main);
