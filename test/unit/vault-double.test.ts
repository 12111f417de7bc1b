// The Vault double stands in for Vault in every test of the agent's secrets path, so it is only
// worth its place if node-vault, the client the agent uses, cannot tell it from Vault: these tests
// drive the real client over HTTP and assert what it returns, and what it throws on each error.
import assert from "node:assert/strict";
import { afterEach, beforeEach, describe, test } from "node:test";
import vault from "node-vault";
import { startVaultDouble, type VaultDouble } from "../support/vault-double.js";

type VaultClient = ReturnType<typeof vault>;

interface AuthBlock {
  client_token: string;
  accessor: string;
  policies: string[];
  token_policies: string[];
  metadata: Record<string, string> | null;
  lease_duration: number;
  renewable: boolean;
}

interface AuthReply {
  auth: AuthBlock;
  warnings: string[] | null;
}

interface CredsReply {
  lease_id: string;
  renewable: boolean;
  lease_duration: number;
  data: { username: string; password: string };
}

interface LeaseReply {
  lease_id: string;
  renewable: boolean;
  lease_duration: number;
  warnings: string[] | null;
}

/** What node-vault's ApiResponseError carries: `message` is the first entry of `errors`. */
interface Refusal {
  message: string;
  statusCode: number;
  body: unknown;
}

const INVALID_TOKEN = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
const POLICY_DENIED = "1 error occurred:\n\t* permission denied\n\n";

/** Awaits a call that Vault must refuse and returns what node-vault made of the refusal. */
async function refusal(call: Promise<unknown>): Promise<Refusal> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof Error, "node-vault rejects with an Error");
    const { response } = error as Error & { response?: { statusCode: number; body: unknown } };
    assert.ok(response, `expected an API refusal, got: ${error.message}`);
    return { message: error.message, statusCode: response.statusCode, body: response.body };
  }
  return assert.fail("the call succeeded; the double should have refused it");
}

