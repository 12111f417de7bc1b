/**
 * Credentials from Vault, held only by the agent: the real agent, with the production
 * node-vault client, against the Vault HTTP API double over real HTTP, and the real
 * Anthropic SDK as the client. Time (Vault's TTLs, the agent's renewals and cache) is one
 * test clock that the tests move forward; nothing sleeps.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { agentConfigSchema, type RunningAgent, startAgent } from "@gatehouse/agent";
import type { Clock } from "@gatehouse/agent/clock.js";
import { isGatehouseError } from "@gatehouse/proto/errors";
import { Registry } from "prom-client";
import { type FakeAnthropic, startFakeAnthropic } from "../support/fake-anthropic.js";
import { type LogEntry, TestGatehouse } from "../support/gatehouse.js";
import { startVaultDouble, type VaultAppRole, type VaultDouble } from "../support/vault-double.js";

const request = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hi" }],
};

const ROLE_ID = "gatehouse-agent-role";
const SECRET_ID = "approle-secret-id-1";
const K8S_JWT = "k8s-service-account-jwt";
const CI_JWT = "ci-oidc-jwt";
const ADO_PAT = "ado-personal-access-token";

/** The agent's and the Vault double's clock: it moves only when a test moves it. */
class TestClock implements Clock {
  private at = Date.now();
  private tasks: { due: number; task: () => void }[] = [];

  readonly now = (): number => this.at;

  /** Tasks waiting for their time. */
  get pending(): number {
    return this.tasks.length;
  }

  after(ms: number, task: () => void): () => void {
    const entry = { due: this.at + ms, task };
    this.tasks.push(entry);
    return () => {
      this.tasks = this.tasks.filter((t) => t !== entry);
    };
  }

  /** Moves forward by `seconds`, running each task that falls due on the way, at its time. */
  advance(seconds: number): void {
    const end = this.at + seconds * 1000;
    for (;;) {
      const next = this.tasks.filter((t) => t.due <= end).sort((a, b) => a.due - b.due)[0];
      if (!next) break;
      this.tasks = this.tasks.filter((t) => t !== next);
      this.at = Math.max(this.at, next.due);
      next.task();
    }
    this.at = end;
  }
}

/** An error the agent answered, as the SDK saw it. */
interface Refusal {
  status: number | undefined;
  body: { type?: string; error?: { type?: string; message?: string } } | undefined;
}

