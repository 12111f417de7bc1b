/**
 * CI runners trade their platform's OIDC token for a session (POST /v1/sessions
 * with `Authorization: Bearer <runner token>`), against in-process issuers that
 * publish discovery documents and JWKS over real HTTP and sign GitHub-like and
 * Azure-like tokens. Every refusal is checked for its exact status, code and
 * message, and that it never echoes the token.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import type { GatehouseClient, OpenedSession } from "@gatehouse/sdk";
import { GatehouseClient as Client, GatehouseApiError } from "@gatehouse/sdk";
import { gatehouse } from "../support/cli.js";
import { TestGatehouse } from "../support/gatehouse.js";
import { azureClaims, githubClaims, OidcIssuer } from "../support/oidc-issuer.js";

const LIMIT = { timeout: 60_000 };
const message = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hi" }],
};

let github: OidcIssuer;
let entra: OidcIssuer;
let pipelines: OidcIssuer;
let gh: TestGatehouse;

before(async () => {
  github = await OidcIssuer.start();
  // Entra ID: https://login.microsoftonline.com/<tenant>/v2.0, tokens for Gatehouse's app.
  entra = await OidcIssuer.start({
    path: "/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0",
    audience: "api://gatehouse",
  });
  // Azure Pipelines workload identity federation: https://vstoken.dev.azure.com/<organization id>,
  // a fixed audience, the service connection in `sub`.
  pipelines = await OidcIssuer.start({
    path: "/5b6e2c1a-9d3f-4e8b-a7c2-0f1e2d3c4b5a",
    audience: "api://AzureADTokenExchange",
  });
  gh = await TestGatehouse.start({
    connections: [
      {
        name: "claude-prod",
        type: "anthropic",
        upstream: "https://api.anthropic.com",
        credential: { env: "UNUSED_KEY" },
      },
    ],
    controlPlane: {
      identity: {
        providers: [
          {
            name: "github",
            issuer: github.issuer,
            audience: "gatehouse",
            // A rotated key is fetched at once (the default waits 30 s between fetches).
            jwksCooldownSeconds: 0,
            rules: [
              {
                name: "main-branch",
                match: { repository: "contoso/*", ref: ["refs/heads/main", "refs/heads/release/**"] },
                connections: ["claude"],
                maxTtlSeconds: 600,
                labels: { trust: "ci-main" },
              },
              {
                name: "deploy",
                // job_workflow_ref names the called workflow, not the caller: the owner is pinned too.
                match: {
                  repository_owner: "contoso",
                  job_workflow_ref: "contoso/workflows/.github/workflows/deploy.yml@refs/heads/main",
                },
                connections: ["claude-prod"],
              },
            ],
          },
          {
            name: "entra",
            issuer: entra.issuer,
            audience: "api://gatehouse",
            rules: [
              {
                match: {
                  tid: "72f988bf-86f1-41af-91ab-2d7cd011db47",
                  oid: ["4f2a9b1e-58b0-4c1e-9c2d-1a7f0e2d9c11"],
                },
                connections: ["claude"],
              },
            ],
          },
          {
            name: "azure-pipelines",
            issuer: pipelines.issuer,
            audience: "api://AzureADTokenExchange",
            rules: [{ match: { sub: "sc://contoso/app/*" }, connections: ["claude"] }],
          },
        ],
      },
    },
  });
});
after(async () => {
  await gh?.stop();
  await github?.stop();
  await entra?.stop();
  await pipelines?.stop();
});

/** The control plane as a runner sees it: its only credential is the CI token. */
function runner(token: string): GatehouseClient {
  return new Client({ url: gh.cp.httpUrl, token });
}

/** Opening a session with `token` fails with this status, code and message (and never shows the token). */
async function refused(
  token: string,
  connection: string,
  status: number,
  code: string,
  text: RegExp,
): Promise<void> {
  const error = await runner(token)
    .openSession({ connection })
    .then(
      () => assert.fail("the session was opened"),
      (e: unknown) => e,
    );
  assert.ok(error instanceof GatehouseApiError, String(error));
  assert.equal(error.status, status, error.message);
  assert.equal(error.code, code, error.message);
  assert.match(error.message, text);
  for (const part of token.split("."))
    assert.ok(!error.message.includes(part.slice(0, 16)), "the message echoes the token");
}

