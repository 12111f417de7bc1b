/**
 * Admin sign-in through OIDC, driven as a browser drives it: Gatehouse's
 * `/v1/auth/login`, the issuer's login and consent forms, back to
 * `/v1/auth/callback`, following every redirect by hand and keeping cookies.
 * The issuer is a real `oidc-provider`; the routes are the real ones behind the
 * real error middleware.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { errorMiddleware } from "@gatehouse/control-plane/api/errors.js";
import { addSignInRoutes } from "@gatehouse/control-plane/api/login.js";
import type { AdminLoginConfig } from "@gatehouse/control-plane/config.js";
import { type AdminIdentity, AdminSignIn } from "@gatehouse/control-plane/identity/admin-login.js";
import Router from "@koa/router";
import Koa from "koa";
import { LogCapture, TestGatehouse } from "../support/gatehouse.js";
import { type OidcAccount, type RunningOidcProvider, startOidcProvider } from "../support/oidc-provider.js";

const CLIENT_ID = "gatehouse-admin";

const ACCOUNTS: OidcAccount[] = [
  { id: "alice", email: "alice@example.com", groups: ["staff", "gatehouse-admins", "gatehouse-auditors"] },
  { id: "bob", preferredUsername: "bob.b", groups: ["staff", "release-approvers"] },
  // One string, not an array: some issuers send a single group so.
  { id: "carol", email: "carol@example.com", groups: "compliance" },
  { id: "dave", email: "dave@example.com", groups: ["staff", "interns"] },
  { id: "erin", email: "erin@example.com" },
];

const ROLES: AdminLoginConfig["roles"] = {
  admin: ["gatehouse-admins"],
  approver: ["release-approvers"],
  auditor: ["gatehouse-auditors", "compliance"],
};

/** `identity.admin` as the config schema gives it, defaults filled in. */
function adminConfig(issuer: string, redirectUrl: string): AdminLoginConfig {
  return {
    issuer,
    clientId: CLIENT_ID,
    redirectUrl,
    scopes: ["openid", "profile", "email"],
    groupsClaim: "groups",
    roles: ROLES,
    loginTtlSeconds: 3600,
  };
}

/** What a browser keeps: cookies by name and path (every server here is 127.0.0.1, which cookies do not split by port). */
class Browser {
  private readonly cookies = new Map<string, { name: string; value: string; path: string }>();

  async request(
    url: string,
    init: { method?: string; form?: Record<string, string> } = {},
  ): Promise<Response> {
    const target = new URL(url);
    const cookie = [...this.cookies.values()]
      .filter((c) => target.pathname.startsWith(c.path))
      .map((c) => `${c.name}=${c.value}`)
      .join("; ");
    const headers: Record<string, string> = cookie ? { cookie } : {};
    const response = await fetch(target, {
      method: init.method ?? "GET",
      headers: init.form ? { ...headers, "content-type": "application/x-www-form-urlencoded" } : headers,
      ...(init.form ? { body: new URLSearchParams(init.form).toString() } : {}),
      redirect: "manual",
    });
    for (const line of response.headers.getSetCookie()) this.store(line);
    return response;
  }

  private store(line: string): void {
    const [pair = "", ...attributes] = line.split(";").map((part) => part.trim());
    const name = pair.slice(0, pair.indexOf("="));
    const value = pair.slice(pair.indexOf("=") + 1);
    const attribute = (key: string) =>
      attributes.find((a) => a.toLowerCase().startsWith(`${key}=`))?.slice(key.length + 1);
    const path = attribute("path") ?? "/";
    const expired = attribute("max-age") === "0" || Date.parse(attribute("expires") ?? "") < Date.now();
    if (expired) this.cookies.delete(`${name} ${path}`);
    else this.cookies.set(`${name} ${path}`, { name, value, path });
  }
}

/** The first capture of `pattern` in one of the issuer's pages (its own simple HTML), unescaped. */
function htmlAttribute(html: string, pattern: RegExp): string {
  const found = pattern.exec(html)?.[1];
  assert.ok(found, `the issuer's page has no ${pattern}: ${html.slice(0, 300)}`);
  return found.replaceAll("&amp;", "&");
}

interface Journey {
  /** The callback URL the issuer sent the browser to (holds the code). */
  callbackUrl: string;
  /** The `Set-Cookie` of `/v1/auth/login`. */
  loginCookie: string;
  /** The URL `/v1/auth/login` redirected to. */
  authorizationUrl: URL;
}

/**
 * Follows a sign-in from `/v1/auth/login` through the issuer up to, not into,
 * Gatehouse's callback. At the login form it signs in as `login`, or cancels
 * when `login` is null; it consents when asked.
 */
