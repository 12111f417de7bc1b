import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import { SCHEMA_VERSION } from "@gatehouse/control-plane/store/sqlite/schema.js";
import { SqliteStore } from "@gatehouse/control-plane/store/sqlite/store.js";
import { isGatehouseError } from "@gatehouse/proto/errors";
import Database from "libsql";
import { makeApiKey, makeApproval, makeAudit, makePolicy, makeSession, storeSuite } from "./store-suite.js";

/**
 * Runs a separate Node process that opens the store at `path`, appends
 * `batches` batches of 20 events to session `sessionId` (exchange ids prefixed
 * `writer`), and then, when `crash` is set, kills itself the moment the last
 * append resolves, as a crash right after an acknowledgement would.
 */
async function appendInChild(options: {
  path: string;
  sessionId: string;
  writer: string;
  batches: number;
  crash: boolean;
}): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  const script = `
    const [moduleUrl, optionsJson] = process.argv.slice(1);
    const { path, sessionId, writer, batches, crash } = JSON.parse(optionsJson);
    const { SqliteStore } = await import(moduleUrl);
    const store = await SqliteStore.open({ path });
    for (let b = 0; b < batches; b++) {
      const exchangeId = writer + "-" + b;
      const events = Array.from({ length: 20 }, (_, i) => ({
        id: exchangeId + ":" + i, sessionId, exchangeId, at: Date.now() * 1000 + i,
        kind: "response.sse", attrs: { i }, body: Buffer.alloc(300, i),
      }));
      await store.appendEvents(events);
    }
    if (crash) process.kill(process.pid, "SIGKILL");
    await store.close();
  `;
  const moduleUrl = import.meta.resolve("@gatehouse/control-plane/store/sqlite/store.js");
  const child = spawn(
    process.execPath,
    ["--input-type=module", "-e", script, moduleUrl, JSON.stringify(options)],
    {
      stdio: ["ignore", "ignore", "inherit"],
    },
  );
  const [code, signal] = (await once(child, "exit")) as [number | null, NodeJS.Signals | null];
  return { code, signal };
}

/** The schema version a store file is marked with, read without opening it as a store. */
function userVersion(path: string): number {
  const db = new Database(path);
  try {
    return (db.prepare("PRAGMA user_version").get([]) as { user_version: number }).user_version;
  } finally {
    db.close();
  }
}

