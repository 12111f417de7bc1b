/**
 * The canary: a credential held in Vault (the Vault HTTP API double) is used for
 * a whole run — JSON and streamed exchanges, a Vault outage, permission denied,
 * a session closed — and then everything Gatehouse produced is searched for it:
 * every answer the runner got, every REST answer (sessions, events, audit, agents,
 * API keys, metrics of both halves), every log line at trace level, and every file
 * under the data directory (the SQLite store, the spool, the keys). The only place
 * it may appear is the upstream's side of the request.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import type { OpenedSession } from "@gatehouse/sdk";
import { type FakeAnthropic, startFakeAnthropic } from "../support/fake-anthropic.js";
import { TestGatehouse } from "../support/gatehouse.js";
import { startVaultDouble, type VaultDouble } from "../support/vault-double.js";

const CANARY = `sk-ant-api03-canary-${randomBytes(24).toString("hex")}`;
const ROLE_ID = "canary-role";
const SECRET_ID = `approle-${randomBytes(8).toString("hex")}`;

/**
 * The forms the canary could leak in: as it is, base64 (Basic auth), either half of it;
 * and the agent's own Vault secrets: its AppRole secret id.
 */
const FORMS = [
  CANARY,
  Buffer.from(CANARY).toString("base64"),
  Buffer.from(`gatehouse:${CANARY}`).toString("base64"),
  CANARY.slice(0, 40),
  CANARY.slice(-40),
  SECRET_ID,
];
/** Vault service tokens (`hvs.` and a base62 body), which the agent holds and must not show either. */
const VAULT_TOKEN = /hvs\.[A-Za-z0-9]{20}/;

const message = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hi" }],
};

let upstream: FakeAnthropic;
let vault: VaultDouble;
let gh: TestGatehouse;
let dir: string;
/** Everything the runner and an auditor saw, as text. */
const seen: string[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "gatehouse-canary-"));
  const secretIdFile = join(dir, "secret-id");
  await writeFile(secretIdFile, SECRET_ID, { mode: 0o600 });
  upstream = await startFakeAnthropic({ apiKey: CANARY });
  vault = await startVaultDouble();
  vault.writeKvV2("secret", "anthropic", { api_key: CANARY });
  vault.writeKvV2("secret", "forbidden", { api_key: CANARY });
  vault.addAppRole({ name: "agent", roleId: ROLE_ID, secretId: SECRET_ID, paths: ["secret/data/anthropic"] });
  gh = await TestGatehouse.start({
    logLevel: "trace",
    connections: [
      {
        name: "vaulted",
        type: "anthropic",
        upstream: upstream.url,
        credential: { vault: { path: "secret/data/anthropic", key: "api_key" } },
      },
      {
        name: "vaulted-basic",
        type: "anthropic",
        upstream: upstream.url,
        credential: {
          vault: { path: "secret/data/anthropic", key: "api_key" },
          scheme: "basic",
          username: "gatehouse",
        },
      },
      {
        name: "forbidden",
        type: "anthropic",
        upstream: upstream.url,
        credential: { vault: { path: "secret/data/forbidden", key: "api_key" } },
      },
    ],
    agent: {
      vault: {
        address: vault.url,
        auth: { approle: { roleId: ROLE_ID, secretIdFile } },
        // Read for every request, so the outage below meets an empty cache.
        cacheSeconds: 0,
        staleIfErrorSeconds: 0,
      },
    },
  });
});
after(async () => {
  await gh?.stop();
  await vault?.close();
  await upstream?.close();
  await rm(dir, { recursive: true, force: true });
});

/** A request through the agent, its answer kept whatever it was. */
async function exchange(session: OpenedSession, body: object): Promise<number> {
  const res = await fetch(`${session.proxyUrl}/v1/messages`, {
    method: "POST",
    headers: {
      "x-api-key": session.token,
      "content-type": "application/json",
      "anthropic-version": "2023-06-01",
    },
    body: JSON.stringify(body),
  });
  seen.push(JSON.stringify([...res.headers]), await res.text());
  return res.status;
}

async function restText(path: string): Promise<string> {
  const res = await fetch(`${gh.cp.httpUrl}${path}`, {
    headers: { authorization: `Bearer ${gh.adminToken}` },
  });
  return res.text();
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

test("the Vault credential is used upstream and appears nowhere else", { timeout: 90_000 }, async () => {
  const sessions: OpenedSession[] = [];
  const vaulted = await gh.openSession("vaulted");
  sessions.push(vaulted);
  assert.equal(await exchange(vaulted, message), 200);
  assert.equal(await exchange(vaulted, { ...message, stream: true }), 200);
  // Basic auth carries it base64-encoded (the Anthropic double refuses Basic: its 401 is recorded too).
  const basic = await gh.openSession("vaulted-basic");
  sessions.push(basic);
  assert.equal(await exchange(basic, message), 401);
  // Permission denied at Vault, then Vault down: the runner gets 503s saying why.
  const forbidden = await gh.openSession("forbidden");
  sessions.push(forbidden);
  assert.equal(await exchange(forbidden, message), 503);
  vault.setAvailable(false);
  assert.equal(await exchange(sessions[0] as OpenedSession, message), 503);
  vault.setAvailable(true);
  await gh.admin.closeSession((sessions[0] as OpenedSession).id);

  // The canary was really used: upstream got it, as x-api-key and inside Basic auth.
  const sent = upstream.requests.map((r) => JSON.stringify(r.headers)).join("\n");
  assert.ok(sent.includes(CANARY), "the upstream never received the Vault credential");
  assert.ok(
    sent.includes(Buffer.from(`gatehouse:${CANARY}`).toString("base64")),
    "Basic auth did not carry it",
  );

  await gh.agent.link.whenDrained();
  for (const session of sessions) {
    seen.push(
      await restText(`/v1/sessions/${session.id}`),
      await restText(`/v1/sessions/${session.id}/events`),
    );
  }
  for (const path of ["/v1/sessions", "/v1/audit", "/v1/agents", "/v1/api-keys", "/metrics", "/readyz"]) {
    seen.push(await restText(path));
  }
  const agentOps = new URL((sessions[0] as OpenedSession).proxyUrl).origin;
  for (const path of ["/metrics", "/readyz", "/healthz"])
    seen.push(await (await fetch(`${agentOps}${path}`)).text());

  const places: Array<[string, string]> = [
    ["what the runner and REST readers saw", seen.join("\n")],
    ["the logs (trace level)", gh.logs.lines.join("")],
  ];
  // The agent stops first, so the spool is not rewriting its files while they are read.
  await gh.agent.stop(1000);
  for (const file of await filesUnder(gh.dir)) {
    // A file replaced between listing and reading (the key file's upkeep) is read under its final name.
    const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT") return null;
      throw error;
    });
    if (bytes) places.push([file, bytes.toString("latin1")]);
  }
  // The search covers the spool's files too (the logger above keeps every level, trace and up).
  assert.ok(
    places.some(([where]) => where.includes("spool")),
    "the spool was not searched",
  );
  for (const [where, text] of places) {
    for (const form of FORMS) assert.ok(!text.includes(form), `the credential leaked into ${where}`);
    assert.ok(!VAULT_TOKEN.test(text), `a Vault token leaked into ${where}`);
  }
  // The log does say why the credential was unavailable (without the value).
  assert.ok(
    gh.logs.lines.some((l) => l.includes("permission denied") && l.includes("secret/data/forbidden")),
  );
});