describe("a runner with a matching token", () => {
  let token: string;
  let session: OpenedSession;

  before(async () => {
    token = await github.sign(githubClaims({ run_id: "4242" }));
    session = await runner(token).openSession({
      connection: "claude",
      ttlSeconds: 3600,
      labels: { trust: "forged", job: "build" },
    });
  });

  test("gets a session recorded under its identity, with the rule's TTL and labels", LIMIT, async () => {
    const summary = await gh.admin.getSessionSummary(session.id);
    assert.equal(summary.subject.kind, "oidc");
    assert.equal(summary.subject.id, `${github.issuer}#repo:contoso/app:ref:refs/heads/main`);
    assert.deepEqual(
      {
        provider: summary.subject.claims.provider,
        rule: summary.subject.claims.rule,
        repository: summary.subject.claims.repository,
        ref: summary.subject.claims.ref,
        workflow: summary.subject.claims.workflow,
        run_id: summary.subject.claims.run_id,
        actor: summary.subject.claims.actor,
      },
      {
        provider: "github",
        rule: "main-branch",
        repository: "contoso/app",
        ref: "refs/heads/main",
        workflow: "ci",
        run_id: "4242",
        actor: "octocat",
      },
    );
    // The rule caps the TTL at 600 s, and its labels win over the caller's.
    assert.equal(Date.parse(summary.expiresAt) - Date.parse(summary.createdAt), 600_000);
    assert.deepEqual(summary.labels, { trust: "ci-main", job: "build" });
    // Sessions can be listed by who opened them.
    const listed = await gh.admin.listSessions({ subject: summary.subject.id });
    assert.deepEqual(
      listed.items.map((s) => s.id),
      [session.id],
    );
  });

  test("uses its session token at the agent, and closes the session with it", LIMIT, async () => {
    const reply = await gh.anthropic(session).messages.create(message);
    assert.equal(reply.type, "message");
    // Another session's token may not close this one; the session's own token may.
    const other = await runner(await github.sign(githubClaims())).openSession({ connection: "claude" });
    await assert.rejects(new Client({ url: gh.cp.httpUrl, token: other.token }).closeSession(session.id), {
      status: 403,
      code: "GATE_FORBIDDEN",
      message: "a session token may close only its own session; use an admin API key to close others",
    });
    const closed = await new Client({ url: gh.cp.httpUrl, token: session.token }).closeSession(session.id);
    assert.equal(closed.status, "closed");
    await assert.rejects(gh.anthropic(session).messages.create(message), {
      status: 401,
      error: {
        type: "error",
        error: {
          type: "authentication_error",
          message: `Gatehouse (GATE_TOKEN_REVOKED): session ${session.id} was closed; open a new session`,
        },
      },
    });
    const audit = (await (
      await fetch(`${gh.cp.httpUrl}/v1/audit`, { headers: { authorization: `Bearer ${gh.adminToken}` } })
    ).json()) as { items: Array<{ action: string; actor: string; target: string }> };
    const entry = audit.items.find((e) => e.action === "session.close" && e.target === session.id);
    assert.equal(entry?.actor, `${github.issuer}#repo:contoso/app:ref:refs/heads/main`);
  });

  test("cannot use its token for another connection", LIMIT, async () => {
    const fresh = await runner(await github.sign(githubClaims())).openSession({ connection: "claude" });
    const reply = await fetch(`${fresh.proxyUrl.replace(/\/c\/claude$/, "/c/claude-prod")}/v1/messages`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${fresh.token}`,
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
      },
      body: JSON.stringify(message),
    });
    assert.equal(reply.status, 403);
    assert.deepEqual(await reply.json(), {
      type: "error",
      error: {
        type: "permission_error",
        message:
          "Gatehouse (GATE_WRONG_CONNECTION): session token is for connection 'claude', not 'claude-prod'; open a session for 'claude-prod'",
      },
    });
  });
});

test("an Azure Pipelines token names its service connection in the session's subject", LIMIT, async () => {
  const token = await pipelines.sign({ sub: "sc://contoso/app/gatehouse-connection" });
  const session = await runner(token).openSession({ connection: "claude" });
  const summary = await gh.admin.getSessionSummary(session.id);
  assert.equal(summary.subject.id, `${pipelines.issuer}#sc://contoso/app/gatehouse-connection`);
  assert.equal(summary.subject.claims.provider, "azure-pipelines");
  const other = await pipelines.sign({ sub: "sc://fabrikam/app/gatehouse-connection" });
  await refused(
    other,
    "claude",
    403,
    "GATE_FORBIDDEN",
    /\(rule 1: sub "sc:\/\/fabrikam\/app\/gatehouse-connection" does not match\)$/,
  );
});

test(
  "an Entra ID token from a path-based issuer opens a session by tenant and object id",
  LIMIT,
  async () => {
    const session = await runner(await entra.sign(azureClaims())).openSession({ connection: "claude" });
    const summary = await gh.admin.getSessionSummary(session.id);
    assert.equal(summary.subject.id, `${entra.issuer}#sc://contoso/app/gatehouse-connection`);
    assert.deepEqual(
      [summary.subject.claims.tid, summary.subject.claims.oid],
      ["72f988bf-86f1-41af-91ab-2d7cd011db47", "4f2a9b1e-58b0-4c1e-9c2d-1a7f0e2d9c11"],
    );
  },
);

describe("refusals", () => {
  test("a token that matches no rule: 403 naming the provider and each rule's reason", LIMIT, async () => {
    await refused(
      await github.sign(githubClaims({ ref: "refs/heads/feature/x" })),
      "claude",
      403,
      "GATE_FORBIDDEN",
      /^provider 'github': no rule lets this token open a session for 'claude' \(main-branch: ref "refs\/heads\/feature\/x" does not match; deploy: job_workflow_ref "contoso\/app\/\.github\/workflows\/ci\.yml@refs\/heads\/feature\/x" does not match\)$/,
    );
  });

  test("a matching rule that does not list the connection: 403", LIMIT, async () => {
    await refused(
      await github.sign(githubClaims()),
      "claude-prod",
      403,
      "GATE_FORBIDDEN",
      /main-branch: it does not allow 'claude-prod'/,
    );
  });

  test("a token without a claim a rule needs: 403 saying which", LIMIT, async () => {
    const { repository: _r, ...claims } = githubClaims();
    await refused(
      await github.sign(claims),
      "claude",
      403,
      "GATE_FORBIDDEN",
      /main-branch: the token has no repository claim/,
    );
  });

  test("an expired token: 401 GATE_TOKEN_EXPIRED", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { issuedAtOffsetSeconds: -900, expiresInSeconds: 300 });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_EXPIRED",
      /^runner token from provider 'github' expired at \d{4}-.*Z; request a fresh token from your CI platform \(they live minutes\)$/,
    );
  });

  test("a token expired by less than the allowed clock skew is still accepted", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { issuedAtOffsetSeconds: -330, expiresInSeconds: 300 });
    await runner(token).openSession({ connection: "claude" });
  });

  test("a token not valid yet: 401 naming nbf", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { nbfOffsetSeconds: 600 });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /^runner token from provider 'github' is not valid before \d{4}-.*Z; check the clocks/,
    );
  });

  test("a token issued in the future: 401 naming iat", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { issuedAtOffsetSeconds: 600, nbfOffsetSeconds: -600 });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /^runner token from provider 'github' was issued in the future \(iat \d{4}-[\d-]+T[\d:.]+Z\); check the clocks/,
    );
  });

  test("a token signed with a key the issuer does not publish: 401", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { unpublishedKey: true });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /^runner token from provider 'github' is signed with a key the issuer does not publish/,
    );
  });

  test("a token whose claims were altered after signing: 401", LIMIT, async () => {
    const [head, , signature] = (await github.sign(githubClaims({ ref: "refs/heads/feature" }))).split(".");
    const forged = Buffer.from(
      JSON.stringify({
        ...githubClaims(),
        iss: github.issuer,
        aud: "gatehouse",
        iat: Math.floor(Date.now() / 1000),
        exp: Math.floor(Date.now() / 1000) + 300,
      }),
    ).toString("base64url");
    await refused(
      `${head}.${forged}.${signature}`,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /has a signature that does not verify with the issuer's keys/,
    );
  });

  test("a token signed with an algorithm the provider does not allow: 401", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { alg: "ES256" });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /is signed with an algorithm the provider does not allow \(allowed: RS256\)/,
    );
  });

  test("a token for another audience: 401 naming the expected one", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { audience: "https://github.com/contoso" });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /is for audience "https:\/\/github\.com\/contoso", not 'gatehouse'; request the token with that audience/,
    );
  });

  test("a token from an issuer that is not configured: 401 listing the known ones", LIMIT, async () => {
    const token = await github.sign(githubClaims(), { issuer: "https://token.example.com" });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /^the token's issuer "https:\/\/token\.example\.com" is not a configured identity provider \(providers: github, entra, azure-pipelines\); request the token from your CI platform's issuer$/,
    );
  });

  test(
    "a bearer that is no JWT is taken for an API key, and an unknown one is refused: 401",
    LIMIT,
    async () => {
      await refused("not-a-token-at-all", "claude", 401, "GATE_TOKEN_INVALID", /^API key not recognised/);
    },
  );

  test("a token issued more than a day ago: 401, even if it has not expired", LIMIT, async () => {
    const token = await github.sign(githubClaims(), {
      issuedAtOffsetSeconds: -90_000,
      expiresInSeconds: 100_000,
    });
    await refused(
      token,
      "claude",
      401,
      "GATE_TOKEN_INVALID",
      /^runner token from provider 'github' was issued more than a day ago/,
    );
  });

  test(
    "a token with a critical header Gatehouse does not understand: 401, not an outage",
    LIMIT,
    async () => {
      const [, payload, signature] = (await github.sign(githubClaims())).split(".");
      const header = Buffer.from(
        JSON.stringify({ alg: "RS256", typ: "JWT", crit: ["x-unknown"], "x-unknown": 1 }),
      ).toString("base64url");
      await refused(
        `${header}.${payload}.${signature}`,
        "claude",
        401,
        "GATE_TOKEN_INVALID",
        /is malformed or uses features Gatehouse does not accept/,
      );
    },
  );
});

