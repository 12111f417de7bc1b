/**
 * The `gatehouse` command as users run it: `up` from a config file, `exec`
 * running a tool (a script on the real Anthropic SDK, and the real Claude Code
 * CLI) through a session, `sessions list|show` reading the records back, and
 * the split deployment (`control-plane`, `agents create`, `agent`).
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import Database from "libsql";
import { CliServer, GATEHOUSE_BIN, gatehouse } from "../support/cli.js";
import { type FakeAnthropic, startFakeAnthropic } from "../support/fake-anthropic.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const CLAUDE = join(REPO, "node_modules/.bin/claude");

/** A runner-side script: the real SDK, configured only by the environment `exec` sets. */
const RUNNER_SCRIPT = `
import Anthropic from "@anthropic-ai/sdk";
const client = new Anthropic({ maxRetries: 0 });
const message = await client.messages.create({
  model: "claude-sonnet-4-6", max_tokens: 32, messages: [{ role: "user", content: "hello from exec" }],
});
console.log(message.content[0].text);
console.log("real key visible:", Boolean(process.env.ANTHROPIC_API_KEY));
console.log("gatehouse keys visible:", Object.keys(process.env).filter((k) => /^GATEHOUSE_.*(TOKEN|KEY)$/.test(k)).join(",") || "none");
process.exit(3);
`;

function configYaml(fake: FakeAnthropic, extra = ""): string {
  return `connections:
  - name: claude
    type: anthropic
    upstream: ${fake.url}
    credential: { env: UPSTREAM_KEY }
log:
  level: warn
${extra}`;
}