describe("credentials from Vault", () => {
  let gh: TestGatehouse;
  let upstream: FakeAnthropic;
  let dir: string;
  let vault: VaultDouble | undefined;

  before(async () => {
    upstream = await startFakeAnthropic();
    dir = await mkdtemp(join(tmpdir(), "gatehouse-vault-"));
    const conn = (name: string, credential: Record<string, unknown>) => ({
      name,
      type: "anthropic",
      upstream: upstream.url,
      credential,
    });
    gh = await TestGatehouse.start({
      connections: [
        conn("kv2", { vault: { path: "secret/data/anthropic", key: "api_key" } }),
        conn("kv1", { vault: { path: "kv/anthropic", key: "api_key", kv: 1 } }),
        conn("bearer", { vault: { path: "secret/data/anthropic", key: "api_key" }, scheme: "bearer" }),
        conn("ado", {
          vault: { path: "secret/data/ado", key: "pat" },
          scheme: "basic",
          username: "gatehouse",
        }),
        conn("db", { vault: { path: "database/creds/ro", key: "password", dynamic: true } }),
        conn("db-nokey", { vault: { path: "database/creds/ro", key: "passwd", dynamic: true } }),
        // What secret/data/spare holds is up to each test.
        conn("spare", { vault: { path: "secret/data/spare", key: "api_key" } }),
      ],
    });
  });
  afterEach(async () => {
    // The agent first: it revokes its leases in Vault as it stops.
    await gh.agent.stop(1000);
    await vault?.close();
    vault = undefined;
    upstream.reply(null);
  });
  after(async () => {
    await gh.stop();
    await upstream.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** A Vault double on `clock` with the secrets, roles and files every test starts from. */
  async function startVault(clock: TestClock, options: { jwtMount?: string } = {}): Promise<VaultDouble> {
    vault = await startVaultDouble({ now: clock.now, ...options });
    vault.writeKvV2("secret", "anthropic", { api_key: upstream.apiKey });
    vault.writeKvV1("kv", "anthropic", { api_key: upstream.apiKey });
    vault.writeKvV2("secret", "ado", { pat: ADO_PAT });
    vault.addAppRole({ name: "gatehouse", roleId: ROLE_ID, secretId: SECRET_ID });
    vault.addKubernetesRole({ name: "gatehouse", jwts: [K8S_JWT] });
    vault.addJwtRole({ name: "gatehouse", jwts: [CI_JWT] });
    await writeFile(join(dir, "secret-id"), `${SECRET_ID}\n`);
    await writeFile(join(dir, "k8s-token"), K8S_JWT);
    await writeFile(join(dir, "ci-jwt"), CI_JWT);
    return vault;
  }

  const approle = () => ({ approle: { roleId: ROLE_ID, secretIdFile: join(dir, "secret-id") } });

  /**
   * Vault with a role whose tokens live 60 s (by default not renewable, so the agent logs in
   * again at 40 s) and a database role `ro`, and an agent logged in with that role.
   */
  async function startShortTokenAgent(
    clock: TestClock,
    options: { role?: Partial<VaultAppRole>; vault?: Record<string, unknown> } = {},
  ) {
    const double = await startVault(clock);
    const role = { renewable: false, ...options.role };
    double.addAppRole({ name: "short", roleId: "short-role", secretId: SECRET_ID, ttlSeconds: 60, ...role });
    double.addDatabaseRole({ name: "ro", ttlSeconds: 3600 });
    await useAgent(
      vaultConfig({ approle: { roleId: "short-role", secretIdFile: join(dir, "secret-id") } }, options.vault),
      clock,
    );
    return double;
  }

  /** The `startAgent` options of an agent linked to the harness's control plane. */
  function agentDeps(vaultConfig: Record<string, unknown> | undefined, clock: Clock, dataDir = gh.dir) {
    return {
      config: agentConfigSchema.parse({
        controlPlane: { address: gh.cp.grpcAddress },
        proxy: { listen: "127.0.0.1:0" },
        ...(vaultConfig ? { vault: vaultConfig } : {}),
      }),
      token: gh.agentToken,
      dataDir,
      env: {},
      // Debug lines too, whatever GATEHOUSE_TEST_LOG says: a test waits on one.
      log: (component: string) => gh.logs.root.child({ component }, { level: "debug" }),
      registry: new Registry(),
      clock,
    };
  }

  /** Replaces the harness's agent with one using `vaultConfig` and `clock`; resolves once it is linked. */
  async function useAgent(
    vaultConfig: Record<string, unknown> | undefined,
    clock: Clock,
  ): Promise<RunningAgent> {
    await gh.agent.stop(1000);
    gh.agent = await startAgent(agentDeps(vaultConfig, clock));
    await gh.agent.link.whenState("ready");
    return gh.agent;
  }

  function vaultConfig(auth: Record<string, unknown>, extra: Record<string, unknown> = {}) {
    if (!vault) throw new Error("start the Vault double first");
    return { address: vault.url, auth, ...extra };
  }

  async function ask(connection: string) {
    const session = await gh.openSession(connection);
    return { session, message: await gh.anthropic(session).messages.create(request) };
  }

  async function refused(connection: string): Promise<Refusal & { sessionId: string }> {
    const session = await gh.openSession(connection);
    const error = await gh
      .anthropic(session)
      .messages.create(request)
      .catch((e: unknown) => e);
    assert.ok(error instanceof Anthropic.APIError, String(error));
    return { status: error.status, body: error.error as Refusal["body"], sessionId: session.id };
  }

  /** A 503 in Anthropic's error shape saying the credential is unavailable, recorded as failed. */
  async function assertUnavailable(connection: string, reason: RegExp): Promise<void> {
    const { status, body, sessionId } = await refused(connection);
    assert.equal(status, 503);
    assert.equal(body?.type, "error");
    assert.equal(body?.error?.type, "api_error");
    assert.match(body?.error?.message ?? "", /GATE_CREDENTIAL_UNAVAILABLE/);
    assert.match(
      body?.error?.message ?? "",
      new RegExp(`credential for connection '${connection}' is unavailable`),
    );
    assert.match(body?.error?.message ?? "", reason);
    const [exchange] = (await gh.record(sessionId)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.status, 503);
    assert.equal(exchange?.error?.code, "GATE_CREDENTIAL_UNAVAILABLE");
  }

  /** Nothing logged holds the upstream key, the PAT, a login secret or a Vault token. */
  function assertLogsHoldNoSecret(): void {
    const logged = gh.logs.lines.join("");
    for (const secret of [upstream.apiKey, ADO_PAT, SECRET_ID, K8S_JWT, CI_JWT]) {
      assert.ok(!logged.includes(secret), "a secret value was logged");
    }
    assert.ok(!/hvs\.[A-Za-z0-9]{20}/.test(logged), "a Vault token was logged");
  }

  const logged = (msg: string, from: number) => gh.logs.waitFor((entry: LogEntry) => entry.msg === msg, from);

  /** Resolves once `msg` has been logged `times` times since line `from`. */
  async function loggedTimes(msg: string, times: number, from: number): Promise<void> {
    const count = () =>
      gh.logs.lines
        .slice(from)
        .join("")
        .split("\n")
        .filter((line) => line.includes(`"msg":${JSON.stringify(msg)}`)).length;
    while (count() < times) await gh.logs.waitFor(() => true, gh.logs.lines.length);
  }

  test("each login method logs in, and the credential from Vault reaches upstream as x-api-key", async () => {
    const clock = new TestClock();
    await startVault(clock, { jwtMount: "ci-jwt" });
    const tokenFile = join(dir, "vault-token");
    const methods: [Record<string, unknown>, string, string][] = [
      [approle(), "POST", "/v1/auth/approle/login"],
      [{ token: { tokenFile } }, "GET", "/v1/auth/token/lookup-self"],
      [
        { kubernetes: { role: "gatehouse", jwtFile: join(dir, "k8s-token") } },
        "POST",
        "/v1/auth/kubernetes/login",
      ],
      [
        { jwt: { role: "gatehouse", jwtFile: join(dir, "ci-jwt"), path: "ci-jwt" } },
        "POST",
        "/v1/auth/ci-jwt/login",
      ],
    ];
    for (const [auth, method, path] of methods) {
      await writeFile(tokenFile, vault?.issueToken({ paths: ["secret/data/*"] }) ?? "");
      await useAgent(vaultConfig(auth), clock);
      assert.equal(vault?.requestCount(method, path), 1, `${Object.keys(auth)[0]} logged in at start-up`);
      const received = upstream.nextRequest();
      const { message } = await ask("kv2");
      assert.equal(message.role, "assistant");
      const headers = (await received).headers;
      assert.equal(headers["x-api-key"], upstream.apiKey);
      assert.equal(headers.authorization, undefined, "the session token does not go upstream");
    }
    assertLogsHoldNoSecret();
  });

  test("KV v1 is read at data[key]; KV v2 at data.data[key]", async () => {
    const clock = new TestClock();
    await startVault(clock);
    await useAgent(vaultConfig(approle()), clock);
    assert.equal((await ask("kv1")).message.role, "assistant");
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.equal(vault?.requestCount("GET", "/v1/kv/anthropic"), 1);
    assert.equal(vault?.requestCount("GET", "/v1/secret/data/anthropic"), 1);
  });

  test("scheme bearer sends Authorization: Bearer; basic sends the configured username with the secret", async () => {
    const clock = new TestClock();
    await startVault(clock);
    await useAgent(vaultConfig(approle()), clock);
    let received = upstream.nextRequest();
    assert.equal((await ask("bearer")).message.role, "assistant");
    assert.equal((await received).headers.authorization, `Bearer ${upstream.apiKey}`);
    assert.equal((await received).headers["x-api-key"], undefined);

    // The fake upstream speaks the Anthropic API, which refuses Basic; what it received is the point.
    received = upstream.nextRequest();
    const { status } = await refused("ado");
    assert.equal(status, 401);
    const basic = Buffer.from(`gatehouse:${ADO_PAT}`).toString("base64");
    assert.equal((await received).headers.authorization, `Basic ${basic}`);
  });

  test("a rotated secret is used after cacheSeconds, without a restart", async () => {
    const clock = new TestClock();
    await startVault(clock);
    vault?.writeKvV2("secret", "anthropic", { api_key: "sk-ant-revoked-key" });
    await useAgent(vaultConfig(approle(), { cacheSeconds: 60 }), clock);
    assert.equal((await refused("kv2")).status, 401, "upstream refuses the old key");

    // The operator writes the new key as a new version.
    assert.equal(vault?.writeKvV2("secret", "anthropic", { api_key: upstream.apiKey }), 3);
    assert.equal((await refused("kv2")).status, 401, "within cacheSeconds, the held secret serves");
    assert.equal(vault?.requestCount("GET", "/v1/secret/data/anthropic"), 1);

    clock.advance(61);
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.equal(vault?.requestCount("GET", "/v1/secret/data/anthropic"), 2);
  });

  test("the Vault token is renewed before it expires, and replaced by a new login at its max TTL", async () => {
    const clock = new TestClock();
    const double = await startShortTokenAgent(clock, { role: { renewable: true, maxTtlSeconds: 100 } });
    const renewals = () => double.requestCount("POST", "/v1/auth/token/renew-self");
    const logins = () => double.requestCount("POST", "/v1/auth/approle/login");

    let from = gh.logs.lines.length;
    clock.advance(40); // 2/3 of the 60 s TTL
    await logged("renewed the Vault token", from);
    assert.equal(renewals(), 1);

    from = gh.logs.lines.length;
    clock.advance(40); // t=80: Vault caps the renewal at the 20 s left before the max TTL
    await logged("renewed the Vault token", from);
    assert.equal(renewals(), 2);
    assert.equal(logins(), 1);

    from = gh.logs.lines.length;
    clock.advance(14); // 2/3 of the 20 s left: a new login instead of a renewal
    await logged("logged in to Vault again", from);
    assert.equal(logins(), 2);
    assert.equal(renewals(), 2);

    clock.advance(10); // t=104: the first token has expired; the new one serves
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.equal(double.requestCount("GET", "/v1/secret/data/anthropic"), 1);
  });

  test("a renewal that fails while Vault is down keeps the token serving, and the login is retried", async () => {
    // Regression guard: a failed login must not leave the client without its still-valid token.
    const clock = new TestClock();
    const double = await startShortTokenAgent(clock, {
      role: { renewable: true },
      vault: { cacheSeconds: 0 },
    });
    await double.stop();
    const from = gh.logs.lines.length;
    clock.advance(40);
    const failed = await logged("could not log in to Vault; trying again in 30 s", from);
    assert.match(String(failed.reason), /^vault\.address: cannot reach Vault at .*ECONNREFUSED/);

    await double.start();
    assert.equal((await ask("kv2")).message.role, "assistant", "the first token, still valid, serves");
    assert.equal(double.requestCount("POST", "/v1/auth/approle/login"), 1);
    clock.advance(30);
    await logged("logged in to Vault again", from);
    assert.equal(double.requestCount("POST", "/v1/auth/approle/login"), 2);
  });

  test("a token that cannot be renewed is replaced by reading the token file again", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    const tokenFile = join(dir, "vault-token");
    const first = double.issueToken({ ttlSeconds: 60, renewable: false });
    await writeFile(tokenFile, `${first}\n`);
    await useAgent(vaultConfig({ token: { tokenFile } }, { cacheSeconds: 0 }), clock);
    assert.equal((await ask("kv2")).message.role, "assistant");

    // Whatever keeps the file current (a Vault Agent sink, say) writes a new token.
    const second = double.issueToken({ ttlSeconds: 3600, renewable: false });
    await writeFile(tokenFile, `${second}\n`);
    const from = gh.logs.lines.length;
    clock.advance(40);
    await logged("logged in to Vault again", from);
    assert.equal(double.requestCount("POST", "/v1/auth/token/renew-self"), 0, "not renewable: not tried");
    double.revokeToken(first);
    assert.equal((await ask("kv2")).message.role, "assistant", "the new token serves");
  });

  test("while Vault is down, a held secret serves up to staleIfErrorSeconds; after that, 503", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { cacheSeconds: 60, staleIfErrorSeconds: 300 }), clock);
    assert.equal((await ask("kv2")).message.role, "assistant");

    await double.stop();
    clock.advance(61);
    let from = gh.logs.lines.length;
    assert.equal((await ask("kv2")).message.role, "assistant", "served from what was read before");
    const stale = await logged("Vault cannot be reached; serving the credential read earlier", from);
    assert.match(String(stale.vaultError), /ECONNREFUSED/);

    clock.advance(300);
    from = gh.logs.lines.length;
    await assertUnavailable(
      "kv2",
      /reading KV v2 secret secret\/data\/anthropic from Vault failed \(.*ECONNREFUSED/,
    );
    const failed = await logged("could not read a credential from Vault", from);
    assert.equal(failed.connection, "kv2");
    assert.equal(failed.path, "secret/data/anthropic");
    assert.match(String(failed.vaultError), /ECONNREFUSED/);
    assertLogsHoldNoSecret();
  });

  test("Vault down with nothing held: 503 at once, with Vault's own words", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle()), clock);
    double.setAvailable(false);
    await assertUnavailable("kv2", /\(503: Vault is sealed\)/);
    assertLogsHoldNoSecret();
  });

  test("permission denied by the agent's policy: 503 naming the path and the policy, never served stale", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { cacheSeconds: 60 }), clock);
    assert.equal((await ask("kv2")).message.role, "assistant");
    double.setPolicy("gatehouse", ["secret/data/other"]);
    await assertUnavailable(
      "ado",
      /reading KV v2 secret secret\/data\/ado from Vault failed \(403: permission denied\); check that the agent's Vault policy allows reading secret\/data\/ado/,
    );
    // A 403 may be a revoked token: one new login told them apart, and no more follow at once.
    await assertUnavailable("ado", /403: permission denied/);
    assert.equal(double.requestCount("POST", "/v1/auth/approle/login"), 2);
    clock.advance(61);
    // A refusal is an answer about the secret, not an outage: what was held is not served.
    await assertUnavailable("kv2", /403: permission denied/);
    assertLogsHoldNoSecret();
  });

  test("concurrent requests for a secret share one Vault read", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    // cacheSeconds 0: every request reads Vault, unless a read is already under way.
    await useAgent(vaultConfig(approle(), { cacheSeconds: 0 }), clock);
    const from = gh.logs.lines.length;
    const release = double.hold();
    const sessions = await Promise.all([1, 2, 3, 4, 5].map(() => gh.openSession("kv2")));
    const answers = Promise.all(sessions.map((s) => gh.anthropic(s).messages.create(request)));
    await double.waitForRequests("GET", "/v1/secret/data/anthropic", 1);
    await loggedTimes("sharing a Vault read under way", 4, from);
    release();
    for (const message of await answers) assert.equal(message.role, "assistant");
    assert.equal(double.requestCount("GET", "/v1/secret/data/anthropic"), 1);
  });

  test("a dynamic secret's lease is renewed while the agent runs, and revoked when it stops", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    double.addDatabaseRole({ name: "ro", ttlSeconds: 60, maxTtlSeconds: 3600 });
    // deploy/vault/gatehouse-agent.hcl, for this role: revoking only its own leases.
    double.setPolicy("gatehouse", [
      "secret/data/*",
      "database/creds/ro",
      "sys/leases/revoke/database/creds/ro/*",
    ]);
    await useAgent(vaultConfig(approle()), clock);
    // The fake upstream accepts only its own key; what it received is the point here.
    let received = upstream.nextRequest();
    assert.equal((await refused("db")).status, 401);
    const password = (await received).headers["x-api-key"];
    assert.ok(password && password.length > 10);

    const from = gh.logs.lines.length;
    clock.advance(40);
    const renewed = await logged("renewed a Vault lease", from);
    const leaseId = String(renewed.lease);
    assert.match(leaseId, /^database\/creds\/ro\//);
    assert.equal(double.requestCount("PUT", "/v1/sys/leases/renew"), 1);
    clock.advance(30); // past the first 60 s: alive only because it was renewed
    assert.equal(double.lease(leaseId)?.live, true);

    received = upstream.nextRequest();
    await refused("db");
    assert.equal((await received).headers["x-api-key"], password, "the same lease's credential");
    assert.equal(double.requestCount("GET", "/v1/database/creds/ro"), 1);

    await gh.agent.stop(1000);
    // Regression: revoking with the lease id in the body needs a policy that may revoke any lease.
    assert.equal(double.requestCount("POST", `/v1/sys/leases/revoke/${leaseId}`), 1);
    assert.equal(double.lease(leaseId)?.live, false);
    assertLogsHoldNoSecret();
  });

  test("a dynamic secret without the key: 503 naming the key, its lease revoked at once, and not read again at once", async () => {
    // Regression: the key was checked before the lease was recorded, so every request took a
    // lease that was never revoked.
    const clock = new TestClock();
    const double = await startVault(clock);
    double.addDatabaseRole({ name: "ro", ttlSeconds: 3600 });
    await useAgent(vaultConfig(approle()), clock);
    for (let i = 0; i < 3; i++) {
      await assertUnavailable(
        "db-nokey",
        /no non-empty string field 'passwd' \(its fields: username, password\)/,
      );
    }
    assert.equal(double.requestCount("GET", "/v1/database/creds/ro"), 1);
    assert.deepEqual(
      double.leases.map((lease) => lease.live),
      [false],
    );
    clock.advance(6); // past STALE_RETRY_MS: read again
    await assertUnavailable("db-nokey", /'passwd'/);
    assert.equal(double.requestCount("GET", "/v1/database/creds/ro"), 2);
    assertLogsHoldNoSecret();
  });

  test("a dynamic secret is read again before the token that read it expires", async () => {
    // Regression: Vault revokes a token's leases when the token expires; after a new login the
    // agent went on serving the credential of the old token's lease.
    const clock = new TestClock();
    const double = await startShortTokenAgent(clock);
    let received = upstream.nextRequest();
    await refused("db");
    const first = (await received).headers["x-api-key"];
    const from = gh.logs.lines.length;
    clock.advance(40); // 2/3 of the token's TTL: a new login
    await logged("logged in to Vault again", from);
    clock.advance(25); // the first token, and with it its lease, has expired
    assert.equal(double.leases[0]?.live, false);

    received = upstream.nextRequest();
    await refused("db");
    assert.notEqual((await received).headers["x-api-key"], first);
    assert.equal(double.requestCount("GET", "/v1/database/creds/ro"), 2);
    assert.equal(double.leases[1]?.live, true);
  });

  test("a Vault token revoked in Vault is replaced by one new login at the next request", async () => {
    // Regression: a token revoked in Vault (or lost in a failover) was kept, and every request
    // got 503 until the renewal timer came.
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { cacheSeconds: 0 }), clock);
    assert.equal((await ask("kv2")).message.role, "assistant");
    for (const token of double.tokensOf("gatehouse")) double.revokeToken(token);
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.equal(double.requestCount("POST", "/v1/auth/approle/login"), 2);

    // With a token file, the file is read again.
    const tokenFile = join(dir, "vault-token");
    const revoked = double.issueToken();
    await writeFile(tokenFile, revoked);
    await useAgent(vaultConfig({ token: { tokenFile } }, { cacheSeconds: 0 }), clock);
    double.revokeToken(revoked);
    await writeFile(tokenFile, double.issueToken());
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.equal(double.requestCount("GET", "/v1/auth/token/lookup-self"), 2);
  });

  test("while a new login fails, requests go on with the token it was to replace", async () => {
    // Regression: requests that came during a login shared its failure, though the old token
    // was still valid.
    const clock = new TestClock();
    const double = await startShortTokenAgent(clock, { vault: { cacheSeconds: 0 } });
    await writeFile(join(dir, "secret-id"), "a-stale-secret-id\n");
    const release = double.hold();
    const from = gh.logs.lines.length;
    clock.advance(40); // 2/3 of the token's TTL: a new login, which Vault will refuse
    await double.waitForRequests("POST", "/v1/auth/approle/login", 2);
    const answer = ask("kv2");
    await logged("waiting for a Vault login under way", from);
    release();
    assert.equal((await answer).message.role, "assistant");
    await logged("could not log in to Vault; trying again in 30 s", from);
  });

  test("leases are revoked at stop also while a login is under way", async () => {
    // Regression: the revocation went out without a token while a login was under way.
    const clock = new TestClock();
    const double = await startShortTokenAgent(clock);
    await refused("db");
    const leaseId = double.leases[0]?.leaseId ?? "";
    const release = double.hold();
    const from = gh.logs.lines.length;
    clock.advance(40);
    await double.waitForRequests("POST", "/v1/auth/approle/login", 2);
    const stopped = gh.agent.stop(1000);
    await Promise.race([
      logged("waiting for a Vault login under way", from),
      double.waitForRequests("POST", `/v1/sys/leases/revoke/${leaseId}`),
    ]);
    release();
    await stopped;
    assert.equal(double.lease(leaseId)?.live, false);
  });

  test("a KV v2 secret whose latest version was deleted or destroyed: 503 saying so", async () => {
    // Regression: Vault's 404 for a deleted version has no error text: the message was "404: no error text".
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { cacheSeconds: 0 }), clock);
    double.writeKvV2("secret", "spare", { api_key: upstream.apiKey });
    double.deleteKvV2("secret", "spare");
    await assertUnavailable(
      "spare",
      /the latest version \(1\) of secret\/data\/spare was deleted at \d{4}-.*Z; undelete it or write a new version/,
    );
    double.writeKvV2("secret", "spare", { api_key: upstream.apiKey });
    double.destroyKvV2("secret", "spare");
    await assertUnavailable(
      "spare",
      /the latest version \(2\) of secret\/data\/spare was destroyed; write a new version/,
    );
  });

  test("a KV secret without the key, or with a value that is not a string: 503 naming the key, never the value", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { cacheSeconds: 0 }), clock);
    const canary = "sk-ant-canary-value";
    double.writeKvV2("secret", "spare", { apikey: canary });
    await assertUnavailable(
      "spare",
      /no non-empty string field 'api_key' \(its fields: apikey\); check credential\.vault\.key/,
    );
    double.writeKvV2("secret", "spare", { api_key: { value: canary } });
    const { body } = await refused("spare");
    assert.match(body?.error?.message ?? "", /no non-empty string field 'api_key' \(its fields: api_key\)/);
    assert.ok(!JSON.stringify(body).includes(canary));
    assert.ok(!gh.logs.lines.join("").includes(canary));
  });

  test("the configured namespace goes with every request to Vault", async () => {
    const clock = new TestClock();
    const double = await startVault(clock);
    await useAgent(vaultConfig(approle(), { namespace: "platform/ci" }), clock);
    assert.equal((await ask("kv2")).message.role, "assistant");
    assert.deepEqual(
      double.requests.map((r) => `${r.method} ${r.path} ${r.namespace}`),
      ["POST /v1/auth/approle/login platform/ci", "GET /v1/secret/data/anthropic platform/ci"],
    );
  });

  test("without a vault block, a Vault credential is refused at request time and warned of at config push", async () => {
    const from = gh.logs.lines.length;
    await useAgent(undefined, new TestClock());
    const warned = await logged(
      "these connections take their credential from Vault, but this agent has no `vault` configuration: their requests fail until one is added",
      from,
    );
    assert.deepEqual(warned.connections, ["kv2", "kv1", "bearer", "ado", "db", "db-nokey", "spare"]);
    await assertUnavailable(
      "kv2",
      /is in Vault \(secret\/data\/anthropic\), but this agent has no `vault` configuration/,
    );
  });

  describe("start-up", () => {
    test("a Vault that cannot be reached fails start-up, naming vault.address and the network error", async () => {
      const clock = new TestClock();
      const double = await startVault(clock);
      await double.stop();
      const error = await startAgent(agentDeps(vaultConfig(approle()), clock, dir)).catch((e: unknown) => e);
      assert.ok(isGatehouseError(error), String(error));
      assert.equal(error.code, "GATE_CONFIG_INVALID");
      assert.match(
        error.message,
        new RegExp(
          `^vault\\.address: cannot reach Vault at http://127\\.0\\.0\\.1:${double.port} \\(.*ECONNREFUSED.*\\); check the address and that Vault is running$`,
        ),
      );
    });

    test("a start-up step failing after the Vault login stops the Vault session", async () => {
      // Regression: only a listen failure stopped it; otherwise it went on renewing its token.
      const clock = new TestClock();
      await startVault(clock);
      const deps = agentDeps(vaultConfig(approle()), clock, dir);
      const file = join(dir, "not-a-dir");
      await writeFile(file, "");
      deps.config = { ...deps.config, spool: { ...deps.config.spool, dir: join(file, "spool") } };
      await assert.rejects(startAgent(deps), /ENOTDIR|EEXIST/);
      assert.equal(vault?.requestCount("POST", "/v1/auth/approle/login"), 1);
      assert.equal(clock.pending, 0, "nothing left scheduled");
    });

    test("a login Vault refuses fails start-up, naming the method, Vault's answer and what to check", async () => {
      const clock = new TestClock();
      await startVault(clock);
      await writeFile(join(dir, "secret-id"), "a-stale-secret-id\n");
      const error = await startAgent(agentDeps(vaultConfig(approle()), clock, dir)).catch((e: unknown) => e);
      assert.ok(isGatehouseError(error), String(error));
      assert.equal(error.code, "GATE_CONFIG_INVALID");
      assert.equal(
        error.message,
        "vault.auth.approle: Vault refused the login (400: invalid role or secret ID); check roleId and the secret id file",
      );
      assert.ok(!error.message.includes("a-stale-secret-id"));
    });
  });
});
