import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { MongoStore } from "@gatehouse/control-plane/store/mongo/store.js";
import { isGatehouseError } from "@gatehouse/proto/errors";
import { type MongoServer, startMongoServer } from "../support/mongo-server.js";
import { storeSuite } from "./store-suite.js";

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
