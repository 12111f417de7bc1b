/**
 * The compliance suite every {@link Store} backend must pass. It uses nothing
 * but the Store interface, so the SQLite and MongoDB stores are held to the
 * same behaviour; a backend's test file calls {@link storeSuite} with a way to
 * open a fresh, empty store.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import { isDeepStrictEqual } from "node:util";
import { EMPTY_TAIL, verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import type {
  AgentRecord,
  ApiKeyRecord,
  ApprovalDecisionUpdate,
  ApprovalRecord,
  ApprovalStatus,
  AuditRecord,
  EventKind,
  NewEvent,
  Page,
  SessionFilter,
  SessionRecord,
  SessionStatus,
  Store,
  StoredEvent,
  StoredPolicyRecord,
} from "@gatehouse/control-plane/store/types.js";
import { isGatehouseError } from "@gatehouse/proto/errors";

/** What a backend hands the suite for each test. */
export interface StoreFixture {
  /** A fresh store holding no data. */
  store: Store;
  /**
   * Opens another store object over the same data. The suite calls it after
   * closing the previous store (a restart), and also while others are open
   * (several control-plane replicas); it closes every store it opened.
   */
  reopen: () => Promise<Store>;
  /** Removes the data; called once, after every store the suite opened is closed. */
  cleanup: () => Promise<void>;
}

interface StoreContext {
  store: Store;
  /** Closes the current store and opens the same data again. */
  closeAndReopen: () => Promise<Store>;
  /** Opens one more store over the same data, alongside the current one; closed when the test ends. */
  openAnother: () => Promise<Store>;
}

const T0 = 1_800_000_000_000;
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const MB = 1024 * 1024;

