/**
 * The CI job's OIDC ID token, from each source a runner can have: GitHub Actions' and
 * Azure Pipelines' token endpoints (in-process doubles that record what they were sent
 * and answer as those endpoints are documented to), GitLab's `id_tokens` variable, an
 * environment variable and a file; every way that fails says what to fix and shows no
 * token. Then what `gatehouse exec --oidc` does with the token, against a control-plane
 * double: the ID token opens the session, the session's own token closes it, and the
 * tool sees neither the ID token nor what obtains it.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CiTokenError,
  childEnvironment,
  ciIdToken,
  ciTokenVariables,
  detectCiPlatform,
  GatehouseApiError,
  type JobEnvironment,
  type OpenedSession,
  parseCiTokenSource,
} from "@gatehouse/sdk";
import { gatehouse } from "../support/cli.js";

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** A token shaped as CI platforms issue them (header.claims.signature); no one checks its signature here. */
function idToken(claims: Record<string, unknown>): string {
  const signature = Buffer.from(`signature of ${JSON.stringify(claims)}`).toString("base64url");
  return `${b64url({ alg: "RS256", typ: "JWT" })}.${b64url(claims)}.${signature}`;
}

const GITHUB_TOKEN = idToken({ iss: "https://token.actions.githubusercontent.com", sub: "repo:acme/app" });
const AZURE_TOKEN = idToken({ iss: "https://vstoken.dev.azure.com/org", aud: "api://AzureADTokenExchange" });
const GITLAB_TOKEN = idToken({ iss: "https://gitlab.example", sub: "project_path:acme/app" });
/** What each platform gives a job to ask for a token with; never to be shown. */
const REQUEST_TOKEN = idToken({ purpose: "github request token" });
const ACCESS_TOKEN = idToken({ purpose: "azure System.AccessToken" });
/** A secret in a token endpoint's query, as such URLs may carry; never to be shown. */
const QUERY_SECRET = "sig-in-query-0123456789";

interface Received {
  method: string;
  path: string;
  query: URLSearchParams;
  authorization: string | undefined;
  body: string;
}

/** An HTTP server on port 0 that records each request and answers what the test set. */
interface Double {
  url: string;
  received: Received[];
  answer(req: Received): { status: number; body: string };
  close(): Promise<void>;
}