async function toCallback(gatehouse: SignInTarget, login: string | null, browser: Browser): Promise<Journey> {
  const start = await browser.request(`${gatehouse.url}/v1/auth/login`);
  assert.equal(start.status, 302, await start.clone().text());
  const loginCookie = start.headers.get("set-cookie") ?? "";
  const authorizationUrl = new URL(start.headers.get("location") ?? "");
  let url = authorizationUrl.href;
  for (let step = 0; step < 20; step++) {
    if (url.startsWith(gatehouse.redirectUrl)) return { callbackUrl: url, loginCookie, authorizationUrl };
    const response = await browser.request(url);
    const location = response.headers.get("location");
    if (location !== null) {
      url = new URL(location, url).href;
      continue;
    }
    assert.equal(response.status, 200, `the issuer answered ${url} with ${response.status}`);
    const html = await response.text();
    const action = new URL(htmlAttribute(html, /<form[^>]* action="([^"]+)"/), url).href;
    let next: Response;
    if (html.includes('name="prompt" value="login"')) {
      next =
        login === null
          ? await browser.request(new URL(htmlAttribute(html, /<a href="([^"]+)">\[ Cancel \]/), url).href)
          : await browser.request(action, {
              method: "POST",
              form: { prompt: "login", login, password: "any" },
            });
    } else {
      assert.ok(html.includes('name="prompt" value="consent"'), `unexpected page at ${url}`);
      next = await browser.request(action, { method: "POST", form: { prompt: "consent" } });
    }
    url = new URL(next.headers.get("location") ?? "", url).href;
  }
  assert.fail("the sign-in did not come back to the callback within 20 steps");
}

/** A whole sign-in in a fresh browser: Gatehouse's answer at the callback. */
async function signIn(gatehouse: SignInTarget, login: string | null): Promise<Response> {
  const browser = new Browser();
  const { callbackUrl } = await toCallback(gatehouse, login, browser);
  return browser.request(callbackUrl);
}

/** Where a browser signs in: a control plane's base URL and its configured callback. */
interface SignInTarget {
  url: string;
  redirectUrl: string;
}

/** The Gatehouse side: the sign-in routes behind the real error middleware, with a recording issueLoginKey. */
interface SignInApp extends SignInTarget {
  /** Who issueLoginKey was asked to make a key for. */
  asked: AdminIdentity[];
  logs: LogCapture;
  /**
   * Builds the AdminSignIn and starts answering (until then the port is held but
   * nothing answers); null mounts the routes as a control plane without `identity.admin` does.
   */
  serve(issuer: string | null, clientSecret?: string): void;
  stop(): Promise<void>;
}

async function startSignInApp(): Promise<SignInApp> {
  const server: Server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const redirectUrl = `${url}/v1/auth/callback`;
  const asked: AdminIdentity[] = [];
  const logs = new LogCapture();
  return {
    url,
    redirectUrl,
    asked,
    logs,
    serve(issuer, clientSecret) {
      const app = new Koa();
      app.use(errorMiddleware(logs.log("cp.api")));
      const router = new Router();
      addSignInRoutes(
        router,
        issuer === null
          ? undefined
          : {
              signIn: new AdminSignIn(adminConfig(issuer, redirectUrl), {
                clientSecret,
                logger: logs.log("cp.sign-in"),
              }),
              issueLoginKey: async (identity) => {
                asked.push(identity);
                return {
                  id: randomUUID(),
                  key: `gak_${randomBytes(24).toString("base64url")}`,
                  expiresAt: Date.UTC(2030, 0, 1),
                };
              },
            },
      );
      app.use(router.routes());
      server.removeAllListeners("request");
      server.on("request", app.callback());
    },
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}

/** The callback's answer to a sign-in that succeeded. */
async function grantOf(
  response: Response,
): Promise<{ key: string; id: string; role: string; name: string; expiresAt: string }> {
  const text = await response.text();
  assert.equal(response.status, 200, text);
  return JSON.parse(text);
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  const body = (await response.json()) as { error: { code: string; message: string } };
  return body.error;
}

/** Gatehouse's sign-in routes and an issuer that has them as its client (confidential with `clientSecret`). */
async function startWithIssuer(
  clientSecret?: string,
): Promise<{ gatehouse: SignInApp; issuer: RunningOidcProvider; stop(): Promise<void> }> {
  const gatehouse = await startSignInApp();
  const issuer = await startOidcProvider({
    clientId: CLIENT_ID,
    ...(clientSecret === undefined ? {} : { clientSecret }),
    redirectUris: [gatehouse.redirectUrl],
    accounts: ACCOUNTS,
  });
  return {
    gatehouse,
    issuer,
    async stop() {
      await gatehouse.stop();
      await issuer.stop();
    },
  };
}

describe("admin sign-in through OIDC (authorization code + PKCE)", () => {
  let gatehouse: SignInApp;
  let issuer: RunningOidcProvider;
  let stop: () => Promise<void>;

  before(async () => {
    ({ gatehouse, issuer, stop } = await startWithIssuer());
    gatehouse.serve(issuer.issuer);
  });
  after(() => stop());

  test("a member of an admin group gets an admin API key, and the pending sign-in cookie is cleared", async () => {
    const browser = new Browser();
    const { callbackUrl, loginCookie, authorizationUrl } = await toCallback(gatehouse, "alice", browser);
    const response = await browser.request(callbackUrl);
    const body = await grantOf(response);
    assert.equal(response.headers.get("cache-control"), "no-store");
    assert.deepEqual(Object.keys(body).sort(), ["expiresAt", "id", "key", "name", "role"]);
    assert.equal(body.role, "admin");
    assert.equal(body.name, "alice@example.com");
    assert.equal(body.expiresAt, "2030-01-01T00:00:00.000Z");
    assert.match(body.key, /^gak_/);
    // Alice is in an auditor group too: the stronger role wins.
    assert.deepEqual(gatehouse.asked.at(-1), {
      subject: `${issuer.issuer}#alice`,
      name: "alice@example.com",
      role: "admin",
    });
    assert.match(response.headers.get("set-cookie") ?? "", /^gatehouse_login=; Path=\/v1\/auth; Max-Age=0/);

    assert.match(loginCookie, /^gatehouse_login=[\w.-]+; /);
    for (const attribute of ["Path=/v1/auth", "Max-Age=600", "HttpOnly", "SameSite=Lax"]) {
      assert.ok(loginCookie.split("; ").includes(attribute), `${attribute} missing from ${loginCookie}`);
    }
    assert.ok(!loginCookie.includes("Secure"), "an http callback cannot receive a Secure cookie");
    const query = authorizationUrl.searchParams;
    assert.equal(query.get("code_challenge_method"), "S256");
    assert.equal(query.get("response_type"), "code");
    assert.equal(query.get("redirect_uri"), gatehouse.redirectUrl);
    assert.deepEqual(query.get("scope")?.split(" "), ["openid", "profile", "email"]);
    assert.ok(query.get("state") && query.get("nonce") && query.get("code_challenge"));
  });

  test("neither the answers nor the logs contain the code, the PKCE verifier or the issuer's tokens", async () => {
    const logsBefore = gatehouse.logs.lines.length;
    const tokensBefore = issuer.issuedTokens.length;
    const browser = new Browser();
    const journey = await toCallback(gatehouse, "alice", browser);
    const callback = await browser.request(journey.callbackUrl);
    assert.equal(callback.status, 200);
    const verifier = /^gatehouse_login=[^.]+\.[^.]+\.([^;]+);/.exec(journey.loginCookie)?.[1];
    const code = new URL(journey.callbackUrl).searchParams.get("code");
    const tokens = issuer.issuedTokens.slice(tokensBefore);
    assert.ok(
      verifier && code && tokens.length >= 2,
      "the sign-in used a verifier and a code and got tokens",
    );
    const seen = [
      journey.authorizationUrl.href,
      [...callback.headers].join("\n"),
      await callback.text(),
      ...gatehouse.logs.lines.slice(logsBefore),
    ].join("\n");
    for (const secret of [verifier, code, ...tokens]) {
      assert.ok(!seen.includes(secret), `a secret of the sign-in (${secret.slice(0, 6)}…) leaked`);
    }
  });

  test("an approver-only user gets approver; a user whose groups claim is one string gets auditor", async () => {
    const bob = await grantOf(await signIn(gatehouse, "bob"));
    // Bob has no email: the preferred username names him.
    assert.deepEqual([bob.role, bob.name], ["approver", "bob.b"]);
    assert.equal((await grantOf(await signIn(gatehouse, "carol"))).role, "auditor");
  });

  test("a user in no mapped group is refused with 403, naming the claim and their groups", async () => {
    const asked = gatehouse.asked.length;
    const response = await signIn(gatehouse, "dave");
    assert.equal(response.status, 403);
    const error = await errorOf(response);
    assert.equal(error.code, "GATE_FORBIDDEN");
    assert.match(error.message, /"dave@example\.com" is in no group mapped to a role/);
    assert.match(error.message, /the "groups" claim lists "staff", "interns"/);
    assert.match(error.message, /identity\.admin\.roles/);
    assert.equal(gatehouse.asked.length, asked, "no key is issued");
  });

  test("a user whose ID token has no groups claim is told which claim was missing", async () => {
    const response = await signIn(gatehouse, "erin");
    assert.equal(response.status, 403);
    const error = await errorOf(response);
    assert.equal(error.code, "GATE_FORBIDDEN");
    assert.match(error.message, /the ID token has no "groups" claim/);
  });

  test("a callback with a wrong state or without the cookie is refused with 401, and the real one still works", async () => {
    const browser = new Browser();
    const { callbackUrl } = await toCallback(gatehouse, "alice", browser);
    const forged = new URL(callbackUrl);
    forged.searchParams.set("state", "x".repeat(43));
    const wrongState = await browser.request(forged.href);
    assert.equal(wrongState.status, 401);
    const error = await errorOf(wrongState);
    assert.equal(error.code, "GATE_UNAUTHENTICATED");
    assert.equal(error.message, "sign-in expired or was started elsewhere; start again at /v1/auth/login");

    const elsewhere = await new Browser().request(callbackUrl);
    assert.equal(elsewhere.status, 401);
    assert.equal((await errorOf(elsewhere)).code, "GATE_UNAUTHENTICATED");

    // The refusals happened before the code was used: the browser that started the sign-in finishes it.
    const genuine = await browser.request(callbackUrl);
    assert.equal(genuine.status, 200);
    // Regression guard: replaying the callback must not issue a second key (the cookie is gone).
    const replay = await browser.request(callbackUrl);
    assert.equal(replay.status, 401);
  });

  test("a sign-in the user cancels at the issuer comes back as a clear 401 with the issuer's error", async () => {
    const response = await signIn(gatehouse, null);
    assert.equal(response.status, 401);
    const error = await errorOf(response);
    assert.equal(error.code, "GATE_UNAUTHENTICATED");
    assert.equal(
      error.message,
      'the issuer refused the sign-in: "access_denied" ("End-User aborted interaction"); start again at /v1/auth/login',
    );
  });

  test("an issuer error description is shown as JSON text, not as part of the message", async () => {
    const browser = new Browser();
    const { callbackUrl } = await toCallback(gatehouse, "alice", browser);
    const forged = new URL(callbackUrl);
    forged.searchParams.delete("code");
    forged.searchParams.set("error", "server_error");
    forged.searchParams.set("error_description", 'oops"); all good (');
    const response = await browser.request(forged.href);
    assert.equal(response.status, 401);
    assert.match((await errorOf(response)).message, /"server_error" \("oops\\"\); all good \("\)/);
  });

  test("the cookie is Secure when the callback is https", async () => {
    const signIn = new AdminSignIn(adminConfig(issuer.issuer, "https://gatehouse.example/v1/auth/callback"), {
      logger: gatehouse.logs.log("cp.sign-in"),
    });
    const { cookie, state, authorizationUrl } = await signIn.begin();
    assert.ok(cookie.split("; ").includes("Secure"), cookie);
    assert.ok(signIn.clearCookie.split("; ").includes("Secure"));
    assert.equal(authorizationUrl.searchParams.get("state"), state);
  });
});

describe("admin sign-in when the issuer is down", () => {
  test("a sign-in gets 503 naming the issuer, and works once the issuer is back, without a restart", async () => {
    const gatehouse = await startSignInApp();
    let issuer: RunningOidcProvider | undefined;
    try {
      const options = { clientId: CLIENT_ID, redirectUris: [gatehouse.redirectUrl], accounts: ACCOUNTS };
      // Learn a port the issuer will be at, then take it down before Gatehouse first looks.
      const first = await startOidcProvider(options);
      await first.stop();
      gatehouse.serve(first.issuer);
      const down = await new Browser().request(`${gatehouse.url}/v1/auth/login`);
      assert.equal(down.status, 503);
      const error = await errorOf(down);
      assert.equal(error.code, "GATE_IDENTITY_UNAVAILABLE");
      assert.ok(
        error.message.startsWith(`cannot reach the sign-in issuer ${first.issuer} (its discovery document:`),
      );
      assert.match(error.message, /ECONNREFUSED/);

      issuer = await startOidcProvider({ ...options, port: first.port });
      assert.equal((await grantOf(await signIn(gatehouse, "alice"))).role, "admin");
    } finally {
      await gatehouse.stop();
      await issuer?.stop();
    }
  });
});

describe("admin sign-in as a confidential client", () => {
  let gatehouse: SignInApp;
  let issuer: RunningOidcProvider;
  const secret = randomBytes(24).toString("base64url");

  let stop: () => Promise<void>;

  before(async () => {
    ({ gatehouse, issuer, stop } = await startWithIssuer(secret));
  });
  after(() => stop());

  test("the client secret from the file (newline and all) authenticates the code exchange", async () => {
    gatehouse.serve(issuer.issuer, `${secret}\n`);
    assert.equal((await grantOf(await signIn(gatehouse, "bob"))).role, "approver");
  });

  test("a wrong client secret is refused by the issuer, and the answer says what to check", async () => {
    gatehouse.serve(issuer.issuer, "not-the-secret");
    const response = await signIn(gatehouse, "bob");
    assert.equal(response.status, 401);
    const error = await errorOf(response);
    assert.equal(error.code, "GATE_UNAUTHENTICATED");
    assert.match(error.message, /^the issuer refused the sign-in: "invalid_client"/);
    assert.match(error.message, /check identity\.admin's clientId and client secret/);
    assert.ok(!error.message.includes("not-the-secret"));
  });
});

describe("a control plane without identity.admin", () => {
  test("answers both sign-in routes with 404 saying sign-in is not configured", async () => {
    const gatehouse = await startSignInApp();
    gatehouse.serve(null);
    try {
      for (const path of ["/v1/auth/login", "/v1/auth/callback?code=x&state=y"]) {
        const response = await new Browser().request(`${gatehouse.url}${path}`);
        assert.equal(response.status, 404);
        assert.deepEqual(await errorOf(response), {
          code: "GATE_NOT_FOUND",
          message:
            "sign-in through OIDC is not configured on this control plane (identity.admin); use an API key",
        });
      }
    } finally {
      await gatehouse.stop();
    }
  });
});

/** A port free now, for a control plane whose callback URL the issuer must know before it starts. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

test("through a whole control plane: a sign-in's key carries its role, is listed, revocable and audited", async () => {
  const url = `http://127.0.0.1:${await freePort()}`;
  const target = { url, redirectUrl: `${url}/v1/auth/callback` };
  const issuer = await startOidcProvider({
    clientId: CLIENT_ID,
    redirectUris: [target.redirectUrl],
    accounts: ACCOUNTS,
  });
  const gh = await TestGatehouse.start({
    controlPlane: {
      http: { listen: url.replace("http://", "") },
      identity: {
        admin: { issuer: issuer.issuer, clientId: CLIENT_ID, redirectUrl: target.redirectUrl, roles: ROLES },
      },
    },
  });
  const call = (method: string, path: string, key: string, json?: unknown) =>
    fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    });
  try {
    const carol = await grantOf(await signIn(target, "carol"));
    assert.equal(carol.role, "auditor");
    assert.equal((await call("GET", "/v1/sessions", carol.key)).status, 200);
    const refused = await call("POST", "/v1/api-keys", carol.key, { name: "x", role: "admin" });
    assert.equal(refused.status, 403);
    assert.equal(
      (await errorOf(refused)).message,
      "this action needs the role admin; your key 'carol@example.com' has auditor",
    );

    const alice = await grantOf(await signIn(target, "alice"));
    assert.equal(
      (await call("POST", "/v1/api-keys", alice.key, { name: "nightly", role: "auditor" })).status,
      201,
    );
    const keys = (await (await call("GET", "/v1/api-keys", alice.key)).json()) as {
      items: Array<{ id: string; kind: string; name: string; role: string; createdBy: string }>;
    };
    const carolsKey = keys.items.find((k) => k.id === carol.id);
    assert.deepEqual(carolsKey && [carolsKey.kind, carolsKey.name, carolsKey.role, carolsKey.createdBy], [
      "login",
      "carol@example.com",
      "auditor",
      `${issuer.issuer}#carol`,
    ]);
    // An admin ends a sign-in by revoking its key.
    assert.equal((await call("DELETE", `/v1/api-keys/${carol.id}`, alice.key)).status, 200);
    assert.equal((await call("GET", "/v1/sessions", carol.key)).status, 401);

    const audit = (await (await call("GET", "/v1/audit", alice.key)).json()) as {
      items: Array<{ action: string; actor: string; target: string }>;
    };
    assert.deepEqual(
      audit.items.filter((e) => e.target === carol.id).map((e) => [e.action, e.actor]),
      [
        ["api-key.revoke", alice.id],
        ["auth.login", `${issuer.issuer}#carol`],
      ],
    );
  } finally {
    await gh.stop();
    await issuer.stop();
  }
});
