import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { MONGO_SCHEMA_VERSION } from "@gatehouse/control-plane/store/mongo/schema.js";
import { MongoStore } from "@gatehouse/control-plane/store/mongo/store.js";
import { isGatehouseError } from "@gatehouse/proto/errors";
import { MongoClient } from "mongodb";
import { type MongoServer, startMongoServer } from "../support/mongo-server.js";
import { makeApiKey, makeApproval, makePolicy, makeSession, storeSuite } from "./store-suite.js";

// One server for the file (FerretDB, or MONGODB_URI); each test gets a database of its own.
let server: MongoServer;
before(async () => {
  server = await startMongoServer();
});
after(() => server.stop());

storeSuite("mongodb", async () => {
  const database = server.uniqueDatabase();
  const open = () => MongoStore.open({ uri: server.uri, database });
  return { store: await open(), reopen: open, cleanup: () => server.dropDatabase(database) };
});

describe("MongoStore: connection strings and unreachable servers", () => {
  function refused(code: string, ...mustInclude: string[]) {
    return (error: unknown) => {
      assert.ok(isGatehouseError(error), String(error));
      assert.equal(error.code, code);
      for (const text of mustInclude) assert.ok(error.message.includes(text), error.message);
      assert.ok(!error.message.includes("s3cret-pw"), `the password leaked: ${error.message}`);
      return true;
    };
  }

  test("a connection string the driver cannot parse is a config error naming it, password redacted", async () => {
    await assert.rejects(
      MongoStore.open({ uri: "mongodb://ops:s3cret-pw@db.example:27017/?notAnOption=1&w=", database: "gh" }),
      refused("GATE_CONFIG_INVALID", "mongodb://ops:***@db.example:27017"),
    );
  });

  test("a server that does not answer fails with the address, password redacted, and what to check", async () => {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    await assert.rejects(
      MongoStore.open({
        uri: "mongodb://ops:s3cret-pw@127.0.0.1:1/?directConnection=true",
        database: "gh",
        serverSelectionTimeoutMs: 500,
      }),
      refused("GATE_STORE_UNAVAILABLE", "mongodb://ops:***@127.0.0.1:1", "check that the server is running"),
    );
  });

  test("a database name the server would refuse is a config error before any connection", async () => {
    await assert.rejects(
      MongoStore.open({ uri: server.uri, database: "gate house/records" }),
      refused("GATE_CONFIG_INVALID", "gate house/records"),
    );
  });

  test("a store whose server went away answers unavailable, naming the server", async () => {
    const database = server.uniqueDatabase();
    const store = await MongoStore.open({ uri: server.uri, database, serverSelectionTimeoutMs: 500 });
    await store.close();
    await assert.rejects(store.ping(), refused("GATE_STORE_UNAVAILABLE"));
    await server.dropDatabase(database);
  });
});

describe("MongoStore: schema versions", () => {
  /** Runs `work` with a driver client of the test's own, as an operator's shell would reach the database. */
  async function withClient(work: (client: MongoClient) => Promise<void>): Promise<void> {
    const client = new MongoClient(server.uri);
    try {
      await work(client);
    } finally {
      await client.close();
    }
  }

  const meta = (client: MongoClient, database: string) =>
    client.db(database).collection<{ _id: string; value: number }>("meta");
  const schemaVersion = (client: MongoClient, database: string) =>
    meta(client, database).findOne({ _id: "schema_version" });
  const setSchemaVersion = (client: MongoClient, database: string, value: number) =>
    meta(client, database).updateOne({ _id: "schema_version" }, { $set: { value } });

  test("a database of schema version 1 opens, gains the api_keys indexes, and takes keys", async () => {
    // Version 2 added API keys: a database kept from before upgrades in place when a store opens it.
    const database = server.uniqueDatabase();
    await (await MongoStore.open({ uri: server.uri, database })).close();
    await withClient(async (client) => {
      await client.db(database).collection("api_keys").drop();
      await setSchemaVersion(client, database, 1);
    });
    const store = await MongoStore.open({ uri: server.uri, database });
    try {
      const key = makeApiKey(Date.now());
      await store.insertApiKey(key);
      assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
      await withClient(async (client) => {
        const indexes = await client.db(database).collection("api_keys").listIndexes().toArray();
        const byName = new Map(indexes.map((index) => [index.name, index]));
        assert.deepEqual(byName.get("api_keys_by_hash")?.key, { keyHash: 1 });
        assert.equal(byName.get("api_keys_by_hash")?.unique, true);
        assert.deepEqual(byName.get("api_keys_by_time")?.key, { createdAt: -1, _id: -1 });
        assert.equal((await schemaVersion(client, database))?.value, MONGO_SCHEMA_VERSION);
      });
    } finally {
      await store.close();
      await server.dropDatabase(database);
    }
  });

  test("a database of schema version 2 opens with its records, gains the approvals indexes, and takes approvals", async () => {
    // Version 3 added approvals and REST-set policies: a database kept from before upgrades in
    // place when a store opens it, keeping its sessions and API keys.
    const database = server.uniqueDatabase();
    const first = await MongoStore.open({ uri: server.uri, database });
    const session = makeSession();
    const key = makeApiKey(session.createdAt);
    await first.insertSession(session);
    await first.insertApiKey(key);
    await first.close();
    await withClient(async (client) => {
      await client.db(database).collection("approvals").drop();
      await setSchemaVersion(client, database, 2);
    });
    const store = await MongoStore.open({ uri: server.uri, database });
    try {
      assert.deepEqual(await store.getSession(session.id), session);
      assert.deepEqual(await store.findApiKeyByHash(key.keyHash), key);
      const approval = makeApproval(session.createdAt, { sessionId: session.id });
      assert.deepEqual(await store.insertApproval(approval), approval);
      const decision = {
        status: "approved",
        decidedAt: session.createdAt + 1,
        decidedBy: key.id,
        reason: "checked",
      } as const;
      assert.deepEqual(await store.decideApproval(approval.id, decision), { ...approval, ...decision });
      const policy = makePolicy("ci-default");
      await store.putPolicy(policy);
      assert.deepEqual(await store.listPolicies(), [policy]);
      await withClient(async (client) => {
        const indexes = await client.db(database).collection("approvals").listIndexes().toArray();
        const byName = new Map(indexes.map((index) => [index.name, index.key]));
        assert.deepEqual(byName.get("approvals_by_time"), { createdAt: -1, _id: -1 });
        assert.deepEqual(byName.get("approvals_by_status"), { status: 1, createdAt: -1, _id: -1 });
        assert.deepEqual(byName.get("approvals_by_expiry"), { status: 1, expiresAt: 1, _id: 1 });
        assert.equal((await schemaVersion(client, database))?.value, MONGO_SCHEMA_VERSION);
      });
    } finally {
      await store.close();
      await server.dropDatabase(database);
    }
  });

  test("a database of a newer schema version is refused and left as it was", async () => {
    // An older release must not write into a layout it does not know.
    const database = server.uniqueDatabase();
    await (await MongoStore.open({ uri: server.uri, database })).close();
    try {
      await withClient(async (client) => {
        await setSchemaVersion(client, database, MONGO_SCHEMA_VERSION + 1);
        await assert.rejects(
          MongoStore.open({ uri: server.uri, database }),
          (error: unknown) =>
            isGatehouseError(error) &&
            error.code === "GATE_STORE_UNAVAILABLE" &&
            error.message.includes("newer than this release understands"),
        );
        assert.equal((await schemaVersion(client, database))?.value, MONGO_SCHEMA_VERSION + 1);
      });
    } finally {
      await server.dropDatabase(database);
    }
  });
});