describe("Vault double, driven by node-vault", () => {
  let double: VaultDouble;
  let client: VaultClient;

  beforeEach(async () => {
    double = await startVaultDouble();
    client = vault({ endpoint: double.url, token: double.rootToken });
  });
  afterEach(async () => {
    await double.close();
  });

  describe("sys/health", () => {
    test("an unsealed double answers 200 with Vault's health fields", async () => {
      const health = await client.health();
      assert.equal(health.initialized, true);
      assert.equal(health.sealed, false);
      assert.equal(health.standby, false);
      assert.equal(typeof health.version, "string");
      assert.equal(health.server_time_utc, Math.floor(double.now() / 1000));
      const raw = await fetch(`${double.url}/v1/sys/health`);
      assert.equal(raw.status, 200);
    });

    test("sealed, it answers 503 with sealed: true, which node-vault returns rather than throws", async () => {
      double.setAvailable(false);
      const health = await client.health();
      assert.equal(health.sealed, true);
      assert.equal((await fetch(`${double.url}/v1/sys/health`)).status, 503);
      // The documented status-code override works too.
      assert.equal((await fetch(`${double.url}/v1/sys/health?sealedcode=200`)).status, 200);
    });
  });

  describe("AppRole login", () => {
    beforeEach(() => {
      double.addAppRole({
        name: "agent",
        roleId: "role-1234",
        secretId: "secret-5678",
        ttlSeconds: 600,
        maxTtlSeconds: 3600,
        policies: ["gatehouse-agent"],
      });
    });

    test("returns Vault's auth block and node-vault adopts the new token", async () => {
      const anonymous = vault({ endpoint: double.url });
      const reply: AuthReply = await anonymous.approleLogin({
        role_id: "role-1234",
        secret_id: "secret-5678",
      });
      assert.match(reply.auth.client_token, /^hvs\.[A-Za-z0-9]{24}$/);
      assert.equal(typeof reply.auth.accessor, "string");
      assert.deepEqual(reply.auth.policies, ["default", "gatehouse-agent"]);
      assert.deepEqual(reply.auth.token_policies, ["default", "gatehouse-agent"]);
      assert.deepEqual(reply.auth.metadata, { role_name: "agent" });
      assert.equal(reply.auth.lease_duration, 600);
      assert.equal(reply.auth.renewable, true);
      assert.equal(anonymous.token, reply.auth.client_token);
      assert.ok(double.tokenValid(reply.auth.client_token));
    });

    test("a wrong secret_id, an unknown role_id and a missing secret_id are 400s with Vault's texts", async () => {
      const anonymous = vault({ endpoint: double.url });
      const wrongSecret = await refusal(anonymous.approleLogin({ role_id: "role-1234", secret_id: "nope" }));
      assert.deepEqual(wrongSecret, {
        message: "invalid role or secret ID",
        statusCode: 400,
        body: { errors: ["invalid role or secret ID"] },
      });
      const unknownRole = await refusal(
        anonymous.approleLogin({ role_id: "nobody", secret_id: "secret-5678" }),
      );
      assert.equal(unknownRole.statusCode, 400);
      assert.equal(unknownRole.message, "invalid role or secret ID");
      const noSecret = await refusal(anonymous.approleLogin({ role_id: "role-1234" }));
      assert.deepEqual([noSecret.statusCode, noSecret.message], [400, "missing secret_id"]);
    });
  });

  describe("Kubernetes login", () => {
    beforeEach(() => {
      double.addKubernetesRole({ name: "gatehouse", jwts: ["sa-jwt"], ttlSeconds: 300 });
    });

    test("kubernetesLogin returns an auth block with the service-account metadata", async () => {
      const anonymous = vault({ endpoint: double.url });
      const reply: AuthReply = await anonymous.kubernetesLogin({
        mount_point: "kubernetes",
        role: "gatehouse",
        jwt: "sa-jwt",
      });
      assert.equal(reply.auth.lease_duration, 300);
      assert.equal(reply.auth.metadata?.role, "gatehouse");
      assert.equal(reply.auth.metadata?.service_account_namespace, "default");
      assert.equal(anonymous.token, reply.auth.client_token);
    });

    // Guards the agent's workaround: node-vault 0.12.0 renders kubernetesLogin's path from the call's
    // arguments only, so without mount_point it posts to /v1/auth//login, which no Vault serves
    // (nodevault/node-vault#300). The agent must always pass mount_point.
    test("node-vault's kubernetesLogin without mount_point misses the login path", async () => {
      const refused = await refusal(
        vault({ endpoint: double.url }).kubernetesLogin({ role: "gatehouse", jwt: "sa-jwt" }),
      );
      assert.equal(refused.statusCode, 403);
      assert.deepEqual(
        double.requests.map((r) => r.path),
        ["/v1/auth//login"],
      );
    });

    test("an unaccepted JWT is a bare 403 permission denied; an unknown role a 400", async () => {
      const anonymous = vault({ endpoint: double.url });
      const login = (role: string, jwt: string) =>
        anonymous.kubernetesLogin({ mount_point: "kubernetes", role, jwt });
      assert.deepEqual(await refusal(login("gatehouse", "forged")), {
        message: "permission denied",
        statusCode: 403,
        body: { errors: ["permission denied"] },
      });
      const unknown = await refusal(login("other", "sa-jwt"));
      assert.deepEqual([unknown.statusCode, unknown.message], [400, 'invalid role name "other"']);
    });
  });

  describe("JWT/OIDC login", () => {
    test("jwtLogin at the default mount, and request() at a custom one", async () => {
      double.addJwtRole({ name: "ci", jwts: ["id-token"], ttlSeconds: 120 });
      const reply: AuthReply = await vault({ endpoint: double.url }).jwtLogin({
        role: "ci",
        jwt: "id-token",
      });
      assert.equal(reply.auth.lease_duration, 120);
      assert.deepEqual(reply.auth.metadata, { role: "ci" });

      const custom = await startVaultDouble({ jwtMount: "github-actions" });
      try {
        custom.addJwtRole({ name: "ci", jwts: ["id-token"] });
        const viaMountPoint: AuthReply = await vault({ endpoint: custom.url }).jwtLogin({
          mount_point: "github-actions",
          role: "ci",
          jwt: "id-token",
        });
        assert.ok(custom.tokenValid(viaMountPoint.auth.client_token));
        const viaRequest: AuthReply = await vault({ endpoint: custom.url }).request({
          path: "/auth/github-actions/login",
          method: "POST",
          json: { role: "ci", jwt: "id-token" },
        });
        assert.ok(custom.tokenValid(viaRequest.auth.client_token));
        // The default mount is not there when the method is mounted elsewhere.
        const elsewhere = await refusal(
          vault({ endpoint: custom.url }).jwtLogin({ role: "ci", jwt: "id-token" }),
        );
        assert.equal(elsewhere.statusCode, 403);
      } finally {
        await custom.close();
      }
    });

    test("an unknown role and an unaccepted JWT are 400s with the plugin's texts", async () => {
      double.addJwtRole({ name: "ci", jwts: ["id-token"] });
      const anonymous = vault({ endpoint: double.url });
      const unknown = await refusal(anonymous.jwtLogin({ role: "deploy", jwt: "id-token" }));
      assert.deepEqual([unknown.statusCode, unknown.message], [400, 'role "deploy" could not be found']);
      const forged = await refusal(anonymous.jwtLogin({ role: "ci", jwt: "forged" }));
      assert.deepEqual(forged, {
        message: "no known key successfully validated the token signature",
        statusCode: 400,
        body: { errors: ["no known key successfully validated the token signature"] },
      });
    });
  });

  describe("token lifetime", () => {
    test("lookup-self reports the TTL as the clock moves, and a token past it is refused everywhere", async () => {
      const token = double.issueToken({ ttlSeconds: 60, maxTtlSeconds: 600 });
      const agent = vault({ endpoint: double.url, token });
      const fresh = await agent.tokenLookupSelf();
      assert.equal(fresh.data.ttl, 60);
      assert.equal(fresh.data.creation_ttl, 60);
      assert.equal(fresh.data.renewable, true);
      assert.equal(fresh.data.expire_time, new Date(double.now() + 60_000).toISOString());
      assert.deepEqual(fresh.data.policies, ["default"]);

      double.advance(45_000);
      assert.equal((await agent.tokenLookupSelf()).data.ttl, 15);

      double.advance(15_000);
      const expired = await refusal(agent.tokenLookupSelf());
      assert.deepEqual(expired, {
        message: INVALID_TOKEN,
        statusCode: 403,
        body: { errors: [INVALID_TOKEN] },
      });
      double.writeKvV2("secret", "app", { key: "v" });
      assert.equal((await refusal(agent.read("secret/data/app"))).statusCode, 403);
      assert.equal((await refusal(agent.tokenRenewSelf())).statusCode, 403);
    });

    test("renew-self extends the TTL, but never past the max TTL, with Vault's warning", async () => {
      const token = double.issueToken({ ttlSeconds: 60, maxTtlSeconds: 300 });
      const agent = vault({ endpoint: double.url, token });
      double.advance(50_000);
      const plain: AuthReply = await agent.tokenRenewSelf();
      assert.equal(plain.auth.lease_duration, 60, "no increment: the creation TTL again");
      assert.equal(plain.auth.client_token, token);
      assert.equal(plain.warnings, null);

      const capped: AuthReply = await agent.tokenRenewSelf({ increment: "1h" });
      assert.equal(capped.auth.lease_duration, 250);
      assert.deepEqual(capped.warnings, [
        'TTL of "1h" exceeded the effective max_ttl of "4m10s"; TTL value is capped accordingly',
      ]);
      const seconds: AuthReply = await agent.tokenRenewSelf({ increment: 30 });
      assert.equal(seconds.auth.lease_duration, 30);

      await agent.tokenRenewSelf({ increment: "1h" });
      double.advance(249_000);
      assert.equal((await agent.tokenLookupSelf()).data.ttl, 1);
      double.advance(1_000);
      assert.equal((await refusal(agent.tokenLookupSelf())).statusCode, 403, "dead at the max TTL");
    });

    test("a token that cannot be renewed gets 400 lease is not renewable", async () => {
      const root = await refusal(client.tokenRenewSelf());
      assert.deepEqual([root.statusCode, root.message], [400, "lease is not renewable"]);
      const fixed = vault({ endpoint: double.url, token: double.issueToken({ renewable: false }) });
      assert.equal((await refusal(fixed.tokenRenewSelf())).message, "lease is not renewable");
    });

    test("revokeToken makes every authenticated endpoint refuse the token", async () => {
      const token = double.issueToken();
      const agent = vault({ endpoint: double.url, token });
      await agent.tokenLookupSelf();
      assert.equal(double.revokeToken(token), true);
      assert.equal((await refusal(agent.tokenLookupSelf())).message, INVALID_TOKEN);
      assert.equal(
        (await refusal(vault({ endpoint: double.url, token: "hvs.unknown" }).tokenLookupSelf())).statusCode,
        403,
      );
    });

    test("the token may come as Authorization: Bearer, as the API documents", async () => {
      const reply = await fetch(`${double.url}/v1/auth/token/lookup-self`, {
        headers: { authorization: `Bearer ${double.rootToken}` },
      });
      assert.equal(reply.status, 200);
    });
  });

  describe("KV", () => {
    test("a KV v1 read has Vault's envelope and the default advisory lease_duration", async () => {
      double.writeKvV1("kv", "ado", { pat: "azure-pat" });
      const reply = await client.read("kv/ado");
      assert.deepEqual(reply.data, { pat: "azure-pat" });
      assert.equal(reply.lease_id, "");
      assert.equal(reply.renewable, false);
      assert.equal(reply.lease_duration, 2_764_800);
      assert.equal(typeof reply.request_id, "string");
      double.writeKvV1("kv", "short", { pat: "x", ttl: "1h" });
      assert.equal((await client.read("kv/short")).lease_duration, 3600);
    });

    test("KV v2 reads the latest version or the one asked for; a test write rotates the secret", async () => {
      assert.equal(double.writeKvV2("secret", "anthropic", { api_key: "key-1" }, { owner: "platform" }), 1);
      const first = await client.read("secret/data/anthropic");
      assert.deepEqual(first.data.data, { api_key: "key-1" });
      assert.equal(first.data.metadata.version, 1);
      assert.equal(first.data.metadata.destroyed, false);
      assert.equal(first.data.metadata.deletion_time, "");
      assert.deepEqual(first.data.metadata.custom_metadata, { owner: "platform" });
      assert.equal(first.data.metadata.created_time, new Date(double.now()).toISOString());

      assert.equal(double.writeKvV2("secret", "anthropic", { api_key: "key-2" }), 2);
      assert.deepEqual((await client.read("secret/data/anthropic")).data.data, { api_key: "key-2" });
      assert.deepEqual((await client.read("secret/data/anthropic?version=1")).data.data, {
        api_key: "key-1",
      });
    });

    test("a KV v2 write over HTTP makes a new version and answers with its metadata", async () => {
      // secret/ is KV v2 from the start, as on a dev-mode Vault; other mounts are enabled first.
      double.mountSecretsEngine("team-kv", "kv-v2");
      assert.equal((await client.write("team-kv/data/x", { data: { a: "b" } })).data.version, 1);
      const unmounted = await refusal(client.write("nowhere/data/x", { data: { a: "b" } }));
      assert.deepEqual(
        [unmounted.statusCode, unmounted.message],
        [404, 'no handler for route "nowhere/data/x". route entry not found.'],
      );
      const written = await client.write("secret/data/ado", { data: { pat: "p-1" } });
      assert.equal(written.data.version, 1);
      assert.equal((await client.write("secret/data/ado", { data: { pat: "p-2" } })).data.version, 2);
      assert.deepEqual((await client.read("secret/data/ado")).data.data, { pat: "p-2" });
    });

    test("a missing secret or version is 404 with an empty errors list", async () => {
      double.writeKvV2("secret", "there", { a: "b" });
      double.writeKvV1("kv", "other", {});
      for (const path of ["secret/data/missing", "secret/data/there?version=7", "kv/none"]) {
        assert.deepEqual(await refusal(client.read(path)), {
          message: "Status 404",
          statusCode: 404,
          body: { errors: [] },
        });
      }
    });
  });

  describe("dynamic database credentials and leases", () => {
    beforeEach(() => {
      double.addDatabaseRole({ name: "readonly", ttlSeconds: 3600, maxTtlSeconds: 7200 });
    });

    test("each read is a new renewable lease with fresh credentials", async () => {
      const first: CredsReply = await client.generateDatabaseCredentials({
        databasePath: "database",
        name: "readonly",
      });
      const second: CredsReply = await client.read("database/creds/readonly");
      assert.match(first.lease_id, /^database\/creds\/readonly\/[A-Za-z0-9]{24}$/);
      assert.notEqual(first.lease_id, second.lease_id);
      assert.equal(first.renewable, true);
      assert.equal(first.lease_duration, 3600);
      assert.notEqual(first.data.username, second.data.username);
      assert.notEqual(first.data.password, second.data.password);
      assert.match(first.data.username, /^v-root-readonly-/);
    });

    test("an unknown role is a 400 unknown role", async () => {
      const unknown = await refusal(client.read("database/creds/admin"));
      assert.deepEqual([unknown.statusCode, unknown.message], [400, "unknown role: admin"]);
    });

    test("sys/leases/renew extends a lease up to the role's max TTL, with Vault's warning", async () => {
      const creds: CredsReply = await client.read("database/creds/readonly");
      double.advance(1_800_000);
      const renewed: LeaseReply = await client.renew({ lease_id: creds.lease_id, increment: 3600 });
      assert.deepEqual(
        [renewed.lease_id, renewed.renewable, renewed.lease_duration, renewed.warnings],
        [creds.lease_id, true, 3600, null],
      );
      const capped: LeaseReply = await client.renew({ lease_id: creds.lease_id, increment: 86_400 });
      assert.equal(capped.lease_duration, 5400);
      assert.deepEqual(capped.warnings, [
        'TTL of "24h" exceeded the effective max_ttl of "1h30m"; TTL value is capped accordingly',
      ]);
      const plain: LeaseReply = await client.request({
        path: "/sys/leases/renew",
        method: "PUT",
        json: { lease_id: creds.lease_id },
      });
      assert.equal(plain.lease_duration, 3600, "no increment: the role's TTL");
    });

    test("an unknown, expired or revoked lease cannot be renewed: 400 lease not found", async () => {
      const notFound = { message: "lease not found", statusCode: 400, body: { errors: ["lease not found"] } };
      assert.deepEqual(await refusal(client.renew({ lease_id: "database/creds/readonly/nope" })), notFound);

      const expiring: CredsReply = await client.read("database/creds/readonly");
      double.advance(3_600_000);
      assert.equal(double.lease(expiring.lease_id)?.live, false);
      assert.deepEqual(await refusal(client.renew({ lease_id: expiring.lease_id })), notFound);

      const revoked: CredsReply = await client.read("database/creds/readonly");
      assert.equal(
        await client.revoke({ lease_id: revoked.lease_id }),
        "",
        "204: node-vault returns the empty body",
      );
      assert.equal(double.lease(revoked.lease_id)?.live, false);
      assert.deepEqual(await refusal(client.renew({ lease_id: revoked.lease_id })), notFound);
      // Revoking what is not there is a no-op success, as in Vault.
      await client.revoke({ lease_id: "database/creds/readonly/never" });
    });

    test("revoking the token that read a lease revokes the lease", async () => {
      const token = double.issueToken();
      const creds: CredsReply = await vault({ endpoint: double.url, token }).read("database/creds/readonly");
      assert.equal(double.lease(creds.lease_id)?.live, true);
      double.revokeToken(token);
      assert.equal(double.lease(creds.lease_id)?.live, false);
    });
  });

  describe("policies", () => {
    test("a token reads only the paths of its policy; elsewhere it gets Vault's 403", async () => {
      double.writeKvV2("secret", "gatehouse/anthropic", { api_key: "k" });
      double.writeKvV2("secret", "payroll", { salary: "1" });
      double.addDatabaseRole({ name: "readonly" });
      double.addAppRole({ name: "agent", roleId: "r", secretId: "s", paths: ["secret/data/gatehouse/*"] });
      const agent = vault({ endpoint: double.url });
      await agent.approleLogin({ role_id: "r", secret_id: "s" });

      assert.deepEqual((await agent.read("secret/data/gatehouse/anthropic")).data.data, { api_key: "k" });
      assert.deepEqual(await refusal(agent.read("secret/data/payroll")), {
        message: POLICY_DENIED,
        statusCode: 403,
        body: { errors: [POLICY_DENIED] },
      });
      // The default policy's paths stay open.
      await agent.tokenLookupSelf();

      // Vault resolves policies per request: widening the role reaches the token already issued.
      double.setPolicy("agent", ["secret/data/gatehouse/*", "database/creds/+"]);
      const creds: CredsReply = await agent.read("database/creds/readonly");
      await agent.renew({ lease_id: creds.lease_id });
      // Revocation is not in the default policy.
      assert.equal((await refusal(agent.revoke({ lease_id: creds.lease_id }))).statusCode, 403);
      double.setPolicy(agent.token, ["sys/leases/revoke"]);
      await agent.revoke({ lease_id: creds.lease_id });
    });

    test("denialStyle plain answers the bare permission denied", async () => {
      const plain = await startVaultDouble({ denialStyle: "plain" });
      try {
        plain.writeKvV2("secret", "x", { a: "b" });
        const token = plain.issueToken({ paths: [] });
        const denied = await refusal(vault({ endpoint: plain.url, token }).read("secret/data/x"));
        assert.deepEqual(denied, {
          message: "permission denied",
          statusCode: 403,
          body: { errors: ["permission denied"] },
        });
        plain.revokeToken(token);
        assert.equal(
          (await refusal(vault({ endpoint: plain.url, token }).read("secret/data/x"))).message,
          "permission denied",
        );
      } finally {
        await plain.close();
      }
    });
  });

  describe("outages", () => {
    test("setAvailable(false) answers 503 Vault is sealed until it is available again", async () => {
      double.writeKvV2("secret", "app", { k: "v" });
      double.setAvailable(false);
      assert.deepEqual(await refusal(client.read("secret/data/app")), {
        message: "Vault is sealed",
        statusCode: 503,
        body: { errors: ["Vault is sealed"] },
      });
      assert.equal(
        (await refusal(vault({ endpoint: double.url }).approleLogin({ role_id: "r", secret_id: "s" })))
          .statusCode,
        503,
      );
      double.setAvailable(true);
      assert.deepEqual((await client.read("secret/data/app")).data.data, { k: "v" });
    });

    test("stop() refuses connections; start() serves again on the same URL with the same state", async () => {
      double.writeKvV2("secret", "app", { k: "v" });
      await client.read("secret/data/app");
      const url = double.url;
      await double.stop();
      // The first call may go out on the kept-alive connection the stop cut: ECONNRESET.
      const code = async () => {
        try {
          await client.read("secret/data/app");
        } catch (error) {
          return (error as { code?: unknown }).code;
        }
        return "answered";
      };
      assert.ok(["ECONNRESET", "ECONNREFUSED"].includes(String(await code())));
      assert.equal(await code(), "ECONNREFUSED");
      await double.start();
      assert.equal(double.url, url);
      assert.deepEqual((await client.read("secret/data/app")).data.data, { k: "v" });
    });
  });

  describe("what the double records", () => {
    test("requests are counted on arrival, so a test can see concurrent reads in flight", async () => {
      double.writeKvV2("secret", "app", { k: "v" });
      const release = double.hold();
      const reads = [client.read("secret/data/app"), client.read("secret/data/app?version=1")];
      await double.waitForRequests("GET", "/v1/secret/data/app", 2);
      assert.equal(double.requestCount("GET", "/v1/secret/data/app"), 2);
      assert.equal(double.requests.length, 0, "held: nothing answered yet");
      release();
      await Promise.all(reads);
      assert.equal(double.requestCount("get", "/v1/secret/data/app"), 2);
      assert.equal(double.requestCount("GET", "/v1/secret/data/other"), 0);
    });

    test("the log has method, path, namespace and status, and no secret", async () => {
      double.addAppRole({ name: "agent", roleId: "role-id-value", secretId: "secret-id-value" });
      double.writeKvV2("secret", "app", { api_key: "the-secret-value" });
      const agent = vault({ endpoint: double.url, namespace: "team-a" });
      const login: AuthReply = await agent.approleLogin({
        role_id: "role-id-value",
        secret_id: "secret-id-value",
      });
      await agent.read("secret/data/app?version=1");
      await refusal(agent.read("secret/data/missing"));

      assert.deepEqual(
        double.requests.map(({ method, path, namespace, status }) => ({ method, path, namespace, status })),
        [
          { method: "POST", path: "/v1/auth/approle/login", namespace: "team-a", status: 200 },
          { method: "GET", path: "/v1/secret/data/app?version=1", namespace: "team-a", status: 200 },
          { method: "GET", path: "/v1/secret/data/missing", namespace: "team-a", status: 404 },
        ],
      );
      const log = JSON.stringify(double.requests);
      for (const secret of ["secret-id-value", "the-secret-value", login.auth.client_token]) {
        assert.ok(!log.includes(secret), "the request log holds no secret");
      }
    });
  });
});