storeSuite("sqlite", async () => {
  const dir = await mkdtemp(join(tmpdir(), "gatehouse-store-"));
  // A directory that does not exist yet: opening must create it.
  const path = join(dir, "data", "gatehouse.db");
  return {
    store: await SqliteStore.open({ path }),
    reopen: () => SqliteStore.open({ path }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});

describe("SqliteStore: files, processes and crashes", () => {
  async function inTempDir(work: (dir: string) => Promise<void>): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-store-"));
    try {
      await work(dir);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  function unavailableNaming(path: string) {
    return (error: unknown) =>
      isGatehouseError(error) && error.code === "GATE_STORE_UNAVAILABLE" && error.message.includes(path);
  }

  test("a path below a regular file is refused with the path named", () =>
    inTempDir(async (dir) => {
      const file = join(dir, "not-a-directory");
      await writeFile(file, "x");
      const path = join(file, "gatehouse.db");
      await assert.rejects(SqliteStore.open({ path }), unavailableNaming(path));
    }));

  test("a file that is not a SQLite database is refused with the path named", () =>
    inTempDir(async (dir) => {
      const path = join(dir, "gatehouse.db");
      await writeFile(path, "this is a configuration file, not a database\n".repeat(100));
      await assert.rejects(SqliteStore.open({ path }), unavailableNaming(path));
    }));

  test("opening an existing store again keeps its data (the schema is created only once)", () =>
    inTempDir(async (dir) => {
      const path = join(dir, "gatehouse.db");
      const first = await SqliteStore.open({ path });
      await first.appendEvents([
        { id: "x:0", sessionId: "s1", exchangeId: "x", at: 1, kind: "exchange.end", attrs: {}, body: null },
      ]);
      // A second process (the CLI, say) may open the file while the server has it open.
      const second = await SqliteStore.open({ path });
      assert.equal((await second.chainTail("s1")).count, 1);
      await second.close();
      await first.close();
    }));

  test("a file written by schema version 1 opens, and its agents may serve every connection", () =>
    inTempDir(async (dir) => {
      // Version 2 added each agent account's connection scope; accounts made before
      // it had none, so they keep serving every connection, as they did.
      const path = join(dir, "gatehouse.db");
      const first = await SqliteStore.open({ path });
      const agent = {
        id: "agent-1",
        name: "pool",
        tokenHash: "ab".repeat(32),
        createdAt: 1,
        revokedAt: null,
        lastSeenAt: null,
        connections: null,
      };
      await first.insertAgent(agent);
      await first.close();
      // The same file as version 1 left it: no connections column, private keys in the store.
      const raw = new Database(path);
      raw.exec(
        `ALTER TABLE agents DROP COLUMN connections;
         CREATE TABLE signing_keys (kid TEXT PRIMARY KEY NOT NULL, alg TEXT NOT NULL, public_jwk TEXT NOT NULL,
           created_at INTEGER NOT NULL, private_jwk TEXT NOT NULL);
         INSERT INTO signing_keys VALUES ('k1', 'EdDSA', '{}', 1, '{"d":"private"}');
         PRAGMA user_version = 1;`,
      );
      raw.close();

      const store = await SqliteStore.open({ path });
      try {
        assert.deepEqual(await store.findAgentByTokenHash(agent.tokenHash), agent);
        const scoped = { ...agent, id: "agent-2", tokenHash: "cd".repeat(32), connections: ["claude"] };
        await store.insertAgent(scoped);
        assert.deepEqual(await store.findAgentByTokenHash(scoped.tokenHash), scoped);
      } finally {
        await store.close();
      }
      assert.equal(userVersion(path), SCHEMA_VERSION, "the file is marked as the current version");
    }));

  test("signing keys kept in the store by older versions are dropped from it", () =>
    inTempDir(async (dir) => {
      // Version 4 trusts only the control plane's key file: a key in the store could be
      // replaced by whoever can write records, and records signed with it.
      const path = join(dir, "gatehouse.db");
      await (await SqliteStore.open({ path })).close();
      const raw = new Database(path);
      raw.exec(
        `CREATE TABLE signing_keys (kid TEXT PRIMARY KEY NOT NULL, alg TEXT NOT NULL, public_jwk TEXT NOT NULL,
           created_at INTEGER NOT NULL);
         INSERT INTO signing_keys VALUES ('k1', 'EdDSA', '{"kty":"OKP","crv":"Ed25519","x":"AAAA"}', 1);
         PRAGMA user_version = 3;`,
      );
      raw.close();

      await (await SqliteStore.open({ path })).close();
      const check = new Database(path);
      const tables = check.prepare("SELECT name FROM sqlite_schema WHERE name = 'signing_keys'").all([]);
      check.close();
      assert.deepEqual(tables, []);
    }));

  test("a file written by schema version 4 opens with its records, and gains the api_keys table", () =>
    inTempDir(async (dir) => {
      // Version 5 added API keys: a store kept from before must upgrade in place, keeping
      // its sessions and audit log, and take keys from then on.
      const path = join(dir, "gatehouse.db");
      const first = await SqliteStore.open({ path });
      const session = makeSession();
      const entry = makeAudit(session.createdAt);
      await first.insertSession(session);
      await first.appendAudit(entry);
      await first.close();
      // The same file as version 4 left it: no api_keys table or its indexes.
      const raw = new Database(path);
      raw.exec("DROP TABLE api_keys; PRAGMA user_version = 4;");
      raw.close();

      const store = await SqliteStore.open({ path });
      try {
        assert.deepEqual(await store.getSession(session.id), session);
        assert.deepEqual((await store.listAudit({ limit: 10 })).items, [entry]);
        const key = makeApiKey(session.createdAt);
        await store.insertApiKey(key);
        assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
        await assert.rejects(
          store.insertApiKey({ ...key, id: "k-2" }),
          (error: unknown) => isGatehouseError(error) && error.code === "GATE_INVALID_REQUEST",
          "the key hash is unique in an upgraded file too",
        );
      } finally {
        await store.close();
      }
      assert.equal(userVersion(path), SCHEMA_VERSION);
      const check = new Database(path);
      const indexes = check
        .prepare(
          "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'api_keys' ORDER BY name",
        )
        .all([]) as Array<{ name: string }>;
      check.close();
      assert.deepEqual(
        indexes.map((index) => index.name).filter((name) => !name.startsWith("sqlite_autoindex")),
        ["api_keys_by_hash", "api_keys_by_time"],
      );
    }));

  test("a file written by schema version 5 opens with its records, and gains approvals and policies", () =>
    inTempDir(async (dir) => {
      // Version 6 added approvals and REST-set policies: a store kept from before must
      // upgrade in place, keeping its sessions, audit log and API keys, and take both from then on.
      const path = join(dir, "gatehouse.db");
      const first = await SqliteStore.open({ path });
      const session = makeSession();
      const entry = makeAudit(session.createdAt);
      const key = makeApiKey(session.createdAt);
      await first.insertSession(session);
      await first.appendAudit(entry);
      await first.insertApiKey(key);
      await first.close();
      // The same file as version 5 left it: no approvals or policies tables, nor their indexes.
      const raw = new Database(path);
      raw.exec("DROP TABLE approvals; DROP TABLE policies; PRAGMA user_version = 5;");
      raw.close();

      const store = await SqliteStore.open({ path });
      try {
        assert.deepEqual(await store.getSession(session.id), session);
        assert.deepEqual((await store.listAudit({ limit: 10 })).items, [entry]);
        assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
        const approval = makeApproval(session.createdAt, { sessionId: session.id });
        assert.deepEqual(await store.insertApproval(approval), approval);
        const decision = {
          status: "denied",
          decidedAt: session.createdAt + 1,
          decidedBy: key.id,
          reason: "not in this pipeline",
        } as const;
        assert.deepEqual(await store.decideApproval(approval.id, decision), { ...approval, ...decision });
        assert.deepEqual((await store.listApprovals({ status: "denied", limit: 10 })).items, [
          { ...approval, ...decision },
        ]);
        const policy = makePolicy("ci-default");
        await store.putPolicy(policy);
        assert.deepEqual(await store.listPolicies(), [policy]);
      } finally {
        await store.close();
      }
      assert.equal(userVersion(path), SCHEMA_VERSION);
      const check = new Database(path);
      const indexes = check
        .prepare(
          "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'approvals' ORDER BY name",
        )
        .all([]) as Array<{ name: string }>;
      check.close();
      assert.deepEqual(
        indexes.map((index) => index.name).filter((name) => !name.startsWith("sqlite_autoindex")),
        ["approvals_by_status", "approvals_by_time", "approvals_pending_by_expiry"],
      );
    }));

  test("a file of a newer schema version is refused, with the path named, and left as it was", () =>
    inTempDir(async (dir) => {
      // An older release must not write into a layout it does not know.
      const path = join(dir, "gatehouse.db");
      await (await SqliteStore.open({ path })).close();
      const raw = new Database(path);
      raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1};`);
      raw.close();
      await assert.rejects(SqliteStore.open({ path }), unavailableNaming(path));
      assert.equal(userVersion(path), SCHEMA_VERSION + 1);
    }));

  test("a closed store refuses calls as unavailable", () =>
    inTempDir(async (dir) => {
      const path = join(dir, "gatehouse.db");
      const store = await SqliteStore.open({ path });
      await store.close();
      await store.close();
      await assert.rejects(store.ping(), unavailableNaming(path));
      await assert.rejects(store.chainTail("s1"), unavailableNaming(path));
    }));

  test("events acknowledged just before the process is killed are there when the store reopens", () =>
    inTempDir(async (dir) => {
      // The agent deletes acknowledged events from its spool, so a commit must
      // be on disk when appendEvents resolves, not at some later flush.
      const path = join(dir, "gatehouse.db");
      const exit = await appendInChild({ path, sessionId: "s1", writer: "w", batches: 5, crash: true });
      assert.equal(exit.signal, "SIGKILL");
      const store = await SqliteStore.open({ path });
      try {
        const events = await store.readEvents("s1", 0, 1000);
        assert.equal(events.length, 100);
        assert.equal(verifyChain(events).break, null);
      } finally {
        await store.close();
      }
    }));

  test("two processes appending to one session keep one unbroken chain", () =>
    inTempDir(async (dir) => {
      // A second process on the same file (another control plane, or the CLI)
      // must not read a stale chain tail and fork the chain.
      const path = join(dir, "gatehouse.db");
      const writers = await Promise.all(
        ["a", "b", "c"].map((writer) =>
          appendInChild({ path, sessionId: "s1", writer, batches: 30, crash: false }),
        ),
      );
      assert.deepEqual(
        writers.map((w) => w.code),
        [0, 0, 0],
      );
      const store = await SqliteStore.open({ path });
      try {
        const events = await store.readEvents("s1", 0, 10_000);
        assert.equal(events.length, 3 * 30 * 20);
        assert.deepEqual(
          events.map((e) => e.seq),
          events.map((_, i) => i + 1),
        );
        assert.equal(verifyChain(events).break, null);
      } finally {
        await store.close();
      }
    }));
});
