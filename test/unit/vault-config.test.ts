/**
 * The agent's `vault` block: validated at start-up with messages naming the key, and
 * Vault's failures described without what node-vault's errors carry besides (the request,
 * with the Vault token in its headers).
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { agentConfigSchema } from "@gatehouse/agent/config.js";
import { describeVaultError } from "@gatehouse/agent/vault/failure.js";
import { z } from "zod";

const base = { controlPlane: { address: "cp:7071" } };
const vault = {
  address: "https://vault.example.com:8200",
  auth: { approle: { roleId: "r", secretIdFile: "/s" } },
};

function problems(input: unknown): string {
  const result = agentConfigSchema.safeParse(input);
  assert.equal(result.success, false);
  return z.prettifyError((result as { error: z.ZodError }).error);
}

describe("agent vault configuration", () => {
  test("defaults: 300 s cache, 900 s stale-if-error, 10 s timeout, standard Kubernetes token and jwt mount", () => {
    const parsed = agentConfigSchema.parse({ ...base, vault });
    assert.equal(parsed.vault?.cacheSeconds, 300);
    assert.equal(parsed.vault?.staleIfErrorSeconds, 900);
    assert.equal(parsed.vault?.timeoutSeconds, 10);
    const k8s = agentConfigSchema.parse({
      ...base,
      vault: { ...vault, auth: { kubernetes: { role: "gh" } } },
    });
    assert.equal(k8s.vault?.auth.kubernetes?.jwtFile, "/var/run/secrets/kubernetes.io/serviceaccount/token");
    const jwt = agentConfigSchema.parse({
      ...base,
      vault: { ...vault, auth: { jwt: { role: "gh", jwtFile: "/j" } } },
    });
    assert.equal(jwt.vault?.auth.jwt?.path, "jwt");
    assert.equal(agentConfigSchema.parse(base).vault, undefined);
  });

  test("exactly one login method: none or two are refused, saying which exist", () => {
    assert.match(problems({ ...base, vault: { ...vault, auth: {} } }), /exactly one Vault login method/);
    const two = { approle: vault.auth.approle, token: { tokenFile: "/t" } };
    assert.match(problems({ ...base, vault: { ...vault, auth: two } }), /token, approle, kubernetes or jwt/);
  });

  test("unknown keys are refused by name, with where they are", () => {
    const message = problems({
      ...base,
      vault: { ...vault, cacheSecond: 5, auth: { approle: { roleID: "r" } } },
    });
    assert.match(message, /Unrecognized key: "cacheSecond"/);
    assert.match(message, /Unrecognized key: "roleID"[\s\S]*vault\.auth\.approle/);
  });

  test("the address must be an http(s) URL", () => {
    assert.match(problems({ ...base, vault: { ...vault, address: "vault:8200" } }), /vault\.address/);
  });

  test("plain http only to this machine, and a caCert only with https", () => {
    // Regression: plain http to a remote Vault sent the login secret, the token and every
    // credential across the network in clear.
    assert.match(
      problems({ ...base, vault: { ...vault, address: "http://vault.example.com:8200" } }),
      /plain http is allowed only for 127\.0\.0\.1, localhost or \[::1\][\s\S]*vault\.address/,
    );
    for (const address of ["http://127.0.0.1:8200", "http://localhost:8200", "http://[::1]:8200"]) {
      assert.equal(
        agentConfigSchema.parse({ ...base, vault: { ...vault, address } }).vault?.address,
        address,
      );
    }
    // Regression: a CA for a Vault spoken to over plain http was accepted and never used.
    assert.match(
      problems({ ...base, vault: { ...vault, address: "http://127.0.0.1:8200", caCert: "/ca.pem" } }),
      /caCert is for an https address[\s\S]*vault\.caCert/,
    );
    assert.ok(agentConfigSchema.parse({ ...base, vault: { ...vault, caCert: "/ca.pem" } }).vault);
  });

  test("the JWT mount path is path segments only", () => {
    // Regression: node-vault renders the mount path into the login URL through a template, so
    // `{{…}}`, `..` or `?` could change which URL the JWT is sent to.
    const jwt = (path: string) => ({
      ...base,
      vault: { ...vault, auth: { jwt: { role: "r", jwtFile: "/j", path } } },
    });
    for (const path of ["{{role}}", "../sys", "jwt?x=1", "jwt/", "/jwt", "a//b"]) {
      assert.match(problems(jwt(path)), /expected a mount path[\s\S]*vault\.auth\.jwt\.path/, path);
    }
    assert.equal(agentConfigSchema.parse(jwt("ci/jwt-2_a")).vault?.auth.jwt?.path, "ci/jwt-2_a");
  });
});

describe("Vault failures", () => {
  test("Vault's answer: status and its errors text; 4xx is about the request, 5xx and 429 about Vault", () => {
    const denied = describeVaultError({
      response: { statusCode: 403, body: { errors: ["permission denied"] } },
    });
    assert.deepEqual(denied, { status: 403, text: "403: permission denied", unreachable: false });
    const sealed = describeVaultError({
      response: { statusCode: 503, body: { errors: ["Vault is sealed"] } },
    });
    assert.equal(sealed.unreachable, true);
    assert.equal(describeVaultError({ response: { statusCode: 429, body: "" } }).text, "429: no error text");
  });

  test("Vault 1.x's multierror wrapping is reduced to its items, on one line", () => {
    const wrapped = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
    const failure = describeVaultError({ response: { statusCode: 403, body: { errors: [wrapped] } } });
    assert.equal(failure.text, "403: permission denied; invalid token");
  });

  test("no answer: the network error's code and message, and never the request it came with", () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:8200"), {
      code: "ECONNREFUSED",
      config: { headers: { "X-Vault-Token": "hvs.secret-token" } },
    });
    const failure = describeVaultError(refused);
    assert.deepEqual(failure, {
      status: undefined,
      text: "connect ECONNREFUSED 127.0.0.1:8200",
      unreachable: true,
    });
    // Node's happy-eyeballs AggregateError has no message of its own.
    assert.equal(
      describeVaultError(Object.assign(new Error(""), { code: "ECONNREFUSED" })).text,
      "ECONNREFUSED",
    );
    assert.equal(
      describeVaultError(Object.assign(new Error("timeout of 10000ms exceeded"), { code: "ECONNABORTED" }))
        .text,
      "ECONNABORTED: timeout of 10000ms exceeded",
    );
  });

  test("a page from something that is not Vault is cut short", () => {
    const page = describeVaultError({ response: { statusCode: 502, body: { errors: ["x".repeat(5000)] } } });
    assert.ok(page.text.length < 400);
  });
});
