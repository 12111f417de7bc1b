/**
 * A real MongoDB-wire server for tests of the MongoDB store.
 *
 * With `MONGODB_URI` set, that server is used, with a fresh database per call
 * that `stop()` drops. Otherwise FerretDB v1.24 (a MongoDB-compatible server
 * whose SQLite handler needs nothing else installed) is started on a free
 * loopback port with its data in a temp dir, and `stop()` ends it and removes
 * the dir. The binary is `FERRETDB_BIN`, else `$(go env GOPATH)/bin/ferretdb`
 * (where `bash scripts/install-ferretdb.sh` puts it), else `ferretdb` on PATH.
 * Without any of them this throws: the MongoDB tests fail, never skip. A
 * FerretDB still running when the process exits is killed and its data removed.
 *
 * @see https://docs.ferretdb.io/v1.24/configuration/flags/
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { rmSync } from "node:fs";
import { access, constants, mkdtemp, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { MongoClient } from "mongodb";

export interface MongoServer {
  /** Connection string of the server. */
  uri: string;
  /** A database no other caller uses; tests may also make their own with {@link MongoServer.uniqueDatabase}. */
  database: string;
  /** Which server this is, for messages: `ferretdb <path>` or `MONGODB_URI`. */
  describe: string;
  /** Another database name no other caller uses (`<database>_<n>`), for a test of its own. */
  uniqueDatabase(): string;
  /** Drops a database made with {@link MongoServer.uniqueDatabase} (and only such). */
  dropDatabase(name: string): Promise<void>;
  /** Drops the databases this call made (MONGODB_URI), or ends FerretDB and removes its data. */
  stop(): Promise<void>;
}

/** How long FerretDB may take to accept a driver connection before the start counts as failed. */
const START_TIMEOUT_MS = 30_000;
/** How long FerretDB may take to exit after SIGTERM before it is killed. */
const STOP_TIMEOUT_MS = 5_000;
const STDERR_KEPT = 16 * 1024;

const INSTALL_HINT =
  "install FerretDB v1.24 with `bash scripts/install-ferretdb.sh` (it needs Go; the binary lands in $(go env GOPATH)/bin), " +
  "or set FERRETDB_BIN to a ferretdb binary, or set MONGODB_URI to a MongoDB server on which the tests may create and drop databases";

/** Starts (or, with MONGODB_URI, borrows) a server; see the module comment. */
export async function startMongoServer(): Promise<MongoServer> {
  const uri = process.env.MONGODB_URI;
  if (uri !== undefined && uri !== "") return borrowServer(uri);
  return startFerretDb(await findFerretDb());
}

function databaseNamer(): { database: string; next: () => string } {
  // Short enough for servers that cap names at 63 characters, with room for a suffix.
  const database = `gh_test_${randomBytes(6).toString("hex")}`;
  let n = 0;
  return { database, next: () => `${database}_${++n}` };
}

async function borrowServer(uri: string): Promise<MongoServer> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
  await client.connect();
  const names = databaseNamer();
  const made = new Set<string>([names.database]);
  return {
    uri,
    database: names.database,
    describe: "MONGODB_URI",
    uniqueDatabase: () => {
      const name = names.next();
      made.add(name);
      return name;
    },
    dropDatabase: async (name) => {
      if (!made.has(name)) throw new Error(`database ${name} was not made by this test server`);
      await client.db(name).dropDatabase();
      made.delete(name);
    },
    stop: async () => {
      try {
        for (const name of made) await client.db(name).dropDatabase();
      } finally {
        await client.close();
      }
    },
  };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await access(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function findFerretDb(): Promise<string> {
  const tried: string[] = [];
  const fromEnv = process.env.FERRETDB_BIN;
  if (fromEnv !== undefined && fromEnv !== "") {
    if (await isExecutable(fromEnv)) return fromEnv;
    throw new Error(`FERRETDB_BIN is ${fromEnv}, which is not an executable file; ${INSTALL_HINT}`);
  }
  try {
    const { stdout } = await promisify(execFile)("go", ["env", "GOPATH"]);
    for (const dir of stdout.trim().split(delimiter)) {
      if (dir === "") continue;
      const candidate = join(dir, "bin", "ferretdb");
      tried.push(candidate);
      if (await isExecutable(candidate)) return candidate;
    }
  } catch {
    tried.push("$(go env GOPATH)/bin/ferretdb (go is not installed)");
  }
  for (const dir of (process.env.PATH ?? "").split(delimiter)) {
    if (dir === "") continue;
    const candidate = join(dir, "ferretdb");
    if (await isExecutable(candidate)) return candidate;
  }
  tried.push("ferretdb on PATH");
  throw new Error(
    `the MongoDB store tests need a MongoDB-compatible server, and none was found (looked for ${tried.join(", ")}); ${INSTALL_HINT}`,
  );
}

/** A loopback port nothing listens on right now: bound and released at once. */
async function unusedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}