describe("gatehouse up, exec and sessions", () => {
  let dir: string;
  let fake: FakeAnthropic;
  let server: CliServer;
  let url: string;
  const data = () => join(dir, "data");
  const upArgs = () => [
    "up",
    "--config",
    join(dir, "gatehouse.yaml"),
    "--data",
    data(),
    "--http",
    "127.0.0.1:0",
    "--grpc",
    "127.0.0.1:0",
    "--proxy",
    "127.0.0.1:0",
  ];
  const env = () => ({
    UPSTREAM_KEY: fake.apiKey,
    GATEHOUSE_ADMIN_TOKEN: undefined,
    ANTHROPIC_API_KEY: "sk-ant-should-be-withheld",
  });
  const client = (args: string[]) =>
    gatehouse(["--url", url, "--data", data(), ...args], { cwd: REPO, env: env() });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-cli-"));
    fake = await startFakeAnthropic();
    await writeFile(join(dir, "gatehouse.yaml"), configYaml(fake));
    server = CliServer.start(upArgs(), { cwd: dir, env: env() });
    url = (await server.waitFor(/REST API\s+(\S+)/))[1] ?? "";
    await server.waitFor(/Gatehouse is up/);
  });
  after(async () => {
    await server.stop();
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("exec runs a tool through a session: it gets the proxy and a token, never the key", async () => {
    const ran = await client([
      "exec",
      "--connection",
      "claude",
      "--label",
      "run=42",
      "--",
      process.execPath,
      "--input-type=module",
      "-e",
      RUNNER_SCRIPT,
    ]);
    assert.equal(ran.code, 3, `exec exits with the tool's status\n${ran.stderr}`);
    assert.match(ran.stdout, /echo: hello from exec/);
    assert.match(ran.stdout, /real key visible: false/);
    const upstream = fake.requests.at(-1);
    assert.equal(upstream?.headers["x-api-key"], fake.apiKey);

    const list = await client(["sessions", "list", "--json"]);
    const { items } = JSON.parse(list.stdout) as {
      items: Array<{ id: string; status: string; labels: object }>;
    };
    assert.equal(items.length, 1);
    assert.equal(items[0]?.status, "closed", "exec closes the session when the tool exits");
    assert.deepEqual(items[0]?.labels, { run: "42" });

    const show = await client(["sessions", "show", items[0]?.id ?? ""]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /POST \/v1\/messages → 200 completed/);
    assert.match(show.stdout, /prompt {2}hello from exec/);
    assert.match(show.stdout, /answer {2}echo: hello from exec/);
    assert.match(show.stdout, /Sealed {6}\d+ events/);
  });

  test("sessions verify proves a record intact, and finds an event altered in the store", async () => {
    const { items } = JSON.parse((await client(["sessions", "list", "--json"])).stdout) as {
      items: Array<{ id: string; status: string }>;
    };
    const closed = items.find((s) => s.status === "closed");
    assert.ok(closed);
    const intact = await client(["sessions", "verify", closed.id]);
    assert.equal(intact.code, 0, intact.stderr);
    assert.match(intact.stdout, /Chain {7}\d+ events, unbroken/);
    assert.match(intact.stdout, /Seal {8}valid, covers every event; signed by key/);
    assert.match(intact.stdout, /record complete and unaltered/);

    // Someone with write access to the database edits what the model answered.
    const db = new Database(join(data(), "gatehouse.db"));
    db.prepare(
      "UPDATE events SET body = CAST('{\"forged\":true}' AS BLOB) WHERE session_id = ? AND kind = 'response.body'",
    ).run([closed.id]);
    db.close();
    const altered = await client(["sessions", "verify", closed.id]);
    assert.equal(altered.code, 1);
    assert.match(altered.stdout, /Chain {7}BROKEN at event \d+: event \d+ does not match its hash/);
    assert.match(altered.stdout, /NOT proven intact/);
  });

  test("the admin token, signing key and store up created are readable by their owner only", async () => {
    for (const file of ["admin-token", "signing-key.jwk", "gatehouse.db", "gatehouse.db-wal"]) {
      assert.equal((await stat(join(data(), file))).mode & 0o777, 0o600, file);
    }
    assert.equal((await stat(data())).mode & 0o777, 0o700);
    // The private key is not in the store: whoever can write records cannot re-sign them.
    const { keys } = JSON.parse(await readFile(join(data(), "signing-key.jwk"), "utf8")) as {
      keys: Array<{ d: string }>;
    };
    const d = keys[0]?.d ?? "";
    assert.ok(d.length > 40);
    for (const file of ["gatehouse.db", "gatehouse.db-wal"]) {
      assert.ok(!(await readFile(join(data(), file))).includes(d), `${file} holds no private key`);
    }
  });

  test("Claude Code runs through exec and its conversation is recorded", async () => {
    const home = join(dir, "claude-home");
    const ran = await gatehouse(
      [
        "exec",
        "--connection",
        "claude",
        "--url",
        url,
        "--data",
        data(),
        "--",
        CLAUDE,
        "-p",
        "say hello",
        "--output-format",
        "json",
      ],
      {
        cwd: dir,
        env: {
          ...env(),
          HOME: home,
          CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
          DISABLE_AUTOUPDATER: "1",
        },
      },
    );
    assert.equal(ran.code, 0, ran.stderr);
    const result = JSON.parse(ran.stdout) as { is_error: boolean; result: string };
    assert.equal(result.is_error, false);
    assert.match(result.result, /^echo: /);

    const upstream = fake.requests.at(-1);
    assert.match(upstream?.headers["user-agent"] ?? "", /claude-cli/);
    assert.match(
      upstream?.headers["anthropic-beta"] ?? "",
      /claude-code-/,
      "Claude Code's betas reach upstream",
    );

    const list = JSON.parse((await client(["sessions", "list", "--json", "--limit", "1"])).stdout) as {
      items: Array<{ id: string }>;
    };
    const show = JSON.parse(
      (await client(["sessions", "show", list.items[0]?.id ?? "", "--json"])).stdout,
    ) as {
      exchanges: Array<{ kind: string; outcome: string; request: { headers: Record<string, string> } }>;
    };
    const messages = show.exchanges.filter((x) => x.kind === "anthropic.messages");
    assert.ok(messages.length >= 1);
    assert.ok(messages.every((x) => x.outcome === "completed"));
    assert.match(messages[0]?.request.headers["user-agent"] ?? "", /claude-cli/);
  });

  test("records survive a restart of up (SIGTERM stops it cleanly)", async () => {
    const before = JSON.parse((await client(["sessions", "list", "--json"])).stdout) as { items: unknown[] };
    assert.equal(await server.stop("SIGTERM"), 0);
    server = CliServer.start(upArgs(), { cwd: dir, env: env() });
    url = (await server.waitFor(/REST API\s+(\S+)/))[1] ?? "";
    await server.waitFor(/Gatehouse is up/);
    const after = JSON.parse((await client(["sessions", "list", "--json"])).stdout) as { items: unknown[] };
    assert.deepEqual(after.items, before.items);
    // Seals made before the restart still verify with the keys published after it.
    const sealed = (after.items as Array<{ id: string; status: string }>).find((s) => s.status === "closed");
    assert.equal((await client(["sessions", "verify", sealed?.id ?? ""])).code, 0);
  });
});

