/**
 * The agent's spool holds every prompt and response until the control plane
 * has them: only the agent's user may read it, and an agent whose spool has
 * failed says it is not ready (and records, so forwards, nothing more).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { chmod, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { agentConfigSchema, startAgent } from "@gatehouse/agent";
import { Registry } from "prom-client";
import { TestGatehouse, UPSTREAM_KEY_ENV } from "../support/gatehouse.js";

const message = JSON.stringify({
  model: "claude-sonnet-4-6",
  max_tokens: 8,
  messages: [{ role: "user", content: "a prompt only the agent may read" }],
});

describe("the agent's spool", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(() => gh.stop());

  /** An agent of its own on `dataDir`, linked to the harness's control plane. */
  const startOwnAgent = (dataDir: string, name: string) =>
    startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: gh.cp.grpcAddress },
        proxy: { listen: "127.0.0.1:0" },
      }),
      token: gh.agentToken,
      dataDir,
      env: { [UPSTREAM_KEY_ENV]: gh.fake.apiKey },
      log: (component) => gh.logs.root.child({ component, agent: name }),
      registry: new Registry(),
    });

  test("its directory is 0700 and its files 0600", async () => {
    // Regression: the spool was created with the process umask (typically 0755 and 0644), so any
    // local user could read the recorded prompts and responses.
    const session = await gh.openSession();
    await gh.anthropic(session).messages.create(JSON.parse(message));
    await gh.record(session.id);
    const dir = join(gh.dir, "spool");
    assert.equal((await stat(dir)).mode & 0o777, 0o700, "spool directory");
    const files = await readdir(dir);
    assert.ok(
      files.some((f) => f.endsWith(".seg")),
      files.join(", "),
    );
    assert.ok(files.includes("state.json"), files.join(", "));
    for (const file of files) {
      assert.equal((await stat(join(dir, file))).mode & 0o777, 0o600, file);
    }
  });

  test("data and spool directories made earlier with looser modes are 0700 once the agent starts", async () => {
    // Regression: mkdir sets a mode only on what it creates, so directories made before (by hand,
    // by an older agent, by the umask) stayed readable by every local user.
    const dataDir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
    try {
      await mkdir(join(dataDir, "spool"));
      for (const dir of [dataDir, join(dataDir, "spool")]) await chmod(dir, 0o755);
      const agent = await startOwnAgent(dataDir, "narrowed");
      await agent.stop(1000);
      assert.equal((await stat(dataDir)).mode & 0o777, 0o700, "data directory");
      assert.equal((await stat(join(dataDir, "spool"))).mode & 0o777, 0o700, "spool directory");
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  test("a spool that cannot write makes /readyz 503 with the reason, and requests are refused", async () => {
    // Regression: a failed spool was only logged; /readyz still said ready, so a load balancer
    // kept sending traffic to an agent that could no longer record it.
    const dataDir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
    const agent = await startOwnAgent(dataDir, "spool-fails");
    try {
      await agent.link.whenState("ready");
      assert.equal((await fetch(`${agent.proxyUrl}/readyz`)).status, 200);

      // Its first write (a new segment, or its state) now has nowhere to go.
      await rm(join(dataDir, "spool"), { recursive: true });
      const failed = once(agent.spool, "error");
      const session = await gh.openSession();
      const proxyUrl = `${agent.proxyUrl}/c/claude`;
      const post = () =>
        fetch(`${proxyUrl}/v1/messages`, {
          method: "POST",
          headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
          body: message,
        });
      await (await post()).arrayBuffer();
      await failed;

      const ready = await fetch(`${agent.proxyUrl}/readyz`);
      assert.equal(ready.status, 503);
      const body = (await ready.json()) as { status: string; reason: string };
      assert.equal(body.status, "not ready");
      assert.match(body.reason, /the spool failed, so exchanges cannot be recorded: .*could not/);

      const before = gh.fake.requests.length;
      const refused = await post();
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("x-gatehouse-error"), "GATE_NOT_READY");
      await refused.arrayBuffer();
      assert.equal(gh.fake.requests.length, before, "an exchange that cannot be recorded is not forwarded");
    } finally {
      // Stopping reports the spool's failure; everything else is still closed.
      await assert.rejects(agent.stop(1000), { code: "GATE_NOT_READY" });
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
