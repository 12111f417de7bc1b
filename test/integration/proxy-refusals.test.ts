/**
 * What the agent does with bad input and failures: each case gets an error in
 * Anthropic's shape (so the SDK and Claude Code show the reason), a stable
 * Gatehouse code, and — when the session is known — a record of the refusal.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { request as httpRequest } from "node:http";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { generateKeyPair, SignJWT } from "jose";
import { TestGatehouse } from "../support/gatehouse.js";

const request = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hi" }],
};

async function rawPost(
  url: string,
  token: string,
  body: string | Buffer,
  headers: Record<string, string> = {},
) {
  const res = await fetch(`${url}/v1/messages`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json", ...headers },
    body,
  });
  return {
    status: res.status,
    code: res.headers.get("x-gatehouse-error"),
    body: (await res.json()) as unknown,
  };
}

describe("agent refusals and failures", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start({
      agent: { proxy: { listen: "127.0.0.1:0", maxRequestBytes: 64 * 1024, upstreamIdleTimeoutSeconds: 1 } },
      connections: [
        {
          name: "other",
          type: "anthropic",
          upstream: "https://api.example.invalid",
          credential: { env: "UNUSED" },
        },
        {
          name: "down",
          type: "anthropic",
          // Port 1: nothing listens there. A port bound and released by the test could be
          // taken meanwhile by a server of another test file (FerretDB, say), which answers.
          upstream: "http://127.0.0.1:1",
          credential: { env: "GATEHOUSE_TEST_UPSTREAM_KEY" },
        },
        {
          name: "nokey",
          type: "anthropic",
          upstream: "http://127.0.0.1:9",
          credential: { env: "NOT_SET_ANYWHERE" },
        },
      ],
    });
  });
  after(() => gh.stop());

  test("an unknown connection is 404 and does not list the agent's connections", async () => {
    // Regression: the message listed every connection name to anyone, before authentication.
    const session = await gh.openSession();
    const client = new Anthropic({
      baseURL: session.proxyUrl.replace("/c/claude", "/c/nope"),
      authToken: session.token,
      apiKey: null,
      maxRetries: 0,
    });
    await assert.rejects(client.messages.create(request), (error: unknown) => {
      assert.ok(error instanceof Anthropic.NotFoundError);
      assert.match(
        error.message,
        /GATE_CONNECTION_NOT_FOUND.*connection 'nope' not found on this agent; check the proxy URL the session gave you/,
      );
      for (const name of ["claude", "other", "down", "nokey"]) {
        assert.ok(!error.message.includes(name), `the message does not name '${name}'`);
      }
      return true;
    });
  });

  test("a malformed escape in the connection name is 400, and the URL is not logged", async () => {
    // Regression: decodeURIComponent threw, which became a 500 GATE_INTERNAL and an error log
    // line carrying the raw URL (where a token pasted into the URL would have been kept).
    const session = await gh.openSession();
    const origin = new URL(session.proxyUrl).origin;
    const from = gh.logs.lines.length;
    for (const name of ["%E0%A4%A", "%zz", "claude%"]) {
      const res = await fetch(`${origin}/c/${name}/v1/messages?note=sk-canary-in-url`, {
        method: "POST",
        headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
        body: JSON.stringify(request),
      });
      assert.equal(res.status, 400, name);
      assert.equal(res.headers.get("x-gatehouse-error"), "GATE_INVALID_REQUEST");
      assert.match(
        JSON.stringify(await res.json()),
        /invalid_request_error.*connection name in the path is not valid percent-encoding/,
      );
    }
    const logged = gh.logs.lines.slice(from).join("");
    assert.ok(!logged.includes("sk-canary-in-url"), "the URL is not in the log");
    assert.ok(!logged.includes("proxy request failed"), "nor is it logged as a failure");
  });

  test("a missing token is 401 and says how to send one", async () => {
    const session = await gh.openSession();
    const res = await fetch(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      body: JSON.stringify(request),
    });
    assert.equal(res.status, 401);
    assert.deepEqual(await res.json(), {
      type: "error",
      error: {
        type: "authentication_error",
        message:
          "Gatehouse (GATE_UNAUTHENTICATED): missing session token: send it as x-api-key or `Authorization: Bearer` (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN)",
      },
    });
  });

  test("a forged token (signed by another key) is 401 and never reaches upstream", async () => {
    const session = await gh.openSession();
    const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const forged = await new SignJWT({ sid: session.id, cnx: "claude" })
      .setProtectedHeader({ alg: "EdDSA", kid: "forged" })
      .setIssuer("gatehouse")
      .setAudience("gatehouse-agent")
      .setSubject("attacker")
      .setExpirationTime("10m")
      .sign(privateKey);
    const before = gh.fake.requests.length;
    const res = await rawPost(session.proxyUrl, forged, JSON.stringify(request));
    assert.equal(res.status, 401);
    assert.equal(res.code, "GATE_TOKEN_INVALID");
    assert.equal(gh.fake.requests.length, before);
  });

  test("an expired token is 401 GATE_TOKEN_EXPIRED", async () => {
    gh.clockOffsetMs = -2 * 3600_000;
    const session = await gh.openSession("claude", 60);
    gh.clockOffsetMs = 0;
    const res = await rawPost(session.proxyUrl, session.token, JSON.stringify(request));
    assert.equal(res.status, 401);
    assert.equal(res.code, "GATE_TOKEN_EXPIRED");
  });

  test("closing a session revokes its token at the agent", async () => {
    const session = await gh.openSession();
    assert.equal((await rawPost(session.proxyUrl, session.token, JSON.stringify(request))).status, 200);
    const revoked = once(gh.agent.verifier, "revoked");
    const closed = await gh.admin.closeSession(session.id);
    assert.equal(closed.status, "closed");
    assert.deepEqual((await revoked)[0], [session.id]);
    const res = await rawPost(session.proxyUrl, session.token, JSON.stringify(request));
    assert.equal(res.status, 401);
    assert.equal(res.code, "GATE_TOKEN_REVOKED");
  });

  test("a token for one connection is refused on another", async () => {
    const session = await gh.openSession("claude");
    const res = await rawPost(
      session.proxyUrl.replace("/c/claude", "/c/other"),
      session.token,
      JSON.stringify(request),
    );
    assert.equal(res.status, 403);
    assert.equal(res.code, "GATE_WRONG_CONNECTION");
    assert.match(JSON.stringify(res.body), /permission_error/);
  });

  test("malformed JSON is 400, not sent upstream, and recorded as refused with what was sent", async () => {
    const session = await gh.openSession();
    const before = gh.fake.requests.length;
    // V8's own message would quote this body; the agent's must not (it may hold a secret).
    const malformed = '{"model": "claude-sonnet-4-6", "note": sk-canary-0123456789}';
    const res = await rawPost(session.proxyUrl, session.token, malformed);
    assert.equal(res.status, 400);
    assert.equal(res.code, "GATE_INVALID_JSON");
    assert.match(JSON.stringify(res.body), /invalid_request_error.*not valid JSON/);
    assert.ok(!JSON.stringify(res.body).includes("canary"), "the error does not quote the body");
    assert.equal(gh.fake.requests.length, before);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "refused");
    assert.equal(exchange?.status, 400);
    assert.equal(exchange?.error?.code, "GATE_INVALID_JSON");
    assert.equal(exchange?.request.body, malformed);
  });

  test("a body past proxy.maxRequestBytes is 413, whether declared or streamed", async () => {
    const session = await gh.openSession();
    const big = JSON.stringify({ ...request, messages: [{ role: "user", content: "x".repeat(100 * 1024) }] });
    const declared = await rawPost(session.proxyUrl, session.token, big);
    assert.equal(declared.status, 413);
    assert.equal(declared.code, "GATE_BODY_TOO_LARGE");
    assert.match(JSON.stringify(declared.body), /request_too_large.*65536 bytes/);

    // Chunked upload without Content-Length: refused once the limit is passed.
    const chunks = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 20; i++) controller.enqueue(new TextEncoder().encode("y".repeat(8192)));
        controller.close();
      },
    });
    const streamed = await fetch(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${session.token}` },
      body: chunks,
      duplex: "half",
    } as RequestInit);
    assert.equal(streamed.status, 413);
    const record = await gh.record(session.id);
    assert.deepEqual(
      record.exchanges.map((x) => [x.outcome, x.error?.code]),
      [
        ["refused", "GATE_BODY_TOO_LARGE"],
        ["refused", "GATE_BODY_TOO_LARGE"],
      ],
    );
  });

  test("an unreachable upstream is 502 with the reason, recorded as failed", async () => {
    const session = await gh.openSession("down");
    const client = gh.anthropic(session);
    await assert.rejects(client.messages.create(request), (error: unknown) => {
      assert.ok(error instanceof Anthropic.APIError);
      assert.equal(error.status, 502);
      assert.match(
        error.message,
        /GATE_UPSTREAM_UNREACHABLE.*unreachable \(ECONNREFUSED\); check the connection's upstream URL/,
      );
      return true;
    });
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.error?.code, "GATE_UPSTREAM_UNREACHABLE");
  });

  test("a credential missing on the agent is 503 naming what to set, never a value", async () => {
    const session = await gh.openSession("nokey");
    const res = await rawPost(session.proxyUrl, session.token, JSON.stringify(request));
    assert.equal(res.status, 503);
    assert.equal(res.code, "GATE_CREDENTIAL_UNAVAILABLE");
    assert.match(JSON.stringify(res.body), /environment variable NOT_SET_ANYWHERE is not set on the agent/);
  });

  test("a client that disconnects mid-stream aborts upstream, and the exchange is recorded as cancelled", async () => {
    gh.fake.reply({
      content: [{ type: "text", text: "a long answer that never finishes" }],
      streaming: { pieces: 8, hold: { afterEvents: 4 } },
    });
    const session = await gh.openSession();
    const next = gh.fake.nextRequest();
    const finished = gh.exchangeFinished(session.id);
    const stream = gh.anthropic(session).messages.stream(request);
    const aborted = stream.done().catch((error: unknown) => error);
    const upstream = await next;
    await new Promise((resolve) => stream.once("streamEvent", resolve));
    stream.abort();
    assert.ok((await aborted) instanceof Anthropic.APIUserAbortError);
    await upstream.ended;
    assert.equal((await finished).outcome, "OUTCOME_CANCELLED");
    gh.fake.reply(null);
    assert.equal(upstream.closedEarly, true, "the agent aborted the upstream request");
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "cancelled");
    assert.equal(exchange?.error?.code, "GATE_CLIENT_GONE");
    assert.equal(exchange?.response?.complete, false);
  });

  test("a client that leaves mid-upload is recorded as cancelled, and nothing goes upstream", async () => {
    // Regression: the broken upload surfaced as an "aborted" error from the body reader and was
    // recorded as refused with 500 GATE_INTERNAL, as if the agent had failed.
    const session = await gh.openSession();
    const before = gh.fake.requests.length;
    const finished = gh.exchangeFinished(session.id);
    // The first events written after the request arrives are its head: the agent has
    // authenticated it and is reading the body.
    const recording = once(gh.agent.spool, "written");
    const { hostname, port } = new URL(session.proxyUrl);
    const req = httpRequest({
      host: hostname,
      port,
      path: "/c/claude/v1/messages",
      method: "POST",
      headers: { "x-api-key": session.token, "content-type": "application/json", "content-length": "1000" },
    });
    req.on("error", () => {});
    req.write('{"model": "claude-sonnet-4-6", "messages": [');
    await recording;
    req.destroy();
    const end = await finished;
    assert.equal(end.outcome, "OUTCOME_CANCELLED");
    assert.equal(gh.fake.requests.length, before, "nothing was sent upstream");
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "cancelled");
    assert.equal(exchange?.status, 0, "no response was sent");
    assert.equal(exchange?.error?.code, "GATE_CLIENT_GONE");
  });

  test("an upstream silent past proxy.upstreamIdleTimeoutSeconds: 504 before the head, an error event mid-stream", async () => {
    const session = await gh.openSession();
    gh.fake.reply(() => new Promise(() => {}));
    const res = await rawPost(session.proxyUrl, session.token, JSON.stringify(request));
    assert.equal(res.status, 504);
    assert.equal(res.code, "GATE_UPSTREAM_TIMEOUT");
    assert.match(JSON.stringify(res.body), /sent nothing for 1 s \(proxy.upstreamIdleTimeoutSeconds\)/);

    gh.fake.reply({
      content: [{ type: "text", text: "then silence" }],
      streaming: { pieces: 4, hold: { afterEvents: 3 } },
    });
    const error = await gh
      .anthropic(session)
      .messages.stream(request)
      .finalMessage()
      .catch((e: unknown) => e);
    gh.fake.reply(null);
    assert.ok(error instanceof Anthropic.APIError);
    assert.match(String(error.message), /GATE_UPSTREAM_TIMEOUT/);
    const exchanges = (await gh.record(session.id)).exchanges;
    assert.deepEqual(
      exchanges.map((x) => [x.outcome, x.error?.code]),
      [
        ["failed", "GATE_UPSTREAM_TIMEOUT"],
        ["failed", "GATE_UPSTREAM_TIMEOUT"],
      ],
    );
  });

  test("an upstream error event mid-stream reaches the client and the record", async () => {
    gh.fake.reply({
      content: [{ type: "text", text: "partial answer before overload" }],
      streaming: { pieces: 6, errorAfterEvents: 4 },
    });
    const session = await gh.openSession();
    await assert.rejects(gh.anthropic(session).messages.stream(request).finalMessage(), /overloaded/i);
    gh.fake.reply(null);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.response?.complete, false);
    assert.equal(
      (exchange?.response as { streamError?: { type: string } } | null)?.streamError?.type,
      "overloaded_error",
    );
  });
});