test("the issuer's keys are cached, and a rotation mid-run is picked up", LIMIT, async () => {
  await runner(await github.sign(githubClaims())).openSession({ connection: "claude" });
  const before = { ...github.requests };
  await runner(await github.sign(githubClaims())).openSession({ connection: "claude" });
  assert.deepEqual(github.requests, before, "a second token from a known key fetched the keys again");

  const old = await github.sign(githubClaims());
  await github.rotate({ retireOld: true });
  await runner(await github.sign(githubClaims())).openSession({ connection: "claude" });
  assert.equal(github.requests.jwks, before.jwks + 1);
  assert.equal(github.requests.discovery, before.discovery, "discovery is not repeated for a rotation");
  // The key the issuer withdrew no longer opens sessions.
  await refused(old, "claude", 401, "GATE_TOKEN_INVALID", /signed with a key the issuer does not publish/);
});

test("an issuer that cannot be reached: 503, and sessions open once it is back", LIMIT, async () => {
  const down = await OidcIssuer.start();
  down.setAvailable(false);
  const cp = await TestGatehouse.start({
    controlPlane: {
      identity: {
        providers: [
          {
            name: "gitlab",
            issuer: down.issuer,
            audience: "gatehouse",
            rules: [{ match: { project_path: "contoso/**" }, connections: ["claude"] }],
          },
        ],
      },
    },
  });
  try {
    const token = await down.sign({
      sub: "project_path:contoso/app:ref_type:branch:ref:main",
      project_path: "contoso/app/api",
    });
    const error = await new Client({ url: cp.cp.httpUrl, token })
      .openSession({ connection: "claude" })
      .catch((e: unknown) => e);
    assert.ok(error instanceof GatehouseApiError);
    assert.equal(error.status, 503);
    assert.equal(error.code, "GATE_IDENTITY_UNAVAILABLE");
    assert.match(
      error.message,
      /^cannot read the discovery document of provider 'gitlab' at http:\/\/127\.0\.0\.1:\d+\/\.well-known\/openid-configuration \(.*\); check that the control plane can reach the issuer$/,
    );
    down.setAvailable(true);
    const session = await new Client({ url: cp.cp.httpUrl, token }).openSession({ connection: "claude" });
    assert.equal(
      (await cp.admin.getSessionSummary(session.id)).subject.claims.project_path,
      "contoso/app/api",
    );
  } finally {
    await cp.stop();
    await down.stop();
  }
});

