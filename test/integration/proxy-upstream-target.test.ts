/**
 * Where the agent sends a request, and so the connection's real credential:
 * always to the connection's upstream, below its base path, whatever path the
 * client sends. A second server stands in for an attacker's host and must
 * receive nothing.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { upstreamTarget } from "@gatehouse/agent/proxy/target.js";
import { GatehouseError } from "@gatehouse/proto/errors";
import fc from "fast-check";
import { TestGatehouse, UPSTREAM_KEY_ENV } from "../support/gatehouse.js";

/** An HTTP server that notes what reached it and answers every request with `{}`. */
interface Witness {
  server: Server;
  port: number;
  received: Array<{ path: string; apiKey: string | undefined }>;
}

async function startWitness(): Promise<Witness> {
  const received: Witness["received"] = [];
  const server = createServer((req, res) => {
    const key = req.headers["x-api-key"];
    received.push({ path: req.url ?? "", apiKey: typeof key === "string" ? key : undefined });
    req.resume();
    res.writeHead(200, { "content-type": "application/json" }).end("{}");
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return { server, port: (server.address() as AddressInfo).port, received };
}

/** A raw request, so that the path reaches the agent exactly as written (no URL normalisation). */
async function rawPost(
  origin: string,
  path: string,
  token: string,
): Promise<{ status: number; code: string | undefined; body: string }> {
  const { hostname, port } = new URL(origin);
  const req = httpRequest({
    host: hostname,
    port,
    path,
    method: "POST",
    headers: { "x-api-key": token, "content-type": "application/json" },
  });
  req.end(JSON.stringify({ model: "claude-sonnet-4-6", max_tokens: 8, messages: [] }));
  const [res] = (await once(req, "response")) as [IncomingMessage];
  let body = "";
  for await (const chunk of res) body += String(chunk);
  const code = res.headers["x-gatehouse-error"];
  return { status: res.statusCode ?? 0, code: typeof code === "string" ? code : undefined, body };
}

describe("the upstream a request goes to", () => {
  let gh: TestGatehouse;
  let evil: Witness;
  let based: Witness;

  before(async () => {
    evil = await startWitness();
    based = await startWitness();
    gh = await TestGatehouse.start({
      connections: [
        {
          name: "based",
          type: "anthropic",
          upstream: `http://127.0.0.1:${based.port}/base`,
          credential: { env: UPSTREAM_KEY_ENV },
        },
      ],
    });
  });
  after(async () => {
    await gh.stop();
    evil.server.close();
    based.server.close();
  });

  /**
   * Sends each of `paths` on a new session of the `based` connection and asserts each was
   * refused with 400 GATE_INVALID_REQUEST and recorded as refused, and that nothing reached upstream.
   */
  async function expectRefused(paths: string[]): Promise<void> {
    const session = await gh.openSession("based");
    const origin = new URL(session.proxyUrl).origin;
    for (const path of paths) {
      const res = await rawPost(origin, path, session.token);
      assert.equal(res.status, 400, path);
      assert.equal(res.code, "GATE_INVALID_REQUEST", path);
      assert.match(res.body, /"type":"invalid_request_error".*request path must not/, path);
    }
    assert.deepEqual(based.received, [], "nothing reached the upstream");
    const exchanges = (await gh.record(session.id)).exchanges;
    assert.deepEqual(
      exchanges.map((x) => [x.outcome, x.error?.code]),
      paths.map(() => ["refused", "GATE_INVALID_REQUEST"]),
    );
  }

  test("a path naming another host is refused with 400 and the credential stays home, from the SDK too", async () => {
    // Regression: the agent built `new URL(basePath + path, origin)` from the client's path, so
    // `//host/…` and `/\host/…` were read as another authority and got the real credential.
    const session = await gh.openSession();
    const origin = new URL(session.proxyUrl).origin;
    const before = gh.fake.requests.length;
    const paths = [
      `/c/claude//127.0.0.1:${evil.port}/v1/messages`,
      `/c/claude/\\127.0.0.1:${evil.port}/v1/messages`,
      `/c/claude/\\\\127.0.0.1:${evil.port}/v1/messages`,
      `/c/claude//\\127.0.0.1:${evil.port}/v1/messages`,
    ];
    for (const path of paths) {
      const res = await rawPost(origin, path, session.token);
      assert.equal(res.status, 400, path);
      assert.equal(res.code, "GATE_INVALID_REQUEST", path);
      assert.match(res.body, /"type":"invalid_request_error".*GATE_INVALID_REQUEST/, path);
    }

    // The real SDK keeps `//` in a base URL, so a mistyped or planted ANTHROPIC_BASE_URL does this.
    const sdk = new Anthropic({
      baseURL: `${session.proxyUrl}//127.0.0.1:${evil.port}`,
      authToken: session.token,
      apiKey: null,
      maxRetries: 0,
    });
    await assert.rejects(
      sdk.messages.create({ model: "claude-sonnet-4-6", max_tokens: 8, messages: [] }),
      (error: unknown) => {
        assert.ok(error instanceof Anthropic.BadRequestError);
        assert.match(error.message, /GATE_INVALID_REQUEST.*must not start with \/\//);
        return true;
      },
    );

    assert.deepEqual(evil.received, [], "the other host received nothing");
    assert.equal(gh.fake.requests.length, before, "nor did the real upstream");
    const exchanges = (await gh.record(session.id)).exchanges;
    assert.equal(exchanges.length, paths.length + 1);
    for (const exchange of exchanges) {
      assert.equal(exchange.outcome, "refused");
      assert.equal(exchange.status, 400);
      assert.equal(exchange.error?.code, "GATE_INVALID_REQUEST");
    }
    assert.equal(exchanges[0]?.path, `//127.0.0.1:${evil.port}/v1/messages`, "the record has what was sent");
  });

  test("dot segments, raw or percent-encoded in any case, cannot climb out of the base path", async () => {
    // Regression: `..` and `%2e%2e` segments were resolved by the URL parser, so
    // `/c/based/../secret` requested `/secret` upstream, outside the connection's `/base`.
    await expectRefused([
      "/c/based/../secret",
      "/c/based/v1/../../secret",
      "/c/based/%2e%2e/secret",
      "/c/based/%2E%2e/secret",
      "/c/based/.%2E/secret",
      "/c/based/%2e./secret",
      "/c/based/./v1/messages",
      "/c/based/%2e/v1/messages",
      "/c/based/v1/..%2fsecret",
      "/c/based/v1/..%5Csecret",
      "/c/based/v1\\..\\..\\secret",
    ]);
  });

  test("segments with ;parameters and twice-encoded dots or separators are refused too", async () => {
    // Regression: `..;x` (a `..` to a servlet container, which drops `;params` from a segment)
    // and `%252e%252e` / `%252f` (a `..` or `/` to a server that decodes twice) reached upstream
    // with the credential, and climbed out of the base path there.
    await expectRefused([
      "/c/based/..;/secret",
      "/c/based/v1/..;jsessionid=x/../secret",
      "/c/based/.;x/v1/messages",
      "/c/based/%2e%2E;/secret",
      "/c/based/..%3b/secret",
      "/c/based/..%3Bx/secret",
      "/c/based/%252e%252e/secret",
      "/c/based/%252E%252E/secret",
      "/c/based/v1/..%252fsecret",
      "/c/based/v1/..%252Fsecret",
      "/c/based/v1/..%255csecret",
      "/c/based/v1/..%255Csecret",
      "/c/based/v1/%25252e%25252e/secret",
    ]);
    // A semicolon elsewhere, and a `%25` that encodes nothing of the kind, are ordinary path text.
    for (const path of ["/v1/models/a;b", "/v1/models/..a;b", "/v1/models/100%25"]) {
      assert.equal(upstreamTarget(new URL("http://up.example/base"), path).path, path);
    }
  });

  test("a valid path goes below the base path, and the record has the path requested upstream", async () => {
    const session = await gh.openSession("based");
    const origin = new URL(session.proxyUrl).origin;
    const ok = await rawPost(origin, "/c/based/v1/messages?beta=true", session.token);
    assert.equal(ok.status, 200);
    // The URL parser percent-encodes `"`, `{` and `}`: the record must show what upstream got.
    const encoded = await rawPost(origin, '/c/based/v1/models/a"b{c}', session.token);
    assert.equal(encoded.status, 200);
    assert.deepEqual(based.received, [
      { path: "/base/v1/messages?beta=true", apiKey: gh.fake.apiKey },
      { path: "/base/v1/models/a%22b%7Bc%7D", apiKey: gh.fake.apiKey },
    ]);
    based.received.length = 0;
    const exchanges = (await gh.record(session.id)).exchanges;
    assert.deepEqual(
      exchanges.map((x) => [x.path, x.kind, x.outcome]),
      [
        ["/v1/messages?beta=true", "anthropic.messages", "completed"],
        ["/v1/models/a%22b%7Bc%7D", "anthropic.models", "completed"],
      ],
    );
  });

  test("whatever the path, a target that is returned lies inside the connection (property)", () => {
    // The text checks and the final origin/base-path check must agree: any path that is not
    // refused resolves below the base path, on the upstream's origin, without dot segments.
    const upstream = new URL("http://up.example:8080/base");
    const piece = fc.constantFrom(
      "/",
      "//",
      "\\",
      ".",
      "..",
      "%2e",
      "%2E",
      "%2f",
      "%5c",
      "?",
      "#",
      "@",
      ":",
      "evil.example",
      "v1",
      "messages",
      "\t",
      "%",
      "%00",
      ";",
      "%3b",
      "%25",
      "%252e",
      "%252F",
      "%255c",
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 12 }), (pieces) => {
        const path = `/${pieces.join("")}`;
        let target: ReturnType<typeof upstreamTarget>;
        try {
          target = upstreamTarget(upstream, path);
        } catch (error) {
          assert.ok(error instanceof GatehouseError);
          assert.equal(error.code, "GATE_INVALID_REQUEST");
          return;
        }
        assert.equal(target.url.origin, upstream.origin);
        assert.ok(target.url.pathname.startsWith("/base/"), target.url.href);
        assert.equal(target.url.pathname + target.url.search, `/base${target.path}`);
        // Nor dot segments to a server that drops `;params` or decodes once or twice more.
        const decoded = (text: string) => {
          try {
            return decodeURIComponent(text);
          } catch {
            return text;
          }
        };
        for (const segment of target.url.pathname.split("/")) {
          for (const seen of [segment, decoded(segment), decoded(decoded(segment))]) {
            const bare = seen.split(";", 1)[0];
            assert.ok(bare !== "." && bare !== ".." && !/[/\\]/.test(seen), target.url.href);
          }
        }
      }),
      { numRuns: 5000 },
    );
  });
});