async function startDouble(answer: Double["answer"]): Promise<Double> {
  const received: Received[] = [];
  const double: Double = { url: "", received, answer, close: async () => {} };
  const server = createServer((req: IncomingMessage, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (chunk: string) => {
      body += chunk;
    });
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://double");
      const got: Received = {
        method: req.method ?? "",
        path: url.pathname,
        query: url.searchParams,
        authorization: req.headers.authorization,
        body,
      };
      received.push(got);
      const { status, body: text } = double.answer(got);
      res.writeHead(status, { "content-type": "application/json" }).end(text);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  double.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  double.close = async () => {
    server.close();
    await once(server, "close");
  };
  return double;
}

const json = (status: number, value: unknown) => () => ({ status, body: JSON.stringify(value) });

/** Awaits a refusal: a CiTokenError (so a GatehouseApiError) whose message matches and shows no secret. */
async function refusal(promise: Promise<unknown>, message: RegExp): Promise<CiTokenError> {
  const error = await promise.then(
    () => assert.fail("expected the token to be refused"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof CiTokenError, `a CiTokenError, not ${String(error)}`);
  assert.ok(error instanceof GatehouseApiError, "callers that handle GatehouseApiError handle it too");
  assert.equal(error.code, "GATE_CI_TOKEN_UNAVAILABLE");
  assert.equal(error.status, 0);
  assert.match(error.message, message);
  for (const secret of [GITHUB_TOKEN, AZURE_TOKEN, GITLAB_TOKEN, REQUEST_TOKEN, ACCESS_TOKEN, QUERY_SECRET]) {
    assert.ok(!error.message.includes(secret), `the message shows no secret: ${error.message}`);
  }
  return error;
}

describe("GitHub Actions token endpoint", () => {
  let endpoint: Double;
  /** As GitHub sets it: a job-specific URL that already has a query. */
  const env = (more: JobEnvironment = {}): JobEnvironment => ({
    ACTIONS_ID_TOKEN_REQUEST_URL: `${endpoint.url}/00000000/_apis/distributedtask/hubs/Actions/plans/p/jobs/j/idtoken?api-version=2.0&sig=${QUERY_SECRET}`,
    ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
    ...more,
  });

  before(async () => {
    endpoint = await startDouble(json(200, { count: 1, value: GITHUB_TOKEN }));
  });
  after(() => endpoint.close());

  test("asks with GET, the request token as Bearer, and the audience added to the URL's query", async () => {
    assert.equal(
      await ciIdToken("github", { env: env(), audience: "https://gatehouse.example/v1" }),
      GITHUB_TOKEN,
    );
    const got = endpoint.received.at(-1);
    assert.equal(got?.method, "GET");
    assert.equal(got?.path, "/00000000/_apis/distributedtask/hubs/Actions/plans/p/jobs/j/idtoken");
    assert.equal(got?.query.get("api-version"), "2.0", "the query GitHub gave is kept");
    assert.equal(got?.query.get("sig"), QUERY_SECRET);
    assert.equal(got?.query.get("audience"), "https://gatehouse.example/v1");
    assert.equal(got?.authorization, `Bearer ${REQUEST_TOKEN}`);
  });

  test("the audience defaults to GATEHOUSE_AUDIENCE, else 'gatehouse'", async () => {
    await ciIdToken("github", { env: env({ GATEHOUSE_AUDIENCE: "from-env" }) });
    assert.equal(endpoint.received.at(-1)?.query.get("audience"), "from-env");
    await ciIdToken("github", { env: env() });
    assert.equal(endpoint.received.at(-1)?.query.get("audience"), "gatehouse");
  });

  test("without id-token: write there is nothing to ask: the error says to add it", async () => {
    await refusal(ciIdToken("github", { env: {} }), /permissions: id-token: write/);
    await refusal(
      ciIdToken("github", { env: { ACTIONS_ID_TOKEN_REQUEST_URL: env().ACTIONS_ID_TOKEN_REQUEST_URL } }),
      /ACTIONS_ID_TOKEN_REQUEST_TOKEN/,
    );
  });

  test("a refusal (401) names the endpoint without its query, and the status", async () => {
    endpoint.answer = json(401, { message: `Bad token ${REQUEST_TOKEN}` });
    try {
      const error = await refusal(
        ciIdToken("github", { env: env() }),
        /GitHub Actions token endpoint http:\/\/127\.0\.0\.1:\d+\/00000000\/_apis\/.*\/idtoken answered HTTP 401 \(Bad token \[redacted\]/,
      );
      assert.ok(!error.message.includes("api-version"), "no query in the message");
      assert.match(error.message, /id-token: write/);
    } finally {
      endpoint.answer = json(200, { value: GITHUB_TOKEN });
    }
  });

  test("an answer that is not JSON, lacks `value`, or holds no JWT is refused", async () => {
    const answers: Array<[Double["answer"], RegExp]> = [
      [
        () => ({ status: 200, body: "<html>proxy login</html>" }),
        /answered HTTP 200 with a body that is not JSON/,
      ],
      [() => ({ status: 200, body: "" }), /answered HTTP 200 with a body that is not JSON/],
      [json(200, { count: 0 }), /answered HTTP 200 without a `value` string/],
      [json(200, null), /answered HTTP 200 without a `value` string/],
      [json(200, { value: "" }), /`value` the GitHub Actions token endpoint .* answered is not set or empty/],
      [json(200, { value: "not a jwt" }), /does not hold a JWT/],
    ];
    try {
      for (const [answer, message] of answers) {
        endpoint.answer = answer;
        await refusal(ciIdToken("github", { env: env() }), message);
      }
    } finally {
      endpoint.answer = json(200, { value: GITHUB_TOKEN });
    }
  });

  test("an endpoint that cannot be reached, or a URL that is not one, is named", async () => {
    const gone = await startDouble(json(200, {}));
    const url = `${gone.url}/idtoken?sig=${QUERY_SECRET}`;
    await gone.close();
    await refusal(
      ciIdToken("github", { env: env({ ACTIONS_ID_TOKEN_REQUEST_URL: url }) }),
      /cannot reach the GitHub Actions token endpoint http:\/\/127\.0\.0\.1:\d+\/idtoken: /,
    );
    await refusal(
      ciIdToken("github", { env: env({ ACTIONS_ID_TOKEN_REQUEST_URL: "not a url" }) }),
      /ACTIONS_ID_TOKEN_REQUEST_URL is not a URL/,
    );
  });
});

describe("Azure Pipelines OIDC endpoint", () => {
  let endpoint: Double;
  const path = "/org-id/project-id/_apis/distributedtask/hubs/build/plans/plan-id/jobs/job-id/oidctoken";
  const env = (more: JobEnvironment = {}): JobEnvironment => ({
    SYSTEM_OIDCREQUESTURI: `${endpoint.url}${path}`,
    SYSTEM_ACCESSTOKEN: ACCESS_TOKEN,
    GATEHOUSE_AZURE_SERVICE_CONNECTION_ID: "4c5f1a36-0000-4000-8000-000000000001",
    ...more,
  });

  before(async () => {
    endpoint = await startDouble(json(200, { oidcToken: AZURE_TOKEN }));
  });
  after(() => endpoint.close());

  test("asks with POST, api-version 7.1, the service connection, and System.AccessToken as Bearer", async () => {
    assert.equal(await ciIdToken("azure", { env: env() }), AZURE_TOKEN);
    const got = endpoint.received.at(-1);
    assert.equal(got?.method, "POST");
    assert.equal(got?.path, path);
    assert.equal(got?.query.get("api-version"), "7.1");
    assert.equal(got?.query.get("serviceConnectionId"), "4c5f1a36-0000-4000-8000-000000000001");
    assert.equal(got?.authorization, `Bearer ${ACCESS_TOKEN}`);
    assert.equal(got?.query.has("audience"), false, "Azure fixes the audience; none is asked for");
  });

  test("a service connection passed in wins over GATEHOUSE_AZURE_SERVICE_CONNECTION_ID", async () => {
    await ciIdToken("azure", { env: env(), azureServiceConnectionId: "passed-in", audience: "ignored" });
    assert.equal(endpoint.received.at(-1)?.query.get("serviceConnectionId"), "passed-in");
  });

  test("each missing piece is named with what to do", async () => {
    await refusal(
      ciIdToken("azure", { env: env({ SYSTEM_ACCESSTOKEN: undefined }) }),
      /SYSTEM_ACCESSTOKEN is not set.*env: \{ SYSTEM_ACCESSTOKEN: \$\(System\.AccessToken\) \}/,
    );
    await refusal(
      ciIdToken("azure", { env: env({ GATEHOUSE_AZURE_SERVICE_CONNECTION_ID: undefined }) }),
      /no Azure service connection: set GATEHOUSE_AZURE_SERVICE_CONNECTION_ID/,
    );
    await refusal(
      ciIdToken("azure", { env: env({ SYSTEM_OIDCREQUESTURI: undefined }) }),
      /SYSTEM_OIDCREQUESTURI is not set: this does not run in an Azure Pipelines job/,
    );
  });

  test("a refusal (401) names the endpoint and status and says what to check", async () => {
    endpoint.answer = json(401, { message: "The pipeline is not authorized to use the service connection" });
    try {
      await refusal(
        ciIdToken("azure", { env: env() }),
        /Azure Pipelines token endpoint http:\/\/127\.0\.0\.1:\d+\/org-id\/.*\/oidctoken answered HTTP 401 \(The pipeline is not authorized.*\); check that SYSTEM_ACCESSTOKEN/,
      );
    } finally {
      endpoint.answer = json(200, { oidcToken: AZURE_TOKEN });
    }
  });

  test("an answer without `oidcToken`, or not JSON, is refused", async () => {
    try {
      endpoint.answer = json(200, { value: AZURE_TOKEN });
      await refusal(ciIdToken("azure", { env: env() }), /answered HTTP 200 without a `oidcToken` string/);
      endpoint.answer = () => ({ status: 203, body: "Sign in" });
      await refusal(ciIdToken("azure", { env: env() }), /answered HTTP 203 with a body that is not JSON/);
    } finally {
      endpoint.answer = json(200, { oidcToken: AZURE_TOKEN });
    }
  });
});

describe("tokens the job already holds", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-ci-identity-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test("GitLab: the variable the job's id_tokens names, GATEHOUSE_ID_TOKEN by default", async () => {
    assert.equal(await ciIdToken("gitlab", { env: { GATEHOUSE_ID_TOKEN: GITLAB_TOKEN } }), GITLAB_TOKEN);
    assert.equal(
      await ciIdToken("gitlab", { env: { MY_ID_TOKEN: GITLAB_TOKEN }, gitlabTokenVariable: "MY_ID_TOKEN" }),
      GITLAB_TOKEN,
    );
    await refusal(
      ciIdToken("gitlab", { env: {} }),
      /GATEHOUSE_ID_TOKEN \(the job's GitLab ID token\) is not set or empty; declare it in the job: `id_tokens: \{ GATEHOUSE_ID_TOKEN: \{ aud:/,
    );
  });

  test("env:NAME reads the variable; unset or not a JWT is refused", async () => {
    assert.equal(
      await ciIdToken("env:RUNNER_JWT", { env: { RUNNER_JWT: ` ${GITLAB_TOKEN}\n` } }),
      GITLAB_TOKEN,
    );
    await refusal(ciIdToken("env:RUNNER_JWT", { env: {} }), /RUNNER_JWT is not set or empty; set RUNNER_JWT/);
    await refusal(
      ciIdToken({ kind: "env", name: "RUNNER_JWT" }, { env: { RUNNER_JWT: "$GATEHOUSE_ID_TOKEN" } }),
      /RUNNER_JWT does not hold a JWT/,
    );
  });

  test("file:PATH reads the file at each call (a projected token is rewritten); its trailing newline is dropped", async () => {
    const file = join(dir, "token");
    await writeFile(file, `${GITLAB_TOKEN}\n`);
    assert.equal(await ciIdToken(`file:${file}`, { env: {} }), GITLAB_TOKEN);
    await writeFile(file, GITHUB_TOKEN);
    assert.equal(await ciIdToken({ kind: "file", path: file }, { env: {} }), GITHUB_TOKEN);
  });

  test("a file that is missing, a directory or empty is refused with its path", async () => {
    await refusal(
      ciIdToken(`file:${join(dir, "missing")}`, { env: {} }),
      /cannot read the OIDC token file .*missing \(ENOENT/,
    );
    await refusal(ciIdToken(`file:${dir}`, { env: {} }), /cannot read the OIDC token file .* \(EISDIR/);
    await writeFile(join(dir, "empty"), "\n");
    await refusal(
      ciIdToken(`file:${join(dir, "empty")}`, { env: {} }),
      /token file .*empty is not set or empty/,
    );
  });
});

describe("choosing the source", () => {
  test("auto picks the platform from GITHUB_ACTIONS, TF_BUILD or GITLAB_CI", async () => {
    assert.equal(detectCiPlatform({ GITHUB_ACTIONS: "true" }), "github");
    assert.equal(detectCiPlatform({ TF_BUILD: "True" }), "azure");
    assert.equal(detectCiPlatform({ GITLAB_CI: "true" }), "gitlab");
    assert.equal(
      await ciIdToken("auto", { env: { GITLAB_CI: "true", GATEHOUSE_ID_TOKEN: GITLAB_TOKEN } }),
      GITLAB_TOKEN,
    );
    await refusal(
      ciIdToken("auto", { env: { CI: "true" } }),
      /cannot tell which CI platform.*name the token source: github \| azure \| gitlab \| env:NAME \| file:PATH$/,
    );
  });

  test("auto asks the platform's endpoint", async () => {
    const endpoint = await startDouble(json(200, { oidcToken: AZURE_TOKEN }));
    try {
      const env = {
        TF_BUILD: "True",
        SYSTEM_OIDCREQUESTURI: `${endpoint.url}/oidctoken`,
        SYSTEM_ACCESSTOKEN: ACCESS_TOKEN,
        GATEHOUSE_AZURE_SERVICE_CONNECTION_ID: "sc",
      };
      assert.equal(await ciIdToken("auto", { env }), AZURE_TOKEN);
      assert.equal(endpoint.received.length, 1);
    } finally {
      await endpoint.close();
    }
  });

  test("an unknown source is refused with the list; a token given as the source is not shown", async () => {
    assert.deepEqual(parseCiTokenSource("env:MY_TOKEN"), { kind: "env", name: "MY_TOKEN" });
    assert.deepEqual(parseCiTokenSource("file:/var/run/token"), { kind: "file", path: "/var/run/token" });
    await refusal(
      ciIdToken("circleci", { env: {} }),
      /unknown OIDC token source 'circleci'; use one of github \| azure/,
    );
    await refusal(ciIdToken("env:", { env: {} }), /unknown OIDC token source 'env:'/);
    await refusal(ciIdToken(GITHUB_TOKEN, { env: {} }), /unknown OIDC token source \(a token; name where/);
  });

  test("the variables a tool must not see are named for each source", () => {
    const env = { GITHUB_ACTIONS: "true" };
    assert.deepEqual(ciTokenVariables({ kind: "auto" }, { env }), ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"]);
    assert.deepEqual(ciTokenVariables({ kind: "azure" }, { env }), ["SYSTEM_ACCESSTOKEN"]);
    assert.deepEqual(ciTokenVariables({ kind: "gitlab" }, { env, gitlabTokenVariable: "JOB_JWT" }), [
      "JOB_JWT",
    ]);
    assert.deepEqual(ciTokenVariables({ kind: "env", name: "RUNNER_JWT" }, { env }), ["RUNNER_JWT"]);
    assert.deepEqual(ciTokenVariables({ kind: "file", path: "/t" }, { env }), []);
  });
});

describe("the environment a tool runs with", () => {
  const session: OpenedSession = {
    id: "s1",
    token: "session-token",
    expiresAt: "2030-01-01T00:00:00Z",
    connection: "claude",
    proxyUrl: "http://agent:7080/c/claude",
  };

  test("holds no key, no ID token and nothing that obtains one; keeps the rest", () => {
    const env = childEnvironment(
      {
        PATH: "/usr/bin",
        GITHUB_ACTIONS: "true",
        ACTIONS_ID_TOKEN_REQUEST_URL: "https://token.example/idtoken",
        ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
        SYSTEM_OIDCREQUESTURI: "https://dev.azure.example/oidctoken",
        SYSTEM_ACCESSTOKEN: ACCESS_TOKEN,
        GATEHOUSE_ID_TOKEN: GITLAB_TOKEN,
        GATEHOUSE_TOKEN: "api-key",
        GATEHOUSE_ADMIN_TOKEN: "admin-key",
        GATEHOUSE_AZURE_SERVICE_CONNECTION_ID: "sc",
        CI_JOB_JWT_V2: GITLAB_TOKEN,
        // Windows matches names without regard to case.
        System_AccessToken: ACCESS_TOKEN,
        RUNNER_JWT: GITHUB_TOKEN,
        ANTHROPIC_API_KEY: "sk-ant-real",
        ANTHROPIC_BASE_URL: "https://api.anthropic.com",
        UNSET: undefined,
      },
      session,
      ["runner_jwt"],
    );
    assert.deepEqual(env, {
      PATH: "/usr/bin",
      GITHUB_ACTIONS: "true",
      ACTIONS_ID_TOKEN_REQUEST_URL: "https://token.example/idtoken",
      SYSTEM_OIDCREQUESTURI: "https://dev.azure.example/oidctoken",
      GATEHOUSE_AZURE_SERVICE_CONNECTION_ID: "sc",
      ANTHROPIC_BASE_URL: session.proxyUrl,
      ANTHROPIC_AUTH_TOKEN: session.token,
    });
  });
});

describe("gatehouse exec --oidc, against a control-plane double", () => {
  const SESSION_TOKEN = idToken({ purpose: "session token" });
  let controlPlane: Double;
  let github: Double;
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-exec-oidc-"));
    github = await startDouble(json(200, { value: GITHUB_TOKEN }));
    controlPlane = await startDouble((req) =>
      req.method === "POST"
        ? json(201, {
            id: "sess-1",
            token: SESSION_TOKEN,
            expiresAt: "2030-01-01T00:00:00Z",
            connection: "claude",
            proxyUrl: "http://agent.example/c/claude",
          })()
        : json(200, { id: "sess-1", status: "closed" })(),
    );
  });
  after(async () => {
    await controlPlane.close();
    await github.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Runs exec in a GitHub Actions job without any Gatehouse key; the tool prints its environment. */
  const run = (flags: string[]) =>
    gatehouse(
      [
        "exec",
        "--url",
        controlPlane.url,
        "--data",
        join(dir, "no-admin-token-here"),
        "--connection",
        "claude",
        ...flags,
        "--",
        process.execPath,
        "-e",
        "console.log(JSON.stringify(process.env)); process.exit(7)",
      ],
      {
        env: {
          GITHUB_ACTIONS: "true",
          ACTIONS_ID_TOKEN_REQUEST_URL: `${github.url}/idtoken?api-version=2.0`,
          ACTIONS_ID_TOKEN_REQUEST_TOKEN: REQUEST_TOKEN,
          GATEHOUSE_TOKEN: undefined,
          GATEHOUSE_ADMIN_TOKEN: undefined,
          GATEHOUSE_AUDIENCE: undefined,
          // Whatever CI runs these tests, the job here is the GitHub Actions one set above.
          TF_BUILD: undefined,
          GITLAB_CI: undefined,
          SYSTEM_OIDCREQUESTURI: undefined,
          SYSTEM_ACCESSTOKEN: undefined,
        },
      },
    );

  test("the ID token opens the session, the session's token closes it, the tool sees neither", async () => {
    const ran = await run(["--oidc", "auto", "--audience", "gatehouse.example", "--label", "run=9"]);
    assert.equal(ran.code, 7, `exec exits with the tool's status\n${ran.stderr}`);
    assert.equal(github.received.at(-1)?.query.get("audience"), "gatehouse.example");
    const [open, close] = controlPlane.received.slice(-2);
    assert.equal(open?.method, "POST");
    assert.equal(open?.path, "/v1/sessions");
    assert.equal(open?.authorization, `Bearer ${GITHUB_TOKEN}`, "no API key: the ID token opens the session");
    assert.deepEqual(JSON.parse(open?.body ?? "null"), { connection: "claude", labels: { run: "9" } });
    assert.equal(close?.method, "DELETE");
    assert.equal(close?.path, "/v1/sessions/sess-1");
    assert.equal(close?.authorization, `Bearer ${SESSION_TOKEN}`, "the session closes itself");

    const seen = JSON.parse(ran.stdout) as Record<string, string>;
    assert.equal(seen.ANTHROPIC_AUTH_TOKEN, SESSION_TOKEN);
    assert.equal(seen.ANTHROPIC_BASE_URL, "http://agent.example/c/claude");
    assert.equal(seen.ACTIONS_ID_TOKEN_REQUEST_TOKEN, undefined);
    assert.ok(!ran.stdout.includes(GITHUB_TOKEN) && !ran.stdout.includes(REQUEST_TOKEN));
  });

  test("a source the job cannot use fails before any session is opened, saying why", async () => {
    const requests = controlPlane.received.length;
    const ran = await run(["--oidc", "azure"]);
    assert.equal(ran.code, 1);
    assert.match(ran.stderr, /GATE_CI_TOKEN_UNAVAILABLE: SYSTEM_OIDCREQUESTURI is not set/);
    assert.equal(controlPlane.received.length, requests);
  });

  test("misused flags are usage errors", async () => {
    const unknown = await run(["--oidc", "jenkins"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--oidc: unknown OIDC token source 'jenkins'/);
    const orphan = await run(["--audience", "x"]);
    assert.equal(orphan.code, 2);
    assert.match(orphan.stderr, /--audience and --azure-service-connection apply only with --oidc/);
  });
});
