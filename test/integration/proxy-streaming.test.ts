/**
 * How the agent relays: backpressure reaches upstream when a client reads
 * slowly, hop-by-hop headers stop at the agent, and upstream's own errors
 * reach the client unchanged.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, request as httpRequest, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { TestGatehouse, UPSTREAM_KEY_ENV } from "../support/gatehouse.js";

/**
 * An event stream as upstreams may send it: comments, keep-alives and a `retry` field between
 * the events (blocks the WHATWG model never dispatches), and an unterminated block at the end.
 */
const KEEPALIVE_STREAM = [
  ": stream opened\n\n",
  'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-6","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n',
  ": keep-alive\n\n",
  "retry: 3000\n\n",
  "\r\n",
  ": keep-alive\r\n\r\n",
  'event: message_stop\ndata: {"type":"message_stop"}\n\n',
  ": closing, without the blank line",
];

describe("relaying through the agent", () => {
  let gh: TestGatehouse;
  let keepalive: Server;
  before(async () => {
    keepalive = createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/event-stream" });
      for (const block of KEEPALIVE_STREAM) res.write(block);
      res.end();
    });
    keepalive.listen(0, "127.0.0.1");
    await once(keepalive, "listening");
    gh = await TestGatehouse.start({
      connections: [
        {
          name: "keepalive",
          type: "anthropic",
          upstream: `http://127.0.0.1:${(keepalive.address() as AddressInfo).port}`,
          credential: { env: UPSTREAM_KEY_ENV },
        },
      ],
    });
  });
  after(async () => {
    await gh.stop();
    keepalive.close();
  });

  test("the recorded response size is what the client received, comments and keep-alives included", async () => {
    // Regression: only blocks with data counted towards responseBytes, so a stream with
    // keep-alives was recorded as smaller than what was relayed.
    const session = await gh.openSession("keepalive");
    const req = httpRequest(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
    });
    req.end(JSON.stringify({ model: "claude-sonnet-4-6", max_tokens: 10, stream: true, messages: [] }));
    const [res] = (await once(req, "response")) as [IncomingMessage];
    const chunks: Buffer[] = [];
    for await (const chunk of res) chunks.push(chunk as Buffer);
    const received = Buffer.concat(chunks);
    assert.equal(received.toString(), KEEPALIVE_STREAM.join(""), "relayed byte for byte");

    await gh.record(session.id);
    const lines = (await (await gh.admin.events(session.id)).text())
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as { kind: string; attrs: Record<string, unknown> });
    assert.deepEqual(
      lines.filter((l) => l.kind === "response.sse").map((l) => l.attrs.event),
      ["message_start", "message_stop"],
      "only blocks with data are events",
    );
    const end = lines.find((l) => l.kind === "exchange.end");
    assert.equal(end?.attrs.outcome, "completed");
    assert.equal(end?.attrs.responseBytes, received.length);
  });

  test("exchanges are counted in /metrics under their connection and kind", async () => {
    // Regression: the recorder never kept the connection and kind it recorded, so every
    // exchange was counted as gatehouse_agent_exchanges_total{connection="",kind=""}.
    const session = await gh.openSession();
    await gh.anthropic(session).messages.create({
      model: "claude-sonnet-4-6",
      max_tokens: 8,
      messages: [{ role: "user", content: "hi" }],
    });
    await gh.anthropic(session).models.list();
    const metrics = await (await fetch(`${new URL(session.proxyUrl).origin}/metrics`)).text();
    const counted = metrics.split("\n").filter((l) => l.startsWith("gatehouse_agent_exchanges_total{"));
    assert.ok(
      counted.some((l) =>
        /^gatehouse_agent_exchanges_total\{connection="claude",kind="anthropic\.messages",outcome="completed"\} [1-9]/.test(
          l,
        ),
      ),
      counted.join("\n"),
    );
    assert.ok(
      counted.some((l) =>
        l.startsWith('gatehouse_agent_exchanges_total{connection="claude",kind="anthropic.models"'),
      ),
      counted.join("\n"),
    );
    assert.ok(!counted.some((l) => l.includes('connection=""') || l.includes('kind=""')), counted.join("\n"));
  });

  test("the runner's cookies do not go upstream, and the record masks them", async () => {
    // The agent relayed `cookie` upstream although headers.ts called it a credential field.
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const res = await fetch(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${session.token}`,
        "content-type": "application/json",
        cookie: "ci_session=runner-secret",
      },
      body: JSON.stringify({ model: "claude-sonnet-4-6", max_tokens: 8, messages: [] }),
    });
    assert.equal(res.status, 200);
    await res.arrayBuffer();
    const upstream = await arrived;
    assert.equal(upstream.headers.cookie, undefined);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.request.headers.cookie, "[REDACTED]");
  });

  test("a client that stops reading stops upstream too, and then gets the whole stream", async () => {
    // 32 MiB of text in 2,048 deltas: far more than every socket buffer on the way can hold.
    const text = "x".repeat(32 * 1024 * 1024);
    gh.fake.reply({ content: [{ type: "text", text }], streaming: { pieces: 2048 } });
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const req = httpRequest(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
    });
    req.end(JSON.stringify({ model: "claude-sonnet-4-6", max_tokens: 10, stream: true, messages: [] }));
    const [res] = (await once(req, "response")) as [IncomingMessage];
    res.pause();

    const upstream = await arrived;
    await upstream.stalled;
    // A negative can only be observed over a window: while the client reads nothing, upstream must
    // not get to finish its 32 MiB (without backpressure it does so in a fraction of this window).
    let window: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      upstream.ended.then(() => "upstream finished"),
      new Promise<string>((resolve) => {
        window = setTimeout(() => resolve("upstream held back"), 1500);
      }),
    ]);
    clearTimeout(window);
    assert.equal(outcome, "upstream held back");

    let received = 0;
    let tail = "";
    res.on("data", (chunk: Buffer) => {
      received += chunk.length;
      tail = (tail + chunk.toString("latin1")).slice(-200);
    });
    res.resume();
    await once(res, "end");
    gh.fake.reply(null);
    assert.ok(received > text.length);
    assert.match(tail, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
    const record = await gh.record(session.id);
    const message = record.exchanges[0]?.response?.message as { content: Array<{ text: string }> };
    assert.equal(message.content[0]?.text.length, text.length);
  });

  test("hop-by-hop headers, and any the Connection header names, are not passed on", async () => {
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const req = httpRequest(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${session.token}`,
        "content-type": "application/json",
        connection: "keep-alive, x-hop-secret",
        "x-hop-secret": "for-this-hop-only",
        "keep-alive": "timeout=5",
        te: "trailers",
        "proxy-authorization": "Basic cHJveHk6cGFzcw==",
        "x-end-to-end": "kept",
      },
    });
    req.end(
      JSON.stringify({
        model: "claude-sonnet-4-6",
        max_tokens: 10,
        messages: [{ role: "user", content: "hi" }],
      }),
    );
    const [res] = (await once(req, "response")) as [IncomingMessage];
    res.resume();
    await once(res, "end");
    const upstream = await arrived;
    assert.equal(res.statusCode, 200);
    assert.equal(upstream.headers["x-end-to-end"], "kept");
    for (const name of ["x-hop-secret", "keep-alive", "te", "proxy-authorization"]) {
      assert.equal(upstream.headers[name], undefined, `${name} must not reach upstream`);
    }
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.request.headers["x-hop-secret"], undefined, "nor the record");
  });

  test("upstream's own errors reach the client unchanged", async () => {
    gh.fake.reply({
      status: 429,
      error: { type: "rate_limit_error", message: "Number of request tokens has exceeded your rate limit." },
      headers: {
        "retry-after": "7",
        "anthropic-ratelimit-requests-remaining": "0",
        "proxy-authenticate": "Basic",
      },
    });
    const session = await gh.openSession();
    const error = await gh
      .anthropic(session)
      .messages.create({
        model: "claude-sonnet-4-6",
        max_tokens: 8,
        messages: [{ role: "user", content: "hi" }],
      })
      .catch((e: unknown) => e);
    gh.fake.reply(null);
    assert.ok(error instanceof Anthropic.RateLimitError);
    assert.equal(error.headers.get("retry-after"), "7");
    assert.equal(error.headers.get("anthropic-ratelimit-requests-remaining"), "0");
    assert.equal(
      error.headers.get("proxy-authenticate"),
      null,
      "hop-by-hop response headers stop at the agent",
    );
    assert.match(error.message, /Number of request tokens has exceeded your rate limit/);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.status, 429);
    assert.equal(exchange?.outcome, "completed");
  });
});
