/**
 * A CI runner's Claude requests through Gatehouse, end to end: the real
 * Anthropic SDK → agent (real HTTP) → fake Anthropic upstream, with every
 * exchange streamed over the real gRPC link into the embedded store and read
 * back over REST.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ReceivedRequest } from "../support/fake-anthropic.js";
import { TestGatehouse } from "../support/gatehouse.js";

describe("Claude through the agent", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(() => gh.stop());

  test("a message goes upstream with the real key, unchanged otherwise, and is recorded", async () => {
    const session = await gh.openSession();
    const client = gh.anthropic(session);
    const params = {
      model: "claude-sonnet-4-6",
      max_tokens: 64,
      system: [
        { type: "text" as const, text: "You are terse.", cache_control: { type: "ephemeral" as const } },
      ],
      messages: [{ role: "user" as const, content: "hello there" }],
      metadata: { user_id: "ci-run-42" },
    };
    const next = gh.fake.nextRequest();
    const message = await client.messages.create(params, {
      headers: { "anthropic-beta": "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14" },
    });
    const upstream: ReceivedRequest = await next;

    assert.equal(message.content[0]?.type, "text");
    assert.equal(upstream.headers["x-api-key"], gh.fake.apiKey, "upstream receives the real key");
    assert.equal(upstream.headers.authorization, undefined, "the session token never goes upstream");
    assert.ok(!JSON.stringify(upstream.headers).includes(session.token));
    assert.equal(
      upstream.headers["anthropic-beta"],
      "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14",
    );
    assert.ok(upstream.headers["anthropic-version"], "anthropic-version passes through");
    assert.deepEqual(upstream.json, params, "every body field, cache_control included, arrives unchanged");

    const record = await gh.record(session.id);
    assert.equal(record.exchanges.length, 1);
    const [exchange] = record.exchanges;
    assert.equal(exchange?.kind, "anthropic.messages");
    assert.equal(exchange?.method, "POST");
    assert.equal(exchange?.path, "/v1/messages");
    assert.equal(exchange?.status, 200);
    assert.equal(exchange?.outcome, "completed");
    assert.deepEqual(exchange?.request.body, params);
    assert.equal(exchange?.request.headers.authorization, "[REDACTED]", "the session token is not recorded");
    assert.equal(
      exchange?.request.headers["anthropic-beta"],
      "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14",
    );
    assert.deepEqual(exchange?.response?.body, message);
    assert.ok(!JSON.stringify(record).includes(gh.fake.apiKey), "the real key is never recorded");
  });

  test("the session token works as x-api-key too", async () => {
    const session = await gh.openSession();
    const message = await gh.anthropic(session, { useApiKey: true }).messages.create({
      model: "claude-sonnet-4-6",
      max_tokens: 16,
      messages: [{ role: "user", content: "ping" }],
    });
    assert.equal(message.role, "assistant");
    const upstream = gh.fake.requests.at(-1);
    assert.equal(upstream?.headers["x-api-key"], gh.fake.apiKey);
  });

  test("a streamed tool call reaches the client event by event and is recorded as one message", async () => {
    gh.fake.reply({
      content: [
        { type: "thinking", thinking: "The user wants the files listed.", signature: "sig-abc" },
        { type: "text", text: "I'll list the files." },
        { type: "tool_use", name: "bash", input: { command: "ls -la", description: "list files" } },
      ],
      stopReason: "tool_use",
      streaming: { pieces: 5 },
    });
    const session = await gh.openSession();
    const stream = gh.anthropic(session).messages.stream({
      model: "claude-sonnet-4-6",
      max_tokens: 256,
      tools: [{ name: "bash", description: "run a command", input_schema: { type: "object" } }],
      messages: [{ role: "user", content: "list files" }],
    });
    const types: string[] = [];
    stream.on("streamEvent", (event) => types.push(event.type));
    const final = await stream.finalMessage();
    gh.fake.reply(null);

    assert.equal(types[0], "message_start");
    assert.equal(types.at(-1), "message_stop");
    assert.ok(types.filter((t) => t === "content_block_delta").length >= 10);
    const tool = final.content.find((b) => b.type === "tool_use");
    assert.deepEqual(tool?.type === "tool_use" ? tool.input : null, {
      command: "ls -la",
      description: "list files",
    });

    const record = await gh.record(session.id);
    const response = record.exchanges[0]?.response;
    assert.equal(response?.complete, true);
    const { parsed_output: _, ...expected } = final as typeof final & { parsed_output?: unknown };
    assert.deepEqual(response?.message, JSON.parse(JSON.stringify(expected)));
    assert.equal(record.exchanges[0]?.outcome, "completed");
  });

  test("a long stream (2,000 deltas) arrives complete and in order", async () => {
    // 2,000 pieces of equal length, so the fake splits the text into exactly 2,000 deltas.
    const text = Array.from({ length: 2000 }, (_, i) => `${String(i).padStart(4, "0")} `).join("");
    gh.fake.reply({ content: [{ type: "text", text }], streaming: { pieces: 2000 } });
    const session = await gh.openSession();
    const stream = gh.anthropic(session).messages.stream({
      model: "claude-sonnet-4-6",
      max_tokens: 4096,
      messages: [{ role: "user", content: "count" }],
    });
    let deltas = 0;
    stream.on("text", () => {
      deltas += 1;
    });
    const final = await stream.finalMessage();
    gh.fake.reply(null);
    assert.equal(deltas, 2000);
    assert.equal(final.content[0]?.type === "text" ? final.content[0].text : "", text);

    const record = await gh.record(session.id);
    const message = record.exchanges[0]?.response?.message as
      | { content: Array<{ text: string }> }
      | undefined;
    assert.equal(message?.content[0]?.text, text);
  });

  test("count_tokens and models pass through and are recorded", async () => {
    const session = await gh.openSession();
    const client = gh.anthropic(session);
    const counted = await client.messages.countTokens({
      model: "claude-sonnet-4-6",
      messages: [{ role: "user", content: "how many tokens is this?" }],
    });
    assert.ok(counted.input_tokens > 0);
    const models = await client.models.list();
    assert.ok(models.data.length > 0);

    const record = await gh.record(session.id);
    assert.deepEqual(
      record.exchanges.map((x) => [x.kind, x.status]),
      [
        ["anthropic.count_tokens", 200],
        ["anthropic.models", 200],
      ],
    );
  });

  test("HEAD on the base URL answers as Claude Code expects", async () => {
    const session = await gh.openSession();
    const res = await fetch(session.proxyUrl, { method: "HEAD" });
    assert.equal(res.status, 200);
  });
});