async function startFerretDb(bin: string): Promise<MongoServer> {
  const dir = await mkdtemp(join(tmpdir(), "gatehouse-ferretdb-"));
  try {
    // The free port is found by binding and releasing it, so another process can take it
    // in between; FerretDB then exits at once, and another port is tried.
    for (let attempt = 1; ; attempt++) {
      try {
        return await startFerretDbOn(bin, dir, await unusedPort());
      } catch (error) {
        if (attempt >= 3 || !(error instanceof PortTaken)) throw error;
      }
    }
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

class PortTaken extends Error {}

async function startFerretDbOn(bin: string, dir: string, port: number): Promise<MongoServer> {
  const child = spawn(
    bin,
    [
      "--handler=sqlite",
      `--sqlite-url=file:${dir}/`,
      `--listen-addr=127.0.0.1:${port}`,
      // "-" turns the debug HTTP listener (metrics, pprof) off; it would otherwise take port 8088.
      "--debug-addr=-",
      "--telemetry=disable",
      `--state-dir=${dir}`,
      "--log-level=warn",
    ],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (text: string) => {
    stderr = (stderr + text).slice(-STDERR_KEPT);
  });
  const exited = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    // "close", not "exit": by then all of stderr has been read, so its reason is there to see.
    child.once("close", (code, signal) => resolve([code, signal]));
    // Spawning failed (not executable, say): no exit follows, so report it as one.
    child.once("error", (error) => {
      stderr += `\n${String(error)}`;
      resolve([null, null]);
    });
  });
  const uri = `mongodb://127.0.0.1:${port}/`;

  // The driver retries server selection by itself (every 500 ms at most while it waits);
  // the start fails when FerretDB exits, or when it has not answered within the bound.
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: START_TIMEOUT_MS });
  const ready = client.db("admin").command({ ping: 1 });
  const outcome = await Promise.race([
    ready.then(
      () => ({ ok: true as const }),
      (error: unknown) => ({ ok: false as const, error }),
    ),
    exited.then(([code, signal]) => ({ ok: false as const, exit: { code, signal } })),
  ]);
  await client.close();
  if (!outcome.ok) {
    await stopChild(child, exited);
    const why =
      "exit" in outcome
        ? `exited (code ${String(outcome.exit.code)}, signal ${String(outcome.exit.signal)})`
        : `did not accept a connection within ${START_TIMEOUT_MS / 1000} s (${String(outcome.error)})`;
    const message = `FerretDB (${bin}) ${why} on 127.0.0.1:${port}; its stderr:\n${stderr || "(empty)"}`;
    throw /address already in use/i.test(stderr) ? new PortTaken(message) : new Error(message);
  }

  // A test file's process may end without stop() (a shared server, or --test-force-exit):
  // FerretDB must not outlive it, nor its data stay behind.
  const onExit = () => {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.once("exit", onExit);
  // Nor may it keep the process alive once the tests are done: a test file whose
  // harnesses share it never calls stop(), and ends when its tests do.
  child.unref();
  (child.stderr as Socket | null)?.unref();
  const names = databaseNamer();
  return {
    uri,
    database: names.database,
    describe: `ferretdb ${bin}`,
    uniqueDatabase: names.next,
    dropDatabase: async (name) => {
      const admin = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000 });
      try {
        await admin.db(name).dropDatabase();
      } finally {
        await admin.close();
      }
    },
    stop: async () => {
      process.off("exit", onExit);
      await stopChild(child, exited);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), STOP_TIMEOUT_MS);
  try {
    await exited;
  } finally {
    clearTimeout(timer);
  }
}
