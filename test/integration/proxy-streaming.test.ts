/**
 * How the agent relays: backpressure reaches upstream when a client reads
 * slowly, hop-by-hop headers stop at the agent, and upstream's own errors
 * reach the client unchanged.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { TestGatehouse } from "../support/gatehouse.js";

describe("relaying through the agent", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(() => gh.stop());

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