test(
  "gatehouse exec --oidc github: a job's token opens, records and closes a session, no API key anywhere",
  LIMIT,
  async () => {
    // GitHub's job token endpoint: GET ACTIONS_ID_TOKEN_REQUEST_URL&audience=… with the request token.
    const requestToken = "ghs_request-token-for-this-job";
    const endpoint = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://localhost");
      if (req.headers.authorization !== `Bearer ${requestToken}`) {
        res.writeHead(401).end();
        return;
      }
      github
        .sign(githubClaims({ run_id: "9001" }), { audience: url.searchParams.get("audience") ?? "" })
        .then((value) =>
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ value })),
        );
    });
    endpoint.listen(0, "127.0.0.1");
    await once(endpoint, "listening");
    try {
      const tokenUrl = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}/token?api-version=2.0`;
      // The tool reports what it was given and sends one request through the session.
      const tool = [
        "const e = process.env;",
        "const seen = ['ACTIONS_ID_TOKEN_REQUEST_TOKEN', 'GATEHOUSE_ADMIN_TOKEN'].filter((k) => e[k]);",
        "const r = await fetch(e.ANTHROPIC_BASE_URL + '/v1/messages', { method: 'POST', headers: { authorization: 'Bearer ' + e.ANTHROPIC_AUTH_TOKEN, 'content-type': 'application/json', 'anthropic-version': '2023-06-01' }, body: JSON.stringify({ model: 'claude-sonnet-4-6', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] }) });",
        "console.log(JSON.stringify({ seen, status: r.status }));",
      ].join("\n");
      const result = await gatehouse(
        [
          "exec",
          "--oidc",
          "github",
          "--connection",
          "claude",
          "--",
          process.execPath,
          "--input-type=module",
          "-e",
          tool,
        ],
        {
          env: {
            GATEHOUSE_URL: gh.cp.httpUrl,
            GATEHOUSE_TOKEN: undefined,
            GATEHOUSE_ADMIN_TOKEN: undefined,
            ACTIONS_ID_TOKEN_REQUEST_URL: tokenUrl,
            ACTIONS_ID_TOKEN_REQUEST_TOKEN: requestToken,
          },
        },
      );
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), { seen: [], status: 200 });
      const [session] = (
        await gh.admin.listSessions({ subject: `${github.issuer}#repo:contoso/app:ref:refs/heads/main` })
      ).items.filter((s) => s.subject.claims.run_id === "9001");
      assert.equal(session?.status, "closed", "exec closes the session with its own token");
      const record = await gh.record(session?.id ?? "");
      assert.equal(record.exchanges.length, 1);
      assert.equal(record.exchanges[0]?.status, 200);
    } finally {
      endpoint.closeAllConnections();
      endpoint.close();
    }
  },
);