describe("split deployment: gatehouse control-plane, agents create, agent", () => {
  let dir: string;
  let fake: FakeAnthropic;
  const servers: CliServer[] = [];
  const adminToken = "gak_split_deployment_test_token";
  let rest = "";

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-split-"));
    fake = await startFakeAnthropic();
  });
  after(async () => {
    for (const s of servers.reverse()) await s.stop();
    await fake.close();
    await rm(dir, { recursive: true, force: true });
  });

  test("an agent created over REST links with its token file and serves sessions", async () => {
    await writeFile(
      join(dir, "cp.yaml"),
      configYaml(fake, "http: { listen: 127.0.0.1:0 }\ngrpc: { listen: 127.0.0.1:0 }\n").replace(
        "level: warn",
        "level: info",
      ),
    );
    const cp = CliServer.start(
      ["control-plane", "--config", join(dir, "cp.yaml"), "--data", join(dir, "cp")],
      {
        env: { GATEHOUSE_ADMIN_TOKEN: adminToken },
      },
    );
    servers.push(cp);
    const [, restUrl, link] = await cp.waitFor(/"rest":"(http[^"]+)","agentLink":"([^"]+)"/);
    rest = restUrl ?? "";
    const env = { GATEHOUSE_ADMIN_TOKEN: adminToken, GATEHOUSE_URL: rest };

    const created = await gatehouse(["agents", "create", "edge-1", "--json"], { env });
    assert.equal(created.code, 0, created.stderr);
    const { token } = JSON.parse(created.stdout) as { token: string };
    assert.match(token, /^gat_/);
    await writeFile(join(dir, "agent-token"), token, { mode: 0o600 });
    await writeFile(
      join(dir, "agent.yaml"),
      `controlPlane:\n  address: ${link}\n  tokenFile: ${join(dir, "agent-token")}\nproxy:\n  listen: 127.0.0.1:0\nlog:\n  level: info\n`,
    );
    const agent = CliServer.start(
      ["agent", "--config", join(dir, "agent.yaml"), "--data", join(dir, "agent")],
      {
        env: { UPSTREAM_KEY: fake.apiKey },
      },
    );
    servers.push(agent);
    await agent.waitFor(/linked to the control plane/);

    const ran = await gatehouse(
      ["exec", "--connection", "claude", "--", process.execPath, "--input-type=module", "-e", RUNNER_SCRIPT],
      { cwd: REPO, env },
    );
    assert.equal(ran.code, 3, ran.stderr);
    assert.match(ran.stdout, /echo: hello from exec/);
    // The runner holds the admin key here; the tool it runs must not.
    assert.match(ran.stdout, /gatehouse keys visible: none/);
  });

  test("stopping exec stops the tool, closes the session, and exits with the tool's status", async () => {
    const env = { GATEHOUSE_ADMIN_TOKEN: adminToken, GATEHOUSE_URL: rest };
    const tool =
      "process.on('SIGTERM', () => process.exit(7)); console.log('tool ready'); setInterval(() => {}, 1000);";
    const child = spawn(
      process.execPath,
      [
        GATEHOUSE_BIN,
        "exec",
        "--connection",
        "claude",
        "--label",
        "case=signal",
        "--",
        process.execPath,
        "-e",
        tool,
      ],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = once(child, "exit");
    await new Promise<void>((resolve) =>
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("tool ready")) resolve();
      }),
    );
    child.kill("SIGTERM");
    const [code] = (await exited) as [number | null];
    assert.equal(code, 7);
    const list = await gatehouse(["sessions", "list", "--json"], { env });
    const { items } = JSON.parse(list.stdout) as {
      items: Array<{ status: string; labels: Record<string, string> }>;
    };
    assert.equal(items.find((s) => s.labels.case === "signal")?.status, "closed");
  });

  test("a Ctrl-C at a terminal reaches the tool once, not twice", async () => {
    // Regression: exec forwarded SIGINT although the terminal had already sent it to the
    // whole process group, and tools such as Claude Code quit on a second Ctrl-C.
    const env = { GATEHOUSE_ADMIN_TOKEN: adminToken, GATEHOUSE_URL: rest };
    const tool =
      "let n = 0; process.on('SIGINT', () => { n += 1; if (n === 1) setTimeout(() => { console.log('sigints ' + n); process.exit(5); }, 300); }); console.log('tool ready'); setInterval(() => {}, 1000);";
    const child = spawn(
      process.execPath,
      [GATEHOUSE_BIN, "exec", "--connection", "claude", "--", process.execPath, "-e", tool],
      { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], detached: true },
    );
    let stdout = "";
    const exited = once(child, "exit");
    await new Promise<void>((resolve) =>
      child.stdout.on("data", (d: Buffer) => {
        stdout += d;
        if (stdout.includes("tool ready")) resolve();
      }),
    );
    process.kill(-(child.pid ?? 0), "SIGINT"); // what a terminal does: the whole foreground group
    const [code] = (await exited) as [number | null];
    assert.equal(code, 5);
    assert.match(stdout, /sigints 1\n/);
  });

  test("config errors stop start-up with the key named", async () => {
    await writeFile(
      join(dir, "bad.yaml"),
      "connections:\n  - name: claude\n    type: anthropic\n    upstrem: https://x\n",
    );
    const bad = await gatehouse([
      "control-plane",
      "--config",
      join(dir, "bad.yaml"),
      "--data",
      join(dir, "bad"),
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /invalid configuration in .*bad\.yaml/);
    assert.match(bad.stderr, /Unrecognized key: "upstrem"/);
    assert.match(bad.stderr, /connections\[0\]/);

    const missing = await gatehouse(["up", "--config", join(dir, "nope.yaml")]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read configuration file .*nope\.yaml: ENOENT/);
  });

  test("a REST port already in use stops start-up, and the process exits instead of hanging", async () => {
    // Regression: the AgentLink server and the revocation poller, started before the
    // REST listener failed, kept running and held the process open.
    const taken = createServer();
    taken.listen(0, "127.0.0.1");
    await once(taken, "listening");
    const { port } = taken.address() as AddressInfo;
    try {
      const file = join(dir, "taken.yaml");
      await writeFile(
        file,
        `connections:\n  - { name: claude, type: anthropic, upstream: "https://api.anthropic.com", credential: { env: K } }\nhttp: { listen: "127.0.0.1:${port}" }\ngrpc: { listen: "127.0.0.1:0" }\n`,
      );
      const run = await gatehouse(["control-plane", "--config", file, "--data", join(dir, "taken")]);
      assert.notEqual(run.code, 0);
      assert.match(run.stderr, /EADDRINUSE/);
    } finally {
      taken.close();
    }
  });

  test("a MongoDB store that is misspelt or unreachable stops start-up, naming it without its password", async () => {
    const start = async (uri: string) => {
      const file = join(dir, "mongo.yaml");
      await writeFile(
        file,
        `connections:\n  - { name: claude, type: anthropic, upstream: "https://api.anthropic.com", credential: { env: K } }\nstore: { type: mongodb, uri: "${uri}" }\n`,
      );
      const run = await gatehouse(["control-plane", "--config", file, "--data", join(dir, "mongo")]);
      assert.ok(!run.stderr.includes("s3cret-pw"), `the password is never printed:\n${run.stderr}`);
      return run;
    };
    // Nothing listens on port 1: the connection is refused, and start-up gives up after the URI's own timeout.
    const down = await start(
      "mongodb://ops:s3cret-pw@127.0.0.1:1/?directConnection=true&serverSelectionTimeoutMS=300",
    );
    assert.notEqual(down.code, 0);
    assert.match(down.stderr, /GATE_STORE_UNAVAILABLE/);
    assert.match(down.stderr, /cannot reach MongoDB at mongodb:\/\/ops:\*\*\*@127\.0\.0\.1:1\//);
    assert.match(down.stderr, /check that the server is running/);

    const misspelt = await start("mongodb://ops:s3cret-pw@127.0.0.1:1/?directConnection=maybe");
    assert.notEqual(misspelt.code, 0);
    assert.match(misspelt.stderr, /GATE_CONFIG_INVALID/);
    assert.match(misspelt.stderr, /mongodb:\/\/ops:\*\*\*@127\.0\.0\.1:1/);

    const notMongo = await start("postgres://ops:s3cret-pw@db/gatehouse");
    assert.equal(notMongo.code, 2, "rejected by config validation");
    assert.match(notMongo.stderr, /store\.uri/);
  });
});