/** A UUIDv7-shaped id whose leading bits are `ms`, as the control plane makes them. */
function sessionId(ms: number): string {
  const hex = ms.toString(16).padStart(12, "0") + randomBytes(10).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-7${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** A session as the control plane stores one, created at `overrides.createdAt` (default T0). */
export function makeSession(overrides: Partial<SessionRecord> = {}): SessionRecord {
  const createdAt = overrides.createdAt ?? T0;
  return {
    id: sessionId(createdAt),
    connection: "claude",
    subject: {
      kind: "oidc",
      id: "https://token.actions.githubusercontent.com#repo:contoso/app:ref:refs/heads/main",
      claims: { repository: "contoso/app", run_id: "4242", actor: "octocat" },
    },
    labels: { team: "platform", "ci.job": "build" },
    createdAt,
    expiresAt: createdAt + HOUR,
    closedAt: null,
    seal: null,
    ...overrides,
  };
}

function makeEvent(
  sessionId: string,
  exchangeId: string,
  index: number,
  body: Uint8Array | null = null,
): NewEvent {
  const kind: EventKind = body === null ? "request.head" : "response.body";
  return {
    id: `${exchangeId}:${index}`,
    sessionId,
    exchangeId,
    at: 1_800_000_000_000_000 + index,
    kind,
    attrs: { index, method: "POST", path: "/v1/messages", headers: { "content-type": ["application/json"] } },
    body,
  };
}

function exchange(sessionId: string, exchangeId: string, count: number): NewEvent[] {
  return Array.from({ length: count }, (_, i) =>
    makeEvent(sessionId, exchangeId, i, i % 2 === 0 ? null : Buffer.from(`chunk ${exchangeId} ${i} ✓`)),
  );
}

/** Every stored event of a session, reading in pages until the store has no more. */
async function readAll(store: Store, sessionId: string): Promise<StoredEvent[]> {
  const all: StoredEvent[] = [];
  for (;;) {
    const page = await store.readEvents(sessionId, all.at(-1)?.seq ?? 0, 100);
    if (page.length === 0) return all;
    all.push(...page);
  }
}

function bytes(body: Uint8Array | null): string | null {
  return body === null ? null : Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString("hex");
}

/** Checks a stored event against what was sent, body compared byte for byte. */
function assertStoredAs(stored: StoredEvent | undefined, sent: NewEvent | undefined): void {
  assert.ok(stored, "an event is missing");
  assert.ok(sent);
  const { body: storedBody, seq: _seq, hash: _hash, ...storedRest } = stored;
  const { body: sentBody, ...sentRest } = sent;
  assert.deepEqual(storedRest, sentRest);
  assert.equal(bytes(storedBody), bytes(sentBody), `body of ${sent.id} differs`);
}

function assertChainValid(events: StoredEvent[]): void {
  const { break: broken, tail } = verifyChain(events);
  assert.equal(broken, null, `chain breaks at ${JSON.stringify(broken)}`);
  assert.equal(tail.count, events.length);
}

/**
 * Ids of every item of a listing, following nextCursor to the end; `list`
 * fetches the page at a cursor (undefined: the first page) of `limit` items.
 */
async function listEveryPage(
  limit: number,
  list: (cursor: string | undefined) => Promise<Page<{ id: string }>>,
): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | undefined;
  for (;;) {
    const page = await list(cursor);
    assert.ok(page.items.length <= limit, "a page holds more than limit items");
    // "null on the last page": a cursor is offered only when more items follow.
    if (cursor !== undefined)
      assert.ok(page.items.length > 0, "the previous page offered a cursor to nothing");
    ids.push(...page.items.map((item) => item.id));
    if (page.nextCursor === null) return ids;
    cursor = page.nextCursor;
  }
}

/** Ids of every session a filter selects, following nextCursor to the end. */
function listAll(store: Store, filter: Omit<SessionFilter, "cursor">): Promise<string[]> {
  return listEveryPage(filter.limit, (cursor) =>
    store.listSessions(cursor === undefined ? filter : { ...filter, cursor }),
  );
}

/**
 * A newest-first listing paged by keyset with no filter but the page, as the
 * audit log and API keys have: the tests of its order and paging are shared.
 */
interface KeysetListing<T extends { id: string }> {
  /** What is listed, in the plural, for test names. */
  plural: string;
  /** The `n`th item of a fixture, sorting at `time`; `n` varies the fields that may vary. */
  make: (time: number, n: number) => T;
  /** The time the listing sorts by. */
  time: (item: T) => number;
  add: (store: Store, item: T) => Promise<void>;
  list: (store: Store, filter: { limit: number; cursor?: string }) => Promise<Page<T>>;
}

/** An audit entry at `at`, with details whose keys a MongoDB field name could not hold. */
export function makeAudit(at: number, overrides: Partial<AuditRecord> = {}): AuditRecord {
  return {
    id: sessionId(at),
    at,
    actor: "https://token.actions.githubusercontent.com#repo:contoso/app:ref:refs/heads/main",
    action: "session.close",
    target: sessionId(at),
    details: { reason: "done", "ci.job": "build", $where: "literal key", nested: { list: [1, "två", null] } },
    ...overrides,
  };
}

/** An API key made at `createdAt`, with a fresh key hash. */
export function makeApiKey(createdAt: number, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return {
    id: sessionId(createdAt),
    name: "release pipeline",
    role: "approver",
    kind: "api-key",
    keyHash: createHash("sha256").update(randomBytes(32)).digest("hex"),
    createdBy: "https://login.example.com#admin-7",
    createdAt,
    expiresAt: null,
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}

/**
 * A pending approval asked for at `createdAt`, due ten minutes later, holding
 * text a naive store could mangle (non-ASCII, quotes, a `$` and dots).
 */
export function makeApproval(createdAt: number, overrides: Partial<ApprovalRecord> = {}): ApprovalRecord {
  return {
    id: sessionId(createdAt),
    sessionId: sessionId(createdAt),
    exchangeId: "01HZX3K8Q9",
    connection: "claude",
    agentAccountId: "agent-1",
    requester: {
      kind: "oidc",
      id: "https://token.actions.githubusercontent.com#repo:contoso/app:ref:refs/heads/main",
    },
    policy: "ci-default",
    rule: "no-private-keys",
    stage: "request",
    message: "Private keys must not be sent to the model.",
    preview: 'deploy with key "-----BEGIN [MASKED] PRIVATE KEY-----" to $HOME/.ssh ✓ två',
    matched: ["text", "model"],
    status: "pending",
    createdAt,
    expiresAt: createdAt + 10 * MINUTE,
    decidedAt: null,
    decidedBy: null,
    reason: null,
    ...overrides,
  };
}

/** A policy set over REST, with rule patterns and keys a MongoDB field name could not hold. */
export function makePolicy(name: string, overrides: Partial<StoredPolicyRecord> = {}): StoredPolicyRecord {
  return {
    name,
    body: {
      connections: ["claude"],
      rules: [
        {
          name: "no-private-keys",
          when: "request",
          match: { text: "BEGIN [A-Z ]*PRIVATE KEY$", maxTokensAbove: 4096 },
          action: "require_approval",
          message: "Private keys need a second pair of eyes.",
        },
      ],
      "x.note": { $comment: "kept as sent", list: [1, "två", null, true] },
    },
    updatedAt: T0,
    updatedBy: "https://login.example.com#admin-7",
    ...overrides,
  };
}

/** Ids newest first by `time`, ties broken by id, as keyset listings order them. */
function newestFirstBy<T extends { id: string }>(items: T[], time: (item: T) => number): string[] {
  return [...items]
    .sort((a, b) => time(b) - time(a) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
    .map((item) => item.id);
}

/** Newest first, ties broken by id, as listSessions orders them. */
function newestFirst(sessions: SessionRecord[]): string[] {
  return newestFirstBy(sessions, (s) => s.createdAt);
}

/** A refusal that blames the caller. */
function isInvalidRequest(error: unknown): boolean {
  return isGatehouseError(error) && error.code === "GATE_INVALID_REQUEST";
}

function statusAt(session: SessionRecord, now: number): SessionStatus {
  if (session.closedAt !== null) return "closed";
  return session.expiresAt <= now ? "expired" : "open";
}

/**
 * Registers the compliance tests for one Store backend under `name`. `open`
 * gives each test a fresh, empty store, so tests share no data.
 */
export function storeSuite(name: string, open: () => Promise<StoreFixture>): void {
  async function withStore(work: (context: StoreContext) => Promise<void>): Promise<void> {
    const fixture = await open();
    let current: Store | null = fixture.store;
    const others: Store[] = [];
    const context: StoreContext = {
      store: fixture.store,
      closeAndReopen: async () => {
        await current?.close();
        current = null;
        current = await fixture.reopen();
        return current;
      },
      openAnother: async () => {
        const another = await fixture.reopen();
        others.push(another);
        return another;
      },
    };
    try {
      await work(context);
    } finally {
      for (const other of others) await other.close();
      await current?.close();
      await fixture.cleanup();
    }
  }

  /** The order and paging tests of a keyset listing, registered in the current describe block. */
  function keysetListingTests<T extends { id: string }>(listing: KeysetListing<T>): void {
    const { plural, make, time, add, list } = listing;
    const listAllOf = (store: Store, limit: number) =>
      listEveryPage(limit, (cursor) => list(store, cursor === undefined ? { limit } : { limit, cursor }));

    test(`${plural} list newest first, ties broken by id, and pages visit each one once`, () =>
      withStore(async ({ store }) => {
        // Three share each time, so the id must break ties for the pages to
        // neither repeat nor skip one.
        const items = Array.from({ length: 125 }, (_, i) => make(T0 + Math.floor(i / 3) * 1000, i));
        for (const item of [...items].sort(() => Math.random() - 0.5)) await add(store, item);
        const expected = newestFirstBy(items, time);
        const first = await list(store, { limit: 10 });
        assert.deepEqual(
          first.items,
          expected.slice(0, 10).map((id) => items.find((item) => item.id === id)),
          `${plural} read back exactly`,
        );
        // 25 fills the last page exactly: that page must still say it is the last.
        for (const limit of [10, 25, 1000]) {
          assert.deepEqual(await listAllOf(store, limit), expected, `pages of ${limit}`);
        }
      }));

    test(`page boundaries hold while newer ${plural} are added`, () =>
      withStore(async ({ store }) => {
        // A cursor holds the last key returned, not an offset: what is added at
        // the top while a caller pages neither shifts nor repeats later pages.
        const items = Array.from({ length: 20 }, (_, i) => make(T0 + i * 1000, i));
        for (const item of items) await add(store, item);
        let added = 0;
        const ids = await listEveryPage(5, async (cursor) => {
          if (cursor === undefined) return list(store, { limit: 5 });
          added += 1;
          await add(store, make(T0 + HOUR + added * 1000, added));
          return list(store, { limit: 5, cursor });
        });
        assert.equal(added, 3, "the walk took four pages");
        assert.deepEqual(ids, newestFirstBy(items, time));
      }));

    test("a cursor or limit the store did not issue is refused as a caller error", () =>
      withStore(async ({ store }) => {
        await add(store, make(T0, 0));
        for (const cursor of ["not-a-cursor", "", "eyJ4IjoxfQ"]) {
          await assert.rejects(list(store, { limit: 10, cursor }), isInvalidRequest, `cursor ${cursor}`);
        }
        for (const limit of [0, -1, 1.5, Number.NaN]) {
          await assert.rejects(list(store, { limit }), isInvalidRequest, `limit ${limit}`);
        }
        assert.equal((await list(store, { limit: 10 })).items.length, 1);
      }));
  }

  describe(`Store compliance: ${name}`, () => {
    test("ping succeeds on an open store", () =>
      withStore(async ({ store }) => {
        await store.ping();
      }));

    describe("sessions", () => {
      test("a stored session reads back exactly; an unknown id reads as null", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          assert.deepEqual(await store.getSession(session.id), session);
          assert.equal(await store.getSession(sessionId(T0)), null);
        }));

      test("storing a session id twice is refused and the first record stays", () =>
        withStore(async ({ store }) => {
          // A second insert must not replace who opened the session.
          const session = makeSession();
          await store.insertSession(session);
          await assert.rejects(
            store.insertSession({ ...session, subject: { kind: "api-key", id: "intruder", claims: {} } }),
          );
          assert.deepEqual(await store.getSession(session.id), session);
        }));

      test("closing a session sets closedAt once; closing again returns it unchanged", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const closed = await store.closeSession(session.id, T0 + MINUTE);
          assert.deepEqual(closed, { ...session, closedAt: T0 + MINUTE });
          assert.deepEqual(await store.closeSession(session.id, T0 + 2 * MINUTE), closed);
          assert.deepEqual(await store.getSession(session.id), closed);
          assert.equal(await store.closeSession(sessionId(T0), T0), null);
        }));

      test("a seal set on a session is kept with it", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          await store.closeSession(session.id, T0 + MINUTE);
          const seal = {
            count: 12,
            lastHash: "ab".repeat(32),
            sealedAt: T0 + MINUTE,
            jws: "eyJhbGciOiJFZERTQSJ9.e30.c2ln",
          };
          assert.deepEqual(await store.setSeal(session.id, seal), seal);
          assert.deepEqual(await store.getSession(session.id), { ...session, closedAt: T0 + MINUTE, seal });
        }));

      test("a seal only moves forward: one covering fewer events never replaces one covering more", () =>
        withStore(async ({ store }) => {
          // Regression: sealing on close and resealing after late events raced; the seal
          // computed first (over fewer events) could be stored last and shorten the record
          // the seal proves, so events stored after it failed verification.
          const session = makeSession();
          await store.insertSession(session);
          await store.closeSession(session.id, T0 + MINUTE);
          const seal = (count: number, sealedAt: number) => ({
            count,
            lastHash: count.toString(16).padStart(64, "0"),
            sealedAt,
            jws: `seal.${count}.${sealedAt}`,
          });
          const longer = seal(5, T0 + 2 * MINUTE);
          assert.deepEqual(await store.setSeal(session.id, longer), longer);
          const stale = seal(3, T0 + 3 * MINUTE);
          assert.deepEqual(await store.setSeal(session.id, stale), longer, "the seal in effect is returned");
          assert.deepEqual((await store.getSession(session.id))?.seal, longer);
          // Covering as many or more events, a later seal does replace it.
          const again = seal(5, T0 + 4 * MINUTE);
          assert.deepEqual(await store.setSeal(session.id, again), again);
          const further = seal(7, T0 + 5 * MINUTE);
          assert.deepEqual(await store.setSeal(session.id, further), further);
          assert.deepEqual((await store.getSession(session.id))?.seal, further);
          await assert.rejects(
            store.setSeal(sessionId(T0), longer),
            (error: unknown) => isGatehouseError(error) && error.code === "GATE_NOT_FOUND",
          );
        }));

      test("revoked sessions are those closed before expiry that have not yet expired", () =>
        withStore(async ({ store }) => {
          const now = T0 + 30 * MINUTE;
          const revoked = makeSession({ expiresAt: T0 + HOUR, closedAt: T0 + MINUTE });
          const revokedLaterExpiry = makeSession({ expiresAt: T0 + 2 * HOUR, closedAt: T0 + 2 * MINUTE });
          const pastExpiry = makeSession({ expiresAt: T0 + 10 * MINUTE, closedAt: T0 + 5 * MINUTE });
          const closedAfterExpiry = makeSession({ expiresAt: T0 + HOUR, closedAt: T0 + HOUR + MINUTE });
          const open = makeSession({ expiresAt: T0 + HOUR });
          for (const s of [revoked, revokedLaterExpiry, pastExpiry, closedAfterExpiry, open]) {
            await store.insertSession(s);
          }
          // Closing through the store counts the same as a record inserted closed.
          const closedNow = makeSession({ expiresAt: T0 + HOUR });
          await store.insertSession(closedNow);
          await store.closeSession(closedNow.id, T0 + 3 * MINUTE);
          const listed = await store.listRevokedSessions(now);
          assert.deepEqual(
            [...listed].sort((a, b) => (a.id < b.id ? -1 : 1)),
            [revoked, revokedLaterExpiry, { ...closedNow, closedAt: T0 + 3 * MINUTE }]
              .map((s) => ({ id: s.id, expiresAt: s.expiresAt, closedAt: s.closedAt }))
              .sort((a, b) => (a.id < b.id ? -1 : 1)),
          );
          assert.deepEqual(await store.listRevokedSessions(T0 + 3 * HOUR), []);
        }));

      test("revoked sessions closed after a given time are listed in the order they were closed", () =>
        withStore(async ({ store }) => {
          // Each control-plane replica polls for sessions closed since its last look, so an
          // agent linked to any replica learns of a close made at another.
          const closedAt = [T0 + 3 * MINUTE, T0 + MINUTE, T0 + 2 * MINUTE, T0 + 4 * MINUTE];
          const sessions = closedAt.map((at) => makeSession({ expiresAt: T0 + HOUR, closedAt: at }));
          const expired = makeSession({ expiresAt: T0 + 20 * MINUTE, closedAt: T0 + 5 * MINUTE });
          const open = makeSession({ expiresAt: T0 + HOUR });
          for (const s of [...sessions, expired, open]) await store.insertSession(s);
          const later = makeSession({ expiresAt: T0 + HOUR });
          await store.insertSession(later);
          await store.closeSession(later.id, T0 + 6 * MINUTE);
          const now = T0 + 30 * MINUTE;
          const record = (s: SessionRecord, at: number) => ({
            id: s.id,
            expiresAt: s.expiresAt,
            closedAt: at,
          });
          assert.deepEqual(await store.listRevokedSessions(now, T0 + MINUTE), [
            record(sessions[2] as SessionRecord, T0 + 2 * MINUTE),
            record(sessions[0] as SessionRecord, T0 + 3 * MINUTE),
            record(sessions[3] as SessionRecord, T0 + 4 * MINUTE),
            record(later, T0 + 6 * MINUTE),
          ]);
          assert.deepEqual(await store.listRevokedSessions(now, T0 + 6 * MINUTE), []);
          assert.equal((await store.listRevokedSessions(now, 0)).length, 5);
          // A closed session is listed until its token expires (at T0 + 30 min, `expired` was not).
          assert.deepEqual(
            (await store.listRevokedSessions(T0 + 15 * MINUTE, T0 + 4 * MINUTE)).map((s) => s.id),
            [expired.id, later.id],
          );
        }));
    });

    describe("listing sessions", () => {
      test("newest first, ties broken by id, and pages visit every session exactly once", () =>
        withStore(async ({ store }) => {
          // Three sessions share each createdAt, so the id must break ties for
          // the pages to neither repeat nor skip a session.
          const sessions = Array.from({ length: 250 }, (_, i) =>
            makeSession({ createdAt: T0 + Math.floor(i / 3) * 1000 }),
          );
          for (const s of [...sessions].sort(() => Math.random() - 0.5)) await store.insertSession(s);
          const expected = newestFirst(sessions);

          const first = await store.listSessions({ now: T0, limit: 40 });
          assert.deepEqual(
            first.items.map((s) => s.id),
            expected.slice(0, 40),
          );
          assert.deepEqual(
            first.items[0],
            sessions.find((s) => s.id === expected[0]),
          );
          assert.deepEqual(await listAll(store, { now: T0, limit: 40 }), expected);
          // When the sessions fill the last page exactly, that page says it is the last.
          assert.deepEqual(await listAll(store, { now: T0, limit: 50 }), expected);
          assert.deepEqual(await listAll(store, { now: T0, limit: 1000 }), expected);
        }));

      test("a page boundary holds while newer sessions are created", () =>
        withStore(async ({ store }) => {
          const sessions = Array.from({ length: 30 }, (_, i) => makeSession({ createdAt: T0 + i * 1000 }));
          for (const s of sessions) await store.insertSession(s);
          const expected = newestFirst(sessions);
          const first = await store.listSessions({ now: T0, limit: 10 });
          assert.ok(first.nextCursor);
          await store.insertSession(makeSession({ createdAt: T0 + HOUR }));
          const second = await store.listSessions({ now: T0, limit: 10, cursor: first.nextCursor });
          assert.deepEqual(
            second.items.map((s) => s.id),
            expected.slice(10, 20),
          );
        }));

      test("filters by connection and by subject", () =>
        withStore(async ({ store }) => {
          const subjects = ["repo:contoso/app", "repo:contoso/api"];
          const sessions = Array.from({ length: 90 }, (_, i) =>
            makeSession({
              createdAt: T0 + i * 1000,
              connection: ["claude", "azure-repos", "github"][i % 3] ?? "claude",
              subject: { kind: "oidc", id: subjects[i % 2] ?? "", claims: {} },
            }),
          );
          for (const s of sessions) await store.insertSession(s);
          for (const connection of ["claude", "azure-repos", "github", "unknown"]) {
            assert.deepEqual(
              await listAll(store, { now: T0, limit: 7, connection }),
              newestFirst(sessions.filter((s) => s.connection === connection)),
            );
          }
          for (const subjectId of subjects) {
            assert.deepEqual(
              await listAll(store, { now: T0, limit: 7, subjectId }),
              newestFirst(sessions.filter((s) => s.subject.id === subjectId)),
            );
          }
          assert.deepEqual(
            await listAll(store, { now: T0, limit: 4, connection: "github", subjectId: "repo:contoso/api" }),
            newestFirst(
              sessions.filter((s) => s.connection === "github" && s.subject.id === "repo:contoso/api"),
            ),
          );
        }));

      test("filters by status as of the given now: open, expired, closed", () =>
        withStore(async ({ store }) => {
          const now = T0 + 10 * HOUR;
          const sessions: SessionRecord[] = [];
          for (let i = 0; i < 120; i++) {
            const createdAt = T0 + i * 5 * MINUTE;
            const ttl = [HOUR, 4 * HOUR, 15 * MINUTE][i % 3] ?? HOUR;
            const closedAt =
              i % 4 === 0 ? createdAt + 10 * MINUTE : i % 4 === 1 ? createdAt + ttl + MINUTE : null;
            sessions.push(
              makeSession({
                createdAt,
                expiresAt: createdAt + ttl,
                closedAt: closedAt !== null && closedAt <= now ? closedAt : null,
                connection: i % 2 === 0 ? "claude" : "azure-repos",
              }),
            );
          }
          // A session whose expiresAt is exactly now is expired, as a JWT at its exp.
          sessions.push(makeSession({ createdAt: now - HOUR, expiresAt: now }));
          for (const s of sessions) await store.insertSession(s);
          for (const status of ["open", "expired", "closed"] as const) {
            const expected = newestFirst(sessions.filter((s) => statusAt(s, now) === status));
            assert.ok(expected.length > 3, `the fixture has ${status} sessions`);
            assert.deepEqual(await listAll(store, { now, limit: 6, status }), expected, status);
            assert.deepEqual(
              await listAll(store, { now, limit: 5, status, connection: "claude" }),
              newestFirst(sessions.filter((s) => statusAt(s, now) === status && s.connection === "claude")),
              `${status} on claude`,
            );
          }
          // The same records seen an hour earlier: status follows now, not the clock.
          const earlier = now - HOUR;
          assert.deepEqual(
            await listAll(store, { now: earlier, limit: 50, status: "open" }),
            newestFirst(sessions.filter((s) => statusAt(s, earlier) === "open")),
          );
        }));

      test("a session changes status when it is closed", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const now = T0 + MINUTE;
          assert.deepEqual(await listAll(store, { now, limit: 10, status: "open" }), [session.id]);
          await store.closeSession(session.id, now);
          assert.deepEqual(await listAll(store, { now, limit: 10, status: "open" }), []);
          assert.deepEqual(await listAll(store, { now, limit: 10, status: "closed" }), [session.id]);
        }));

      test("a cursor the store did not issue is refused as a caller error", () =>
        withStore(async ({ store }) => {
          await store.insertSession(makeSession());
          for (const cursor of ["not-a-cursor", "", "eyJ4IjoxfQ"]) {
            await assert.rejects(
              store.listSessions({ now: T0, limit: 10, cursor }),
              (error: unknown) => isGatehouseError(error) && error.code === "GATE_INVALID_REQUEST",
              `cursor ${JSON.stringify(cursor)}`,
            );
          }
        }));
    });

    describe("events", () => {
      test("events read back exactly as sent, numbered from 1, with a valid hash chain", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const sent: NewEvent[] = [
            {
              ...makeEvent(session.id, "x1", 0),
              attrs: { nested: { b: [1, "two", null, true], a: 1.5 }, ünï: "✓" },
            },
            makeEvent(session.id, "x1", 1, Buffer.from('{"model":"claude"}')),
            makeEvent(session.id, "x1", 2, new Uint8Array(0)),
            makeEvent(session.id, "x1", 3, new Uint8Array([0, 255, 1, 254, 0])),
            { ...makeEvent(session.id, "x1", 4), kind: "exchange.end", attrs: {} },
          ];
          const result = await store.appendEvents(sent);
          assert.equal(result.appended, 5);
          assert.equal(result.duplicates, 0);
          const stored = await readAll(store, session.id);
          assert.deepEqual(
            stored.map((e) => e.seq),
            [1, 2, 3, 4, 5],
          );
          sent.forEach((event, i) => {
            assertStoredAs(stored[i], event);
          });
          assertChainValid(stored);
          assert.deepEqual(result.tails.get(session.id), { count: 5, lastHash: stored[4]?.hash });
          assert.deepEqual(await store.chainTail(session.id), result.tails.get(session.id));
        }));

      test("readEvents returns events after afterSeq, at most limit; an unknown session has none", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          await store.appendEvents(exchange(session.id, "x1", 10));
          assert.deepEqual(
            (await store.readEvents(session.id, 2, 3)).map((e) => e.seq),
            [3, 4, 5],
          );
          assert.deepEqual(
            (await store.readEvents(session.id, 8, 100)).map((e) => e.seq),
            [9, 10],
          );
          assert.deepEqual(await store.readEvents(session.id, 10, 100), []);
          const unknown = sessionId(T0);
          assert.deepEqual(await store.readEvents(unknown, 0, 100), []);
          assert.deepEqual(await store.chainTail(unknown), EMPTY_TAIL);
        }));

      test("resending a batch stores nothing new and counts every event as a duplicate", () =>
        withStore(async ({ store }) => {
          // The agent resends whatever was not acknowledged; a resend must not
          // duplicate the record or move the chain.
          const session = makeSession();
          await store.insertSession(session);
          const batch = exchange(session.id, "x1", 8);
          const first = await store.appendEvents(batch);
          const before = await readAll(store, session.id);
          const again = await store.appendEvents(batch);
          assert.equal(again.appended, 0);
          assert.equal(again.duplicates, 8);
          assert.equal(again.tails.size, 0, "a resend reports no session as having new events");
          assert.deepEqual(await readAll(store, session.id), before);
          assert.deepEqual(await store.chainTail(session.id), first.tails.get(session.id));
        }));

      test("a batch mixing stored and new events appends only the new ones, continuing the chain", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const events = exchange(session.id, "x1", 8);
          await store.appendEvents(events.slice(0, 5));
          const result = await store.appendEvents(events.slice(2));
          assert.equal(result.appended, 3);
          assert.equal(result.duplicates, 3);
          assert.equal(result.tails.get(session.id)?.count, 8);
          const stored = await readAll(store, session.id);
          assert.equal(stored.length, 8);
          events.forEach((event, i) => {
            assertStoredAs(stored[i], event);
          });
          assertChainValid(stored);
        }));

      test("an event id repeated within one batch is stored once", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const [a, b] = exchange(session.id, "x1", 2);
          assert.ok(a && b);
          const result = await store.appendEvents([a, b, a, { ...b }]);
          assert.equal(result.appended, 2);
          assert.equal(result.duplicates, 2);
          const stored = await readAll(store, session.id);
          assert.deepEqual(
            stored.map((e) => e.id),
            [a.id, b.id],
          );
        }));

      test("the same event id in two sessions is two events", () =>
        withStore(async ({ store }) => {
          const one = makeSession();
          const two = makeSession();
          await store.insertSession(one);
          await store.insertSession(two);
          const result = await store.appendEvents([makeEvent(one.id, "x1", 0), makeEvent(two.id, "x1", 0)]);
          assert.equal(result.appended, 2);
          assert.equal((await readAll(store, one.id)).length, 1);
          assert.equal((await readAll(store, two.id)).length, 1);
        }));

      test("events of sessions interleaved in one batch keep their order within each session", () =>
        withStore(async ({ store }) => {
          const sessions = [makeSession(), makeSession(), makeSession()];
          for (const s of sessions) await store.insertSession(s);
          const perSession = sessions.map((s, n) => exchange(s.id, `x${n}`, 20));
          const batch: NewEvent[] = [];
          for (let i = 0; i < 20; i++) {
            for (const events of perSession) {
              const event = events[i];
              if (event) batch.push(event);
            }
          }
          const result = await store.appendEvents(batch);
          assert.equal(result.appended, 60);
          for (const [n, s] of sessions.entries()) {
            const stored = await readAll(store, s.id);
            assert.deepEqual(
              stored.map((e) => e.id),
              perSession[n]?.map((e) => e.id),
            );
            assertChainValid(stored);
            assert.deepEqual(result.tails.get(s.id), await store.chainTail(s.id));
          }
        }));

      test("the chain stays valid across many appends and matches the tail each append reports", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const sent: NewEvent[] = [];
          for (let n = 0; n < 12; n++) {
            const events = exchange(session.id, `x${n}`, 1 + (n % 5));
            sent.push(...events);
            const result = await store.appendEvents(events);
            assert.deepEqual(result.tails.get(session.id), await store.chainTail(session.id));
            assert.equal(result.tails.get(session.id)?.count, sent.length);
          }
          const stored = await readAll(store, session.id);
          assertChainValid(stored);
          sent.forEach((event, i) => {
            assertStoredAs(stored[i], event);
          });
          assert.equal(verifyChain(stored).tail.lastHash, (await store.chainTail(session.id)).lastHash);
        }));

      test("events of a session that has no session record are kept", () =>
        withStore(async ({ store }) => {
          // The agent can report events before (or without) the session reaching
          // the store; dropping them would lose part of the record.
          const orphan = sessionId(T0);
          const events = exchange(orphan, "x1", 4);
          const result = await store.appendEvents(events);
          assert.equal(result.appended, 4);
          assert.equal(await store.getSession(orphan), null);
          const stored = await readAll(store, orphan);
          events.forEach((event, i) => {
            assertStoredAs(stored[i], event);
          });
          assertChainValid(stored);
          assert.equal((await store.chainTail(orphan)).count, 4);
        }));

      test("a 48 MB exchange (ten 4 MB chunks and one 8 MB event) reads back byte for byte", () =>
        withStore(async ({ store }) => {
          const session = makeSession();
          await store.insertSession(session);
          const chunks = Array.from({ length: 10 }, (_, i) =>
            makeEvent(session.id, "big", 1 + i, randomBytes(4 * MB)),
          );
          const single = makeEvent(session.id, "big", 11, randomBytes(8 * MB));
          const sent = [makeEvent(session.id, "big", 0), ...chunks, single, makeEvent(session.id, "big", 12)];
          await store.appendEvents(sent.slice(0, 11));
          await store.appendEvents(sent.slice(11));
          const stored = await readAll(store, session.id);
          assert.equal(stored.length, sent.length);
          sent.forEach((event, i) => {
            const got = stored[i];
            assert.ok(got);
            assert.equal(got.body?.byteLength ?? null, event.body?.byteLength ?? null);
            const digest = (b: Uint8Array | null) =>
              b === null ? null : createHash("sha256").update(b).digest("hex");
            assert.equal(digest(got.body), digest(event.body), `body of ${event.id} differs`);
          });
          assertChainValid(stored);
        }));

      test("concurrent appends to one session store every event once, numbered 1..N without gaps", () =>
        withStore(async ({ store }) => {
          // Several streams (and resends) race for the same session; each must
          // land once, in one unbroken chain, with each exchange in order.
          const session = makeSession();
          await store.insertSession(session);
          const exchanges = Array.from({ length: 40 }, (_, n) => exchange(session.id, `x${n}`, 25));
          const calls = [...exchanges, ...exchanges].map((events) => store.appendEvents(events));
          const results = await Promise.all(calls);
          const total = exchanges.length * 25;
          assert.equal(
            results.reduce((sum, r) => sum + r.appended, 0),
            total,
          );
          assert.equal(
            results.reduce((sum, r) => sum + r.duplicates, 0),
            total,
          );
          const stored = await readAll(store, session.id);
          assert.deepEqual(
            stored.map((e) => e.seq),
            Array.from({ length: total }, (_, i) => i + 1),
          );
          assertChainValid(stored);
          assert.equal(new Set(stored.map((e) => e.id)).size, total);
          for (const events of exchanges) {
            const exchangeId = events[0]?.exchangeId;
            assert.deepEqual(
              stored.filter((e) => e.exchangeId === exchangeId).map((e) => e.id),
              events.map((e) => e.id),
            );
          }
          assert.equal((await store.chainTail(session.id)).count, total);
        }));

      test("a 20 MB body in one event, larger than any store document, reads back byte for byte", () =>
        withStore(async ({ store }) => {
          // Stores whose documents are capped (MongoDB: 16 MiB) keep such a body in pieces;
          // a reader must not see the difference, and a resend must store nothing twice.
          const session = makeSession();
          await store.insertSession(session);
          const large = makeEvent(session.id, "huge", 1, randomBytes(20 * MB + 3));
          const sent = [makeEvent(session.id, "huge", 0), large, makeEvent(session.id, "huge", 2)];
          const first = await store.appendEvents(sent);
          assert.equal(first.appended, 3);
          const again = await store.appendEvents([large]);
          assert.equal(again.duplicates, 1);
          assert.equal(again.appended, 0);
          const stored = await readAll(store, session.id);
          assert.equal(stored.length, 3);
          sent.forEach((event, i) => {
            assertStoredAs(stored[i], event);
          });
          assertChainValid(stored);
          // Read from just before the large event, as a follower that stopped there would.
          const tail = await store.readEvents(session.id, 1, 10);
          assert.equal(tail[0]?.body?.byteLength, 20 * MB + 3);
        }));

      test("store objects over the same data appending to one session store every event once, 1..N", () =>
        withStore(async ({ store, openAnother }) => {
          // Control-plane replicas share one database, and an agent that reconnects to
          // another replica resends what was not acknowledged: writers in separate store
          // objects race for the same session without a shared lock, and the record must
          // still hold each event once, in one unbroken chain.
          const session = makeSession();
          await store.insertSession(session);
          const stores = [store, await openAnother(), await openAnother()];
          const exchanges = Array.from({ length: 24 }, (_, n) => exchange(session.id, `x${n}`, 10));
          const calls = exchanges.flatMap((events, n) => [
            (stores[n % 3] as Store).appendEvents(events),
            (stores[(n + 1) % 3] as Store).appendEvents(events),
          ]);
          const results = await Promise.all(calls);
          const total = exchanges.length * 10;
          assert.equal(
            results.reduce((sum, r) => sum + r.appended, 0),
            total,
          );
          assert.equal(
            results.reduce((sum, r) => sum + r.duplicates, 0),
            total,
          );
          for (const reader of stores) {
            const stored = await readAll(reader, session.id);
            assert.deepEqual(
              stored.map((e) => e.seq),
              Array.from({ length: total }, (_, i) => i + 1),
            );
            assertChainValid(stored);
            assert.equal(new Set(stored.map((e) => e.id)).size, total);
            for (const events of exchanges) {
              const exchangeId = events[0]?.exchangeId;
              assert.deepEqual(
                stored.filter((e) => e.exchangeId === exchangeId).map((e) => e.id),
                events.map((e) => e.id),
              );
            }
            assert.deepEqual(await reader.chainTail(session.id), verifyChain(stored).tail);
          }
        }));
    });

    describe("agents", () => {
      const agent = (n: number, overrides: Partial<AgentRecord> = {}): AgentRecord => ({
        id: `agent-${n}`,
        name: `runner-pool-${n}`,
        tokenHash: createHash("sha256").update(`token ${n}`).digest("hex"),
        createdAt: T0 + n,
        revokedAt: null,
        lastSeenAt: null,
        connections: null,
        ...overrides,
      });

      test("an agent is found by its token hash; other hashes find nothing", () =>
        withStore(async ({ store }) => {
          await store.insertAgent(agent(1));
          await store.insertAgent(agent(2));
          assert.deepEqual(await store.findAgentByTokenHash(agent(2).tokenHash), agent(2));
          assert.equal(await store.findAgentByTokenHash("0".repeat(64)), null);
          const listed = await store.listAgents();
          assert.deepEqual(
            [...listed].sort((a, b) => (a.id < b.id ? -1 : 1)),
            [agent(1), agent(2)],
          );
        }));

      test("an agent's connection scope is kept with it: a list of names, or null for every connection", () =>
        withStore(async ({ store }) => {
          const scoped = agent(1, { connections: ["claude", "azure-repos"] });
          await store.insertAgent(scoped);
          await store.insertAgent(agent(2));
          assert.deepEqual(await store.findAgentByTokenHash(scoped.tokenHash), scoped);
          assert.equal((await store.findAgentByTokenHash(agent(2).tokenHash))?.connections, null);
          assert.deepEqual(await store.revokeAgent(scoped.id, T0 + HOUR), {
            ...scoped,
            revokedAt: T0 + HOUR,
          });
        }));

      test("a second agent with the same token hash is refused", () =>
        withStore(async ({ store }) => {
          // A token must identify one agent, or revoking one would leave a twin.
          await store.insertAgent(agent(1));
          await assert.rejects(store.insertAgent(agent(2, { tokenHash: agent(1).tokenHash })));
          assert.deepEqual(await store.findAgentByTokenHash(agent(1).tokenHash), agent(1));
          assert.equal((await store.listAgents()).length, 1);
        }));

      test("revoking an agent records when; an unknown agent revokes as null", () =>
        withStore(async ({ store }) => {
          await store.insertAgent(agent(1));
          await store.insertAgent(agent(2));
          const revoked = await store.revokeAgent(agent(1).id, T0 + HOUR);
          assert.deepEqual(revoked, agent(1, { revokedAt: T0 + HOUR }));
          assert.deepEqual(await store.findAgentByTokenHash(agent(1).tokenHash), revoked);
          assert.deepEqual(await store.findAgentByTokenHash(agent(2).tokenHash), agent(2));
          assert.equal(await store.revokeAgent("agent-unknown", T0), null);
        }));

      test("touching an agent records when it was last seen", () =>
        withStore(async ({ store }) => {
          await store.insertAgent(agent(1));
          await store.touchAgent(agent(1).id, T0 + MINUTE);
          await store.touchAgent(agent(1).id, T0 + 2 * MINUTE);
          assert.deepEqual(
            await store.findAgentByTokenHash(agent(1).tokenHash),
            agent(1, { lastSeenAt: T0 + 2 * MINUTE }),
          );
          await store.touchAgent("agent-unknown", T0);
          assert.equal((await store.listAgents()).length, 1);
        }));
    });

    describe("audit log", () => {
      keysetListingTests({
        plural: "entries",
        make: (at, n) => makeAudit(at, n % 4 === 0 ? { target: null } : {}),
        time: (entry) => entry.at,
        add: (store, entry) => store.appendAudit(entry),
        list: (store, filter) => store.listAudit(filter),
      });

      test("an audit entry id stored twice is refused and the first entry stays", () =>
        withStore(async ({ store }) => {
          // An entry, once written, must not be replaced: it is the record of who did what.
          const entry = makeAudit(T0);
          await store.appendAudit(entry);
          await assert.rejects(
            store.appendAudit({ ...entry, actor: "intruder", action: "agent.revoke" }),
            isInvalidRequest,
          );
          assert.deepEqual((await store.listAudit({ limit: 10 })).items, [entry]);
        }));
    });

    describe("API keys", () => {
      const roles = ["admin", "approver", "auditor"] as const;
      keysetListingTests({
        plural: "API keys",
        make: (createdAt, n) =>
          makeApiKey(createdAt, {
            role: roles[n % 3] ?? "admin",
            kind: n % 2 === 0 ? "api-key" : "login",
            expiresAt: n % 4 === 0 ? createdAt + HOUR : null,
            revokedAt: n % 5 === 0 ? createdAt + MINUTE : null,
            lastUsedAt: n % 3 === 1 ? createdAt + 2 * MINUTE : null,
          }),
        time: (key) => key.createdAt,
        add: (store, key) => store.insertApiKey(key),
        list: (store, filter) => store.listApiKeys(filter),
      });

      test("a key reads back exactly by id and by key hash; unknown ones read as null", () =>
        withStore(async ({ store }) => {
          const automation = makeApiKey(T0, { role: "auditor", createdBy: "bootstrap-admin" });
          const login = makeApiKey(T0 + MINUTE, {
            name: "https://login.example.com#admin-7",
            role: "admin",
            kind: "login",
            expiresAt: T0 + 9 * HOUR,
            lastUsedAt: T0 + 2 * MINUTE,
          });
          await store.insertApiKey(automation);
          await store.insertApiKey(login);
          for (const key of [automation, login]) {
            assert.deepEqual(await store.getApiKey(key.id), key);
            assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
          }
          assert.equal(await store.getApiKey(sessionId(T0)), null);
          assert.equal(await store.findApiKeyByHash("0".repeat(64)), null);
        }));

      test("an id or key hash stored before is refused, and the first key stays", () =>
        withStore(async ({ store }) => {
          // A key must identify one record, or revoking it would leave a twin that still works.
          const key = makeApiKey(T0);
          await store.insertApiKey(key);
          await assert.rejects(
            store.insertApiKey(makeApiKey(T0 + MINUTE, { id: key.id, role: "admin" })),
            isInvalidRequest,
          );
          const twin = makeApiKey(T0 + MINUTE, { keyHash: key.keyHash, role: "admin" });
          await assert.rejects(store.insertApiKey(twin), isInvalidRequest);
          assert.deepEqual(await store.getApiKey(key.id), key);
          assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
          assert.equal(await store.getApiKey(twin.id), null);
          assert.deepEqual((await store.listApiKeys({ limit: 10 })).items, [key]);
        }));

      test("of two replicas storing keys with one hash at once, exactly one succeeds", () =>
        withStore(async ({ store, openAnother }) => {
          // Both may find no clash before either writes; the store must still keep only one.
          const other = await openAnother();
          const rounds = Array.from({ length: 10 }, (_, i) => {
            const first = makeApiKey(T0 + i);
            return [first, makeApiKey(T0 + i, { keyHash: first.keyHash })] as const;
          });
          const results = await Promise.all(
            rounds.map(([a, b]) => Promise.allSettled([store.insertApiKey(a), other.insertApiKey(b)])),
          );
          for (const [i, settled] of results.entries()) {
            const stored = settled.filter((r) => r.status === "fulfilled").length;
            assert.equal(stored, 1, `round ${i}: ${stored} keys stored with one hash`);
            for (const r of settled) if (r.status === "rejected") assert.ok(isInvalidRequest(r.reason));
          }
          assert.equal((await store.listApiKeys({ limit: 100 })).items.length, rounds.length);
        }));

      test("revoking records when, once: revoking again keeps the first time; an unknown key is null", () =>
        withStore(async ({ store }) => {
          const key = makeApiKey(T0);
          const other = makeApiKey(T0 + 1);
          await store.insertApiKey(key);
          await store.insertApiKey(other);
          const revoked = { ...key, revokedAt: T0 + HOUR };
          assert.deepEqual(await store.revokeApiKey(key.id, T0 + HOUR), revoked);
          // A later revocation (an admin repeating it, another replica) must not move the
          // time the key stopped working.
          assert.deepEqual(await store.revokeApiKey(key.id, T0 + 2 * HOUR), revoked);
          assert.deepEqual(await store.findApiKeyByHash(key.keyHash), revoked);
          assert.deepEqual(await store.getApiKey(other.id), other);
          assert.equal(await store.revokeApiKey(sessionId(T0), T0), null);
        }));

      test("a use moves lastUsedAt forward only; a use of an unknown key stores nothing", () =>
        withStore(async ({ store }) => {
          const key = makeApiKey(T0);
          await store.insertApiKey(key);
          await store.touchApiKey(key.id, T0 + 2 * MINUTE);
          // A use reported late, by a slower replica, must not hide the later one.
          await store.touchApiKey(key.id, T0 + MINUTE);
          assert.deepEqual(await store.getApiKey(key.id), { ...key, lastUsedAt: T0 + 2 * MINUTE });
          await store.touchApiKey(key.id, T0 + 3 * MINUTE);
          assert.deepEqual(await store.findApiKeyByHash(key.keyHash), {
            ...key,
            lastUsedAt: T0 + 3 * MINUTE,
          });
          // Recording a use changes nothing else about the key, a revoked one included.
          const revoked = await store.revokeApiKey(key.id, T0 + HOUR);
          await store.touchApiKey(key.id, T0 + 2 * HOUR);
          assert.deepEqual(await store.getApiKey(key.id), { ...revoked, lastUsedAt: T0 + 2 * HOUR });
          const unknown = sessionId(T0);
          await store.touchApiKey(unknown, T0);
          assert.equal(await store.getApiKey(unknown), null);
          assert.equal((await store.listApiKeys({ limit: 10 })).items.length, 1);
        }));

      test("keys, their revocations and their uses survive closing and reopening the store", () =>
        withStore(async ({ store, closeAndReopen }) => {
          const login = makeApiKey(T0, { kind: "login", role: "admin", expiresAt: T0 + HOUR });
          const auditor = makeApiKey(T0 + 1000, { role: "auditor" });
          const approver = makeApiKey(T0 + 2000);
          for (const key of [login, auditor, approver]) await store.insertApiKey(key);
          await store.revokeApiKey(login.id, T0 + MINUTE);
          await store.touchApiKey(auditor.id, T0 + 2 * MINUTE);
          const first = await store.listApiKeys({ limit: 2 });
          assert.ok(first.nextCursor);

          const again = await closeAndReopen();
          assert.deepEqual(await again.listApiKeys({ limit: 2 }), first);
          assert.deepEqual(first.items, [approver, { ...auditor, lastUsedAt: T0 + 2 * MINUTE }]);
          // A cursor issued before the restart still continues the listing.
          assert.deepEqual(await again.listApiKeys({ limit: 2, cursor: first.nextCursor }), {
            items: [{ ...login, revokedAt: T0 + MINUTE }],
            nextCursor: null,
          });
          assert.deepEqual(await again.findApiKeyByHash(login.keyHash), { ...login, revokedAt: T0 + MINUTE });
          // Uses and revocations recorded after the restart still follow the same rules.
          await again.touchApiKey(auditor.id, T0 + MINUTE);
          await again.revokeApiKey(login.id, T0 + HOUR);
          assert.equal((await again.getApiKey(auditor.id))?.lastUsedAt, T0 + 2 * MINUTE);
          assert.equal((await again.getApiKey(login.id))?.revokedAt, T0 + MINUTE);
        }));
    });

    describe("approvals", () => {
      const statuses: ApprovalStatus[] = ["pending", "approved", "denied", "expired", "cancelled"];
      /** The `n`th of a mix: every status, both stages, both kinds of requester; decided ones say who and why. */
      const variedApproval = (createdAt: number, n: number): ApprovalRecord => {
        const status = statuses[n % statuses.length] ?? "pending";
        const decidedBy =
          status === "expired"
            ? "system"
            : status === "cancelled"
              ? "agent"
              : "https://login.example.com#ops-3";
        return makeApproval(createdAt, {
          status,
          stage: n % 2 === 0 ? "request" : "response",
          matched: n % 4 === 0 ? [] : ["tool", "toolInput"],
          ...(n % 3 === 0 ? { requester: { kind: "api-key" as const, id: sessionId(createdAt) } } : {}),
          ...(status === "pending"
            ? {}
            : { decidedAt: createdAt + MINUTE, decidedBy, reason: `${status}: checked with the team` }),
        });
      };
      const byId = (approvals: ApprovalRecord[]) => [...approvals].sort((a, b) => (a.id < b.id ? -1 : 1));
      const approve: ApprovalDecisionUpdate = {
        status: "approved",
        decidedAt: T0 + 2 * MINUTE,
        decidedBy: "https://login.example.com#ops-3",
        reason: "reviewed: the key is a test fixture",
      };
      const deny: ApprovalDecisionUpdate = {
        status: "denied",
        decidedAt: T0 + 3 * MINUTE,
        decidedBy: sessionId(T0),
        reason: "production credentials stay out of prompts",
      };
      const expiredAt = (approval: ApprovalRecord, now: number, reason: string): ApprovalRecord => ({
        ...approval,
        status: "expired",
        decidedAt: now,
        decidedBy: "system",
        reason,
      });

      keysetListingTests({
        plural: "approvals",
        make: variedApproval,
        time: (approval) => approval.createdAt,
        add: async (store, approval) => {
          await store.insertApproval(approval);
        },
        list: (store, filter) => store.listApprovals(filter),
      });

      test("an approval reads back exactly, alone or several at once; unknown ids are left out", () =>
        withStore(async ({ store }) => {
          const first = variedApproval(T0, 0);
          const second = variedApproval(T0 + 1000, 1);
          const third = variedApproval(T0 + 2000, 3);
          for (const approval of [first, second, third]) {
            assert.deepEqual(await store.insertApproval(approval), approval, "insert returns what it stored");
          }
          for (const approval of [first, second, third]) {
            assert.deepEqual(await store.getApproval(approval.id), approval);
          }
          const unknown = sessionId(T0);
          assert.equal(await store.getApproval(unknown), null);
          assert.deepEqual(
            byId(await store.getApprovals([third.id, unknown, first.id, third.id])),
            byId([first, third]),
          );
          assert.deepEqual(await store.getApprovals([unknown]), []);
          assert.deepEqual(await store.getApprovals([]), []);
        }));

      test("storing an approval id again returns the stored record unchanged, decided or not", () =>
        withStore(async ({ store }) => {
          // The agent resends its request after a relink: the resend must neither fail
          // nor replace what is stored, nor reopen an approval decided meanwhile.
          const approval = makeApproval(T0);
          await store.insertApproval(approval);
          const resent = { ...approval, message: "changed", preview: "other", expiresAt: T0 + HOUR };
          assert.deepEqual(await store.insertApproval(resent), approval);
          const decided = await store.decideApproval(approval.id, approve);
          assert.deepEqual(decided, { ...approval, ...approve });
          assert.deepEqual(await store.insertApproval(approval), decided);
          assert.deepEqual(await store.getApproval(approval.id), decided);
          assert.deepEqual(await store.listApprovals({ limit: 10 }), { items: [decided], nextCursor: null });
        }));

      test("a status filter lists only that status, newest first, pages holding while newer ones arrive", () =>
        withStore(async ({ store }) => {
          // Two share each time, so ids break ties. Pending ones are listed as pending
          // whatever their expiresAt: expiry is the sweep's to apply, not the reader's.
          const stored = Array.from({ length: 40 }, (_, i) =>
            variedApproval(T0 + Math.floor(i / 2) * 1000, i),
          );
          for (const approval of [...stored].sort(() => Math.random() - 0.5)) {
            await store.insertApproval(approval);
          }
          let arrivals = 0;
          for (const [n, status] of statuses.entries()) {
            const expected = newestFirstBy(
              stored.filter((approval) => approval.status === status),
              (approval) => approval.createdAt,
            );
            let pages = 0;
            const ids = await listEveryPage(3, async (cursor) => {
              pages += 1;
              if (cursor === undefined) return store.listApprovals({ status, limit: 3 });
              // Newer approvals, of this status and of another, arrive between pages.
              for (const m of [n, n + 1]) {
                arrivals += 1;
                const arrived = variedApproval(T0 + 2 * HOUR + arrivals * 1000, m);
                await store.insertApproval(arrived);
                stored.push(arrived);
              }
              return store.listApprovals({ status, limit: 3, cursor });
            });
            assert.ok(pages >= 3, `${status}: the walk took ${pages} pages`);
            assert.deepEqual(ids, expected, `${status} approvals`);
          }
        }));

      test("a decision is taken once: a later one returns the first unchanged; an unknown id is null", () =>
        withStore(async ({ store }) => {
          const approval = makeApproval(T0);
          const other = makeApproval(T0 + 1000);
          await store.insertApproval(approval);
          await store.insertApproval(other);
          const decided = { ...approval, ...approve };
          assert.deepEqual(await store.decideApproval(approval.id, approve), decided);
          // A second approver a moment late must learn who decided first, not overwrite it.
          assert.deepEqual(await store.decideApproval(approval.id, deny), decided);
          assert.deepEqual(await store.getApproval(approval.id), decided);
          assert.deepEqual(await store.getApproval(other.id), other, "the other approval is still pending");
          const cancel: ApprovalDecisionUpdate = {
            status: "cancelled",
            decidedAt: T0 + 4 * MINUTE,
            decidedBy: "agent",
            reason: "the client went away",
          };
          assert.deepEqual(await store.decideApproval(other.id, cancel), { ...other, ...cancel });
          const unknown = sessionId(T0);
          assert.equal(await store.decideApproval(unknown, approve), null);
          assert.equal(await store.getApproval(unknown), null, "deciding an unknown id stores nothing");
          assert.deepEqual((await store.listApprovals({ status: "approved", limit: 10 })).items, [decided]);
          assert.deepEqual((await store.listApprovals({ status: "pending", limit: 10 })).items, []);
          assert.deepEqual(await store.expireApprovals(T0 + HOUR, "no decision in time"), []);
        }));

      test("of store objects deciding one approval at once, exactly one decision is taken and all see it", () =>
        withStore(async ({ store, openAnother }) => {
          // Two approvers on two replicas, and a third replica's expiry sweep, may act on
          // one approval in the same instant: one decision stands, and every caller is told it.
          const second = await openAnother();
          const third = await openAnother();
          const now = T0 + HOUR;
          const reason = "no decision in time";
          for (let round = 0; round < 12; round++) {
            const approval = makeApproval(T0 + round * 1000, { expiresAt: now - round });
            await store.insertApproval(approval);
            const [first, other, swept] = await Promise.all([
              store.decideApproval(approval.id, approve),
              second.decideApproval(approval.id, deny),
              third.expireApprovals(now, reason),
            ]);
            const stored = await store.getApproval(approval.id);
            assert.ok(stored);
            const candidates = [
              { ...approval, ...approve },
              { ...approval, ...deny },
              expiredAt(approval, now, reason),
            ];
            assert.ok(
              candidates.some((candidate) => isDeepStrictEqual(candidate, stored)),
              `round ${round}: stored ${JSON.stringify(stored)}`,
            );
            assert.deepEqual(first, stored, `round ${round}: the first approver is told the decision taken`);
            assert.deepEqual(other, stored, `round ${round}: the second approver is told the decision taken`);
            assert.deepEqual(
              swept,
              stored.status === "expired" ? [stored] : [],
              `round ${round}: the sweep reports an expiry only when it made it`,
            );
            assert.deepEqual(await second.getApproval(approval.id), stored);
            assert.deepEqual(await third.getApproval(approval.id), stored);
          }
        }));

      test("expiry marks only pending approvals due by now, returns them, and leaves the rest", () =>
        withStore(async ({ store }) => {
          const now = T0 + HOUR;
          const due = makeApproval(T0, { expiresAt: now - MINUTE });
          // expiresAt <= now: an approval is due at the instant itself.
          const dueNow = makeApproval(T0 + 1000, { expiresAt: now });
          const later = makeApproval(T0 + 2000, { expiresAt: now + 1 });
          const approved = makeApproval(T0 + 3000, { expiresAt: now - MINUTE, ...approve });
          const cancelled = makeApproval(T0 + 4000, {
            expiresAt: now - MINUTE,
            status: "cancelled",
            decidedAt: T0 + 5000,
            decidedBy: "agent",
            reason: "the client went away",
          });
          for (const approval of [due, dueNow, later, approved, cancelled])
            await store.insertApproval(approval);
          // Until the sweep runs, past-due approvals are still pending to readers.
          assert.deepEqual((await store.listApprovals({ status: "pending", limit: 10 })).items, [
            later,
            dueNow,
            due,
          ]);

          const reason = "no decision within 600 s";
          const expired = [expiredAt(due, now, reason), expiredAt(dueNow, now, reason)];
          assert.deepEqual(byId(await store.expireApprovals(now, reason)), byId(expired));
          for (const approval of expired) assert.deepEqual(await store.getApproval(approval.id), approval);
          for (const approval of [later, approved, cancelled]) {
            assert.deepEqual(await store.getApproval(approval.id), approval);
          }
          // A second sweep finds nothing more, and an approver arriving late cannot overturn an expiry.
          assert.deepEqual(await store.expireApprovals(now, "again"), []);
          assert.deepEqual(await store.decideApproval(due.id, approve), expired[0]);
          assert.deepEqual((await store.listApprovals({ status: "pending", limit: 10 })).items, [later]);
          assert.deepEqual(
            (await store.listApprovals({ status: "expired", limit: 10 })).items,
            [...expired].reverse(),
          );
        }));

      test("approvals and their decisions survive closing and reopening the store", () =>
        withStore(async ({ store, closeAndReopen }) => {
          const pending = makeApproval(T0);
          const decided = makeApproval(T0 + 1000);
          const lapsed = makeApproval(T0 + 2000, { expiresAt: T0 + 3000 });
          for (const approval of [pending, decided, lapsed]) await store.insertApproval(approval);
          await store.decideApproval(decided.id, approve);
          await store.expireApprovals(T0 + 5000, "no decision in time");
          const first = await store.listApprovals({ limit: 2 });
          assert.ok(first.nextCursor);

          const again = await closeAndReopen();
          assert.deepEqual(await again.listApprovals({ limit: 2 }), first);
          assert.deepEqual(first.items, [
            expiredAt(lapsed, T0 + 5000, "no decision in time"),
            { ...decided, ...approve },
          ]);
          // A cursor issued before the restart still continues the listing.
          assert.deepEqual(await again.listApprovals({ limit: 2, cursor: first.nextCursor }), {
            items: [pending],
            nextCursor: null,
          });
          // Decisions after the restart follow the same rule: decided ones stay, pending ones take one.
          assert.deepEqual(await again.decideApproval(decided.id, deny), { ...decided, ...approve });
          assert.deepEqual(await again.decideApproval(pending.id, deny), { ...pending, ...deny });
          assert.deepEqual(
            await again.insertApproval(lapsed),
            expiredAt(lapsed, T0 + 5000, "no decision in time"),
          );
        }));
    });

    describe("policies", () => {
      test("a put creates or replaces a policy; listed by name in code-unit order; delete says if one was there", () =>
        withStore(async ({ store }) => {
          assert.deepEqual(await store.listPolicies(), []);
          // Names may hold '-', '.', digits and '_', which sort as their code units do
          // (not as a locale would), so both stores list them alike.
          const names = ["ci_default", "ci0", "zeta", "ci.default", "ci-default", "alpha"];
          const policies = names.map((name, i) => makePolicy(name, { updatedAt: T0 + i }));
          for (const policy of policies) await store.putPolicy(policy);
          const byName = (list: StoredPolicyRecord[]) =>
            [...list].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
          assert.deepEqual(
            (await store.listPolicies()).map((policy) => policy.name),
            ["alpha", "ci-default", "ci.default", "ci0", "ci_default", "zeta"],
          );
          assert.deepEqual(await store.listPolicies(), byName(policies));

          const replaced = makePolicy("ci.default", {
            body: { connections: ["claude", "claude-prod"], rules: [] },
            updatedAt: T0 + HOUR,
            updatedBy: sessionId(T0),
          });
          await store.putPolicy(replaced);
          const current = byName([...policies.filter((policy) => policy.name !== "ci.default"), replaced]);
          assert.deepEqual(await store.listPolicies(), current);

          assert.equal(await store.deletePolicy("ci0"), true);
          assert.equal(
            await store.deletePolicy("ci0"),
            false,
            "deleting twice finds nothing the second time",
          );
          assert.equal(await store.deletePolicy("never-set"), false);
          assert.deepEqual(
            await store.listPolicies(),
            current.filter((policy) => policy.name !== "ci0"),
          );
        }));

      test("a policy body that is not plain JSON is refused as a caller error and nothing is stored", () =>
        withStore(async ({ store }) => {
          await assert.rejects(
            store.putPolicy(makePolicy("bad", { body: { maxTokensAbove: 10n } })),
            isInvalidRequest,
          );
          assert.deepEqual(await store.listPolicies(), []);
        }));

      test("policies survive closing and reopening the store", () =>
        withStore(async ({ store, closeAndReopen }) => {
          const kept = makePolicy("ci-default");
          const gone = makePolicy("old-rule");
          await store.putPolicy(kept);
          await store.putPolicy(gone);
          await store.deletePolicy(gone.name);
          const again = await closeAndReopen();
          assert.deepEqual(await again.listPolicies(), [kept]);
          assert.equal(await again.deletePolicy(gone.name), false);
        }));
    });

    describe("retention", () => {
      test("purging removes only sessions closed before the cutoff, with their events and bodies", () =>
        withStore(async ({ store }) => {
          const cutoff = T0 + 10 * HOUR;
          // Closed before the cutoff: these go, whatever their lifetime or seal.
          const old = Array.from({ length: 5 }, (_, i) =>
            makeSession({ createdAt: T0 + i * MINUTE, closedAt: T0 + (i + 1) * HOUR - 1 }),
          );
          // Closed at or after the cutoff, still open (even long expired), or events
          // with no session record: these stay exactly as they were.
          const atCutoff = makeSession({ createdAt: T0, closedAt: cutoff });
          const recent = makeSession({ createdAt: cutoff - HOUR, closedAt: cutoff + MINUTE });
          const openExpired = makeSession({ createdAt: T0 - 100 * HOUR });
          const open = makeSession({ createdAt: cutoff - MINUTE, expiresAt: cutoff + HOUR });
          const kept = [atCutoff, recent, openExpired, open];
          for (const s of [...old, ...kept]) await store.insertSession(s);
          const orphan = sessionId(T0);
          let oldEvents = 0;
          for (const [n, s] of [...old, ...kept].entries()) {
            const events = exchange(s.id, "x1", 3 + n);
            // One purged and one kept session each have a body too large for a store document.
            if (s === old[1] || s === recent) events.push(makeEvent(s.id, "x2", 0, randomBytes(9 * MB)));
            await store.appendEvents(events);
            if (old.includes(s)) oldEvents += events.length;
          }
          await store.appendEvents(exchange(orphan, "x1", 4));
          const sealed = old[0] as SessionRecord;
          await store.setSeal(sealed.id, { count: 3, lastHash: "ab".repeat(32), sealedAt: T0, jws: "a.b.c" });
          const before = new Map<string, StoredEvent[]>();
          for (const id of [...kept.map((s) => s.id), orphan]) before.set(id, await readAll(store, id));

          const results = [];
          for (;;) {
            const result = await store.purgeClosedSessions(cutoff, 2);
            results.push(result);
            assert.ok(result.sessions <= 2, "a purge call deletes at most limit sessions");
            if (result.sessions === 0) break;
          }
          assert.deepEqual(
            results.map((r) => r.sessions),
            [2, 2, 1, 0],
          );
          assert.equal(
            results.reduce((sum, r) => sum + r.events, 0),
            oldEvents,
          );
          assert.deepEqual(
            results.flatMap((r) => r.ids).sort(),
            old.map((s) => s.id).sort(),
            "each call names the sessions it removed",
          );

          for (const s of old) {
            assert.equal(await store.getSession(s.id), null);
            assert.deepEqual(await store.readEvents(s.id, 0, 100), []);
            assert.deepEqual(await store.chainTail(s.id), EMPTY_TAIL);
          }
          for (const s of kept) assert.deepEqual(await store.getSession(s.id), s);
          for (const [id, events] of before) assert.deepEqual(await readAll(store, id), events);
          assert.deepEqual(
            await listAll(store, { now: cutoff, limit: 3 }),
            newestFirst(kept),
            "listings no longer show purged sessions",
          );
          assert.deepEqual(await store.purgeClosedSessions(cutoff, 100), { sessions: 0, events: 0, ids: [] });
          // A later cutoff takes the sessions closed since; open ones are never purged.
          assert.deepEqual(await store.purgeClosedSessions(cutoff + HOUR, 100), {
            sessions: 2,
            events: (before.get(atCutoff.id)?.length ?? 0) + (before.get(recent.id)?.length ?? 0),
            ids: [atCutoff.id, recent.id],
          });
          assert.deepEqual(await store.getSession(open.id), open);
          assert.deepEqual(await store.getSession(openExpired.id), openExpired);
        }));

      test("a purge limit that is not a positive whole number is refused as a caller error", () =>
        withStore(async ({ store }) => {
          for (const limit of [0, -3, 2.5, Number.NaN]) {
            await assert.rejects(
              store.purgeClosedSessions(T0, limit),
              (error: unknown) => isGatehouseError(error) && error.code === "GATE_INVALID_REQUEST",
              `limit ${limit}`,
            );
          }
        }));
    });

    describe("durability", () => {
      test("closing and reopening the store loses nothing, and chains continue where they stopped", () =>
        withStore(async ({ store, closeAndReopen }) => {
          const open = makeSession({ createdAt: T0 });
          const sealed = makeSession({ createdAt: T0 + 1000 });
          await store.insertSession(open);
          await store.insertSession(sealed);
          await store.closeSession(sealed.id, T0 + MINUTE);
          const seal = { count: 3, lastHash: "cd".repeat(32), sealedAt: T0 + MINUTE, jws: "a.b.c" };
          await store.setSeal(sealed.id, seal);
          await store.appendEvents([...exchange(open.id, "x1", 6), ...exchange(sealed.id, "x1", 3)]);
          const orphan = sessionId(T0);
          await store.appendEvents(exchange(orphan, "x1", 2));
          const agent: AgentRecord = {
            id: "agent-1",
            name: "pool",
            tokenHash: "ef".repeat(32),
            createdAt: T0,
            revokedAt: null,
            lastSeenAt: T0 + 5,
            connections: ["claude"],
          };
          await store.insertAgent(agent);
          const before = {
            sessions: await store.listSessions({ now: T0, limit: 10 }),
            open: await readAll(store, open.id),
            sealed: await readAll(store, sealed.id),
            orphan: await readAll(store, orphan),
          };

          const again = await closeAndReopen();
          await again.ping();
          assert.deepEqual(await again.listSessions({ now: T0, limit: 10 }), before.sessions);
          assert.deepEqual(await again.getSession(sealed.id), { ...sealed, closedAt: T0 + MINUTE, seal });
          assert.deepEqual(await readAll(again, open.id), before.open);
          assert.deepEqual(await readAll(again, sealed.id), before.sealed);
          assert.deepEqual(await readAll(again, orphan), before.orphan);
          assert.deepEqual(await again.findAgentByTokenHash(agent.tokenHash), agent);
          assert.deepEqual(await again.listRevokedSessions(T0 + 2 * MINUTE), [
            { id: sealed.id, expiresAt: sealed.expiresAt, closedAt: T0 + MINUTE },
          ]);

          const more = exchange(open.id, "x2", 4);
          const resent = await again.appendEvents([...exchange(open.id, "x1", 6), ...more]);
          assert.equal(resent.duplicates, 6, "events stored before the reopen are still recognised");
          assert.equal(resent.appended, 4);
          const after = await readAll(again, open.id);
          assert.equal(after.length, 10);
          assertChainValid(after);
        }));
    });
  });
}
