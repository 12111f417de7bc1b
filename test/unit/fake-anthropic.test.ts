// The fake Anthropic API is only worth its place if the real SDK cannot tell it from the
// real thing; these tests drive it with @anthropic-ai/sdk and assert what the SDK sees.
import assert from "node:assert/strict";
import { request as httpRequest } from "node:http";
import { afterEach, beforeEach, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import {
  type FakeAnthropic,
  type FakeContentBlock,
  type FakeMessageReply,
  startFakeAnthropic,
} from "../support/fake-anthropic.js";

const MODEL = "claude-sonnet-4-6";
const PARAMS = {
  model: MODEL,
  max_tokens: 256,
  messages: [{ role: "user" as const, content: "hello there" }],
};

const MIXED: FakeContentBlock[] = [
  {
    type: "thinking",
    thinking: "The user greets me; a greeting back and a lookup will do.",
    signature: "EqQBCgIYAh==",
  },
  { type: "text", text: "Hello! Let me check the weather — ☀️ or 🌧️?" },
  {
    type: "tool_use",
    id: "toolu_01A",
    name: "get_weather",
    input: { city: "Zürich", days: [1, 2], units: { t: "C" } },
  },
];

/** Splits an SSE body into its events; enough for the fake's well-formed output. */
function sseEvents(text: string): { event: string; data: string }[] {
  return text
    .split("\n\n")
    .filter((frame) => frame !== "")
    .map((frame) => {
      const lines = frame.split("\n");
      const event = lines.find((l) => l.startsWith("event: "))?.slice(7) ?? "";
      const data = lines
        .filter((l) => l.startsWith("data: "))
        .map((l) => l.slice(6))
        .join("\n");
      return { event, data };
    });
}

describe("fake Anthropic API, driven by the real SDK", () => {
  let fake: FakeAnthropic;
  let client: Anthropic;

  beforeEach(async () => {
    fake = await startFakeAnthropic();
    client = new Anthropic({ baseURL: fake.url, apiKey: fake.apiKey, maxRetries: 0 });
  });
  afterEach(async () => {
    await fake.close();
  });

  test("echoes the last user text as a Message when nothing is scripted", async () => {
    const message = await client.messages.create(PARAMS);
    assert.match(message.id, /^msg_/);
    assert.equal(message.type, "message");
    assert.equal(message.role, "assistant");
    assert.equal(message.model, MODEL);
    assert.deepEqual(message.content, [{ type: "text", text: "echo: hello there" }]);
    assert.equal(message.stop_reason, "end_turn");
    assert.equal(message.stop_sequence, null);
    assert.ok(message.usage.input_tokens > 0 && message.usage.output_tokens > 0);

    const received = fake.requests[0];
    assert.ok(received);
    assert.equal(received.method, "POST");
    assert.equal(received.path, "/v1/messages");
    assert.equal(received.headers["content-type"], "application/json");
    assert.deepEqual(received.json, PARAMS);
    assert.deepEqual(JSON.parse(received.body.toString("utf8")), PARAMS);
    assert.equal(received.closedEarly, false);
  });

  test("a streamed reply's finalMessage() equals the non-streamed reply to the same script", async () => {
    const script: FakeMessageReply = {
      content: MIXED,
      usage: { input_tokens: 42, output_tokens: 17 },
      streaming: { pieces: 5 },
    };
    fake.reply(script);
    const whole = await client.messages.create(PARAMS);

    const stream = client.messages.stream(PARAMS);
    const texts: string[] = [];
    stream.on("text", (delta) => texts.push(delta));
    const streamed = await stream.finalMessage();

    assert.deepEqual(streamed.content, whole.content);
    assert.equal(streamed.stop_reason, "tool_use");
    assert.equal(streamed.stop_reason, whole.stop_reason);
    assert.equal(streamed.stop_sequence, whole.stop_sequence);
    assert.deepEqual(streamed.usage, whole.usage);
    assert.equal(streamed.model, whole.model);
    // The text arrived in the scripted number of pieces, not in one delta.
    assert.equal(texts.length, 5);
    assert.equal(texts.join(""), "Hello! Let me check the weather — ☀️ or 🌧️?");
  });

  test("the SDK reassembles tool_use input from partial JSON split mid-token", async () => {
    const input = {
      query: "select * from t where a = 'x\"y'",
      limit: 10,
      nested: { ok: true, list: [null, 1.5] },
    };
    fake.reply({ content: [{ type: "tool_use", name: "sql", input }], streaming: { pieces: 9 } });
    const stream = client.messages.stream({
      ...PARAMS,
      tools: [{ name: "sql", input_schema: { type: "object" } }],
    });
    const pieces: string[] = [];
    stream.on("inputJson", (partial) => pieces.push(partial));
    const message = await stream.finalMessage();

    assert.equal(pieces.length, 9);
    assert.equal(pieces.join(""), JSON.stringify(input));
    const [block] = message.content;
    assert.ok(block?.type === "tool_use");
    assert.match(block.id, /^toolu_/);
    assert.equal(block.name, "sql");
    assert.deepEqual(block.input, input);
    assert.equal(message.stop_reason, "tool_use");
  });

  test("thinking blocks stream their text and signature", async () => {
    fake.reply({ content: MIXED.slice(0, 2), streaming: { pieces: 4 } });
    const stream = client.messages.stream(PARAMS);
    const thinking: string[] = [];
    let signature = "";
    stream.on("thinking", (delta) => thinking.push(delta));
    stream.on("signature", (value) => {
      signature = value;
    });
    const message = await stream.finalMessage();
    assert.equal(thinking.length, 4);
    assert.equal(signature, "EqQBCgIYAh==");
    assert.deepEqual(message.content[0], MIXED[0]);
  });

  test("count_tokens answers input_tokens, the same for the same body", async () => {
    const count = { model: MODEL, messages: PARAMS.messages };
    const first = await client.messages.countTokens(count);
    const second = await client.messages.countTokens(count);
    assert.ok(Number.isInteger(first.input_tokens) && first.input_tokens > 0);
    assert.deepEqual(second, first);
    assert.equal(fake.requests[0]?.path, "/v1/messages/count_tokens");
  });

  test("models.list pages through the documented list shape", async () => {
    const page = await client.models.list({ limit: 2 });
    assert.equal(page.data.length, 2);
    assert.equal(page.has_more, true);
    assert.equal(page.first_id, page.data[0]?.id);
    assert.equal(page.last_id, page.data[1]?.id);
    for (const model of page.data) {
      assert.equal(model.type, "model");
      assert.equal(typeof model.display_name, "string");
      assert.ok(!Number.isNaN(Date.parse(model.created_at)));
    }
    const all: string[] = [];
    for await (const model of client.models.list({ limit: 2 })) all.push(model.id);
    assert.equal(all.length, 3);
    assert.deepEqual(all.slice(0, 2), [page.data[0]?.id, page.data[1]?.id]);
    assert.ok(fake.requests.some((r) => r.path.includes(`after_id=${page.last_id}`)));
    const one = await client.models.retrieve(all[2] ?? "");
    assert.equal(one.id, all[2]);
  });

  test("a wrong key is refused with a 401 authentication_error the SDK raises", async () => {
    const wrong = new Anthropic({ baseURL: fake.url, apiKey: "sk-ant-wrong", maxRetries: 0 });
    await assert.rejects(wrong.messages.create(PARAMS), (error: unknown) => {
      assert.ok(error instanceof Anthropic.AuthenticationError);
      assert.equal(error.status, 401);
      assert.equal(error.type, "authentication_error");
      assert.equal(error.apiMessage, "invalid x-api-key");
      assert.match(error.requestID ?? "", /^req_/);
      return true;
    });
  });

  test("the key is accepted as x-api-key and refused when a second credential disagrees", async () => {
    const viaHeader = await fetch(`${fake.url}/v1/models`, { headers: { "x-api-key": fake.apiKey } });
    assert.equal(viaHeader.status, 200);
    const mixed = await fetch(`${fake.url}/v1/models`, {
      headers: { "x-api-key": fake.apiKey, authorization: "Bearer gh_session_token" },
    });
    assert.equal(mixed.status, 401);
    const refused = (await mixed.json()) as { error: unknown };
    assert.deepEqual(refused.error, { type: "authentication_error", message: "invalid x-api-key" });
    const none = await fetch(`${fake.url}/v1/models`);
    assert.equal(none.status, 401);
  });

  test("a mid-stream overloaded_error surfaces as an SDK APIError after the events before it", async () => {
    fake.reply({
      content: [{ type: "text", text: "one two three four" }],
      streaming: { pieces: 4, errorAfterEvents: 5 },
    });
    const stream = client.messages.stream(PARAMS);
    const texts: string[] = [];
    stream.on("text", (delta) => texts.push(delta));
    await assert.rejects(stream.finalMessage(), (error: unknown) => {
      assert.ok(error instanceof Anthropic.APIError);
      assert.equal(error.type, "overloaded_error");
      return true;
    });
    // message_start, content_block_start, ping, then two of the four text deltas came before the error.
    assert.equal(texts.length, 2);
    assert.ok("one two three four".startsWith(texts.join("")));
  });

  test("a scripted HTTP error reaches the SDK as its error class", async () => {
    fake.reply({ status: 529, error: { type: "overloaded_error", message: "Overloaded" } });
    await assert.rejects(client.messages.create(PARAMS), Anthropic.OverloadedError);
    fake.reply({
      status: 429,
      error: { type: "rate_limit_error", message: "slow down" },
      headers: { "retry-after": "7" },
    });
    await assert.rejects(client.messages.create(PARAMS), (error: unknown) => {
      assert.ok(error instanceof Anthropic.RateLimitError);
      assert.equal(error.headers.get("retry-after"), "7");
      return true;
    });
  });

  test("writes SSE frames in the documented order, ping after the first block start", async () => {
    fake.reply({
      content: [MIXED[1] as FakeContentBlock, MIXED[2] as FakeContentBlock],
      streaming: { pieces: 2 },
    });
    const response = await fetch(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": fake.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ ...PARAMS, stream: true }),
    });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type") ?? "", /^text\/event-stream/);
    assert.match(response.headers.get("request-id") ?? "", /^req_/);
    const text = await response.text();
    assert.match(text, /^event: message_start\ndata: \{.*\}\n\n/);
    const events = sseEvents(text);
    for (const { event, data } of events) assert.equal(JSON.parse(data).type, event);
    const deltas = events
      .filter((e) => e.event === "content_block_delta")
      .map((e) => JSON.parse(e.data).delta.type as string);
    assert.deepEqual(
      events.map((e) => e.event).filter((e, i, all) => e !== "content_block_delta" || all[i - 1] !== e),
      [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
      ],
    );
    assert.deepEqual(deltas, ["text_delta", "text_delta", "input_json_delta", "input_json_delta"]);
    const start = JSON.parse(events[0]?.data ?? "{}").message;
    assert.deepEqual(start.content, []);
    assert.equal(start.stop_reason, null);
  });

  test("a held stream stays open until the client aborts, and the fake records the abort", async () => {
    fake.reply({
      content: [{ type: "text", text: "never finished" }],
      streaming: { pieces: 2, hold: { afterEvents: 4 } },
    });
    const stream = client.messages.stream(PARAMS);
    const firstText = new Promise<string>((resolve) => stream.once("text", resolve));
    const received = await fake.nextRequest();
    assert.ok("never finished".startsWith(await firstText));
    assert.equal(received.closedEarly, false);
    const aborted = assert.rejects(stream.finalMessage(), Anthropic.APIUserAbortError);
    stream.abort();
    await received.ended;
    assert.equal(received.closedEarly, true);
    await aborted;
  });

  test("a held stream resumes when its hold settles, and cuts the connection when it rejects", async () => {
    let release = () => {};
    const until = new Promise<void>((resolve) => {
      release = resolve;
    });
    fake.reply({
      content: [{ type: "text", text: "held then done" }],
      streaming: { hold: { afterEvents: 3, until } },
    });
    const stream = client.messages.stream(PARAMS);
    const started = new Promise<void>((resolve) => stream.once("streamEvent", () => resolve()));
    const received = await fake.nextRequest();
    await started;
    release();
    const message = await stream.finalMessage();
    assert.deepEqual(message.content, [{ type: "text", text: "held then done" }]);
    await received.ended;
    assert.equal(received.closedEarly, false);

    const dropped = Promise.reject(new Error("upstream dropped"));
    dropped.catch(() => {}); // settled by the fake once the stream reaches the hold
    fake.reply({
      content: [{ type: "text", text: "dropped" }],
      streaming: { hold: { afterEvents: 3, until: dropped } },
    });
    await assert.rejects(client.messages.stream(PARAMS).finalMessage(), Anthropic.AnthropicError);
  });

  test("close() ends streams held open and refuses further connections", async () => {
    fake.reply({ streaming: { hold: { afterEvents: 1 } } });
    const cut = assert.rejects(client.messages.stream(PARAMS).finalMessage(), Anthropic.AnthropicError);
    const received = await fake.nextRequest();
    await fake.close();
    await received.ended;
    assert.equal(received.closedEarly, true);
    await cut;
    await assert.rejects(fetch(`${fake.url}/v1/models`));
  });

  test("a request whose upload the client abandons is recorded as closed early", async () => {
    const partial = '{"model": "claude-sonnet-4-6", "messages": [';
    // Waiting for "100 Continue" proves the fake has the request head before the client gives up.
    const req = httpRequest(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": fake.apiKey, "content-length": "4096", expect: "100-continue" },
    });
    req.on("error", () => {});
    req.once("continue", () => {
      req.write(partial);
      req.destroy();
    });
    req.flushHeaders();
    const received = await fake.nextRequest();
    await received.ended;
    assert.equal(received.closedEarly, true);
    assert.equal(received.json, undefined);
    assert.ok(partial.startsWith(received.body.toString("utf8")));
  });

  test("a scripted handler sees the parsed request and can answer per request", async () => {
    fake.reply((body) => ({ content: [{ type: "text", text: `max ${String(body.max_tokens)}` }] }));
    const first = await client.messages.create({ ...PARAMS, max_tokens: 7 });
    assert.deepEqual(first.content, [{ type: "text", text: "max 7" }]);
    fake.reply(null);
    const second = await client.messages.create(PARAMS);
    assert.deepEqual(second.content, [{ type: "text", text: "echo: hello there" }]);
  });

  test("nextRequest gives the first request to arrive after the call, not an earlier one", async () => {
    await client.messages.create(PARAMS);
    await client.models.list();
    const pending = fake.nextRequest();
    await client.messages.countTokens({ model: MODEL, messages: PARAMS.messages });
    assert.equal((await pending).path, "/v1/messages/count_tokens");
  });

  test("invalid JSON is a 400 invalid_request_error and unknown paths a 404 not_found_error", async () => {
    const bad = await fetch(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": fake.apiKey, "content-type": "application/json" },
      body: '{"model": "x", ',
    });
    assert.equal(bad.status, 400);
    const badBody = (await bad.json()) as { type: string; error: { type: string } };
    assert.equal(badBody.type, "error");
    assert.equal(badBody.error.type, "invalid_request_error");
    assert.equal(fake.requests.at(-1)?.json, undefined);

    const missing = await fetch(`${fake.url}/v1/nothing-here`, { headers: { "x-api-key": fake.apiKey } });
    assert.equal(missing.status, 404);
    const missingBody = (await missing.json()) as { error: { type: string } };
    assert.equal(missingBody.error.type, "not_found_error");
    assert.match(missing.headers.get("request-id") ?? "", /^req_/);
  });

  test("a stream larger than the socket buffer arrives whole (writes wait for drain)", async () => {
    // 4 MiB in 16 KiB events written back to back: most writes find the socket buffer full.
    const text = "0123456789abcdef".repeat(256 * 1024);
    fake.reply({ content: [{ type: "text", text }], streaming: { pieces: 256 } });
    const response = await fetch(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": fake.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ ...PARAMS, stream: true }),
    });
    const deltas = sseEvents(await response.text()).filter((e) => e.event === "content_block_delta");
    assert.equal(deltas.length, 256);
    assert.equal(deltas.map((e) => JSON.parse(e.data).delta.text).join(""), text);
  });
});
