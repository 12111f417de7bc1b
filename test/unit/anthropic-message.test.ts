// A session record shows the reassembled Message of a streamed response; an auditor must see
// exactly what the agent's caller saw, so every case here is checked against the real SDK's
// own reassembly (MessageStream.finalMessage()) wherever the SDK produces one.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { MessageStream } from "@anthropic-ai/sdk/lib/MessageStream";
import {
  reassembleMessage,
  type StreamedEvent,
} from "@gatehouse/control-plane/sessions/anthropic-message.js";
import fc from "fast-check";
import { type FakeAnthropic, type FakeContentBlock, startFakeAnthropic } from "../support/fake-anthropic.js";

const PARAMS = {
  model: "claude-sonnet-4-6",
  max_tokens: 256,
  messages: [{ role: "user" as const, content: "hi" }],
};

/** Splits an SSE body into events: the tiny parser a test needs for well-formed output. */
function sseEvents(text: string): StreamedEvent[] {
  return text
    .split("\n\n")
    .filter((frame) => frame.trim() !== "")
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

/**
 * The SDK's own reassembly of the same events. MessageStream.fromReadableStream reads the
 * events as NDJSON and runs them through the same accumulator as a live stream; `ping` and
 * unnamed events are dropped first, as the SDK's SSE reader drops them.
 */
async function sdkFinalMessage(events: StreamedEvent[]): Promise<Record<string, unknown>> {
  const ndjson = events
    .filter((e) => e.event !== "ping" && e.event !== "" && e.data !== "")
    .map((e) => `${e.data}\n`)
    .join("");
  const body = new Response(ndjson).body;
  assert.ok(body);
  return withoutSdkHelpers(await MessageStream.fromReadableStream(body).finalMessage());
}

/** `parsed_output` is the SDK's client-side structured-output helper, not part of the wire Message. */
function withoutSdkHelpers(message: object): Record<string, unknown> {
  const copy: Record<string, unknown> = { ...message };
  delete copy.parsed_output;
  return copy;
}

/** The content blocks of a reassembled message; fails the test when there is no message. */
function blocks(message: Record<string, unknown> | null): Record<string, unknown>[] {
  assert.ok(message, "expected a message");
  assert.ok(Array.isArray(message.content), "expected content to be an array");
  return message.content as Record<string, unknown>[];
}

function frame(type: string, fields: Record<string, unknown> = {}): StreamedEvent {
  return { event: type, data: JSON.stringify({ type, ...fields }) };
}

const START = frame("message_start", {
  message: {
    id: "msg_01Test",
    type: "message",
    role: "assistant",
    model: "claude-sonnet-4-6",
    content: [],
    stop_reason: null,
    stop_sequence: null,
    stop_details: null,
    usage: { input_tokens: 12, cache_creation_input_tokens: 0, cache_read_input_tokens: 3, output_tokens: 1 },
  },
});
const delta = (index: number, d: Record<string, unknown>) =>
  frame("content_block_delta", { index, delta: d });
const stopDelta = (reason: string, usage: Record<string, unknown> = { output_tokens: 9 }) =>
  frame("message_delta", { delta: { stop_reason: reason, stop_sequence: null, stop_details: null }, usage });

describe("reassembleMessage", () => {
  let fake: FakeAnthropic;
  let client: Anthropic;
  before(async () => {
    fake = await startFakeAnthropic();
    client = new Anthropic({ baseURL: fake.url, apiKey: fake.apiKey, maxRetries: 0 });
  });
  after(async () => {
    await fake.close();
  });

  async function rawStream(): Promise<StreamedEvent[]> {
    const response = await fetch(`${fake.url}/v1/messages`, {
      method: "POST",
      headers: { "x-api-key": fake.apiKey, "content-type": "application/json" },
      body: JSON.stringify({ ...PARAMS, stream: true }),
    });
    assert.equal(response.status, 200);
    return sseEvents(await response.text());
  }

  const MIXED: FakeContentBlock[] = [
    { type: "thinking", thinking: "Weather first, then a friendly answer.", signature: "EqQBCgIYAh==" },
    { type: "text", text: "Checking the forecast for Zürich 🌦️ now." },
    {
      type: "tool_use",
      id: "toolu_01Fixed",
      name: "get_weather",
      input: { city: "Zürich", days: [1, 2, 3] },
    },
    { type: "redacted_thinking", data: "EmwKAhgBEgy3va3pzix/LafPsn4a" },
  ];

  test("a stream from the fake reassembles to exactly the SDK's finalMessage() of the same reply", async () => {
    fake.reply({
      id: "msg_01Fixed",
      content: MIXED,
      usage: { input_tokens: 30, output_tokens: 44 },
      streaming: { pieces: 6 },
    });
    const events = await rawStream();
    const reassembled = reassembleMessage(events);
    assert.equal(reassembled.complete, true);
    assert.equal(reassembled.error, null);

    const sdk = withoutSdkHelpers(await client.messages.stream(PARAMS).finalMessage());
    assert.deepStrictEqual(reassembled.message, sdk);
    assert.deepStrictEqual(reassembled.message, await sdkFinalMessage(events));
    // And key order too, so the stored JSON reads as the SDK would print it.
    assert.equal(JSON.stringify(reassembled.message), JSON.stringify(sdk));
  });

  test("tool_use input split mid-token, mid-escape and mid-number is parsed at content_block_stop", async () => {
    const events = [
      START,
      frame("content_block_start", {
        index: 0,
        content_block: { type: "tool_use", id: "toolu_1", name: "edit", input: {} },
      }),
      frame("ping"),
      delta(0, { type: "input_json_delta", partial_json: "" }),
      delta(0, { type: "input_json_delta", partial_json: '{"pa' }),
      delta(0, { type: "input_json_delta", partial_json: 'th": "/tmp/caf\\u00' }),
      delta(0, { type: "input_json_delta", partial_json: 'e9 \\"x\\"", "ratio": 12.' }),
      delta(0, { type: "input_json_delta", partial_json: '5e1, "ok": tr' }),
      delta(0, { type: "input_json_delta", partial_json: "ue}" }),
      frame("content_block_stop", { index: 0 }),
      stopDelta("tool_use"),
      frame("message_stop"),
    ];
    const { message, complete } = reassembleMessage(events);
    assert.equal(complete, true);
    assert.deepEqual(blocks(message)[0], {
      type: "tool_use",
      id: "toolu_1",
      name: "edit",
      input: { path: '/tmp/café "x"', ratio: 125, ok: true },
    });
    assert.deepStrictEqual(message, await sdkFinalMessage(events));
  });

  test("a tool_use block with no input pieces, or only empty ones, has input {}", async () => {
    const events = [
      START,
      frame("content_block_start", {
        index: 0,
        content_block: { type: "tool_use", id: "toolu_a", name: "now", input: {} },
      }),
      frame("content_block_stop", { index: 0 }),
      frame("content_block_start", {
        index: 1,
        content_block: { type: "tool_use", id: "toolu_b", name: "now", input: {} },
      }),
      delta(1, { type: "input_json_delta", partial_json: "" }),
      frame("content_block_stop", { index: 1 }),
      stopDelta("tool_use"),
      frame("message_stop"),
    ];
    const { message } = reassembleMessage(events);
    const content = blocks(message);
    assert.deepEqual(
      content.map((b) => b.input),
      [{}, {}],
    );
    assert.deepStrictEqual(message, await sdkFinalMessage(events));
  });

  test("a tool_use block's fields named __proto__ or constructor are kept as fields", () => {
    // Regression: a settled tool_use block was rebuilt by assignment, where `__proto__` set the
    // prototype instead of a field, so that field of what upstream sent vanished from the record.
    const start = JSON.stringify({
      type: "content_block_start",
      index: 0,
      content_block: { type: "tool_use", id: "toolu_p", name: "now", input: {}, constructor: "c" },
    }).replace(/}}$/, ',"__proto__":"p"}}');
    const events = [
      START,
      { event: "content_block_start", data: start },
      delta(0, { type: "input_json_delta", partial_json: '{"a":1}' }),
      frame("content_block_stop", { index: 0 }),
      stopDelta("tool_use"),
      frame("message_stop"),
    ];
    const { message, complete } = reassembleMessage(events);
    assert.equal(complete, true);
    const [block] = blocks(message);
    assert.ok(block);
    assert.equal(Object.getPrototypeOf(block), Object.prototype);
    assert.deepEqual(Object.entries(block), [
      ["type", "tool_use"],
      ["id", "toolu_p"],
      ["name", "now"],
      ["constructor", "c"],
      ["__proto__", "p"],
      ["input", { a: 1 }],
    ]);
  });

  test("a truncated stream is incomplete and keeps the blocks built so far", async () => {
    fake.reply({
      content: [
        { type: "text", text: "The first block arrives whole." },
        { type: "tool_use", id: "toolu_cut", name: "run", input: { command: "ls -la /srv" } },
      ],
      streaming: { pieces: 3 },
    });
    const events = await rawStream();
    // Cut after the second block's first input piece: the connection dropped mid tool call.
    const cut = events.findIndex((e) => e.data.includes('"input_json_delta"')) + 1;
    const { message, complete, error } = reassembleMessage(events.slice(0, cut));
    assert.equal(complete, false);
    assert.equal(error, null);
    assert.equal(message?.stop_reason, null);
    assert.deepEqual(message?.content, [
      { type: "text", text: "The first block arrives whole." },
      // The input so far is not JSON yet, so the block keeps its start input.
      { type: "tool_use", id: "toolu_cut", name: "run", input: {} },
    ]);

    const midText = reassembleMessage(events.slice(0, 5));
    assert.equal(midText.complete, false);
    const partial = String(blocks(midText.message)[0]?.text);
    assert.ok(partial.length > 0 && "The first block arrives whole.".startsWith(partial));

    assert.deepEqual(reassembleMessage(events.slice(0, events.length - 1)).complete, false);
    assert.deepEqual(reassembleMessage([]), { message: null, error: null, complete: false });
  });

  test("an error event is captured, ends reassembly, and leaves the message incomplete", async () => {
    fake.reply({
      content: [{ type: "text", text: "alpha beta gamma" }],
      streaming: { pieces: 3, errorAfterEvents: 5 },
    });
    const events = await rawStream();
    assert.equal(events.at(-1)?.event, "error");
    const { message, complete, error } = reassembleMessage([...events, frame("message_stop")]);
    assert.equal(complete, false);
    assert.deepEqual(error, { type: "overloaded_error", message: "Overloaded" });
    const partial = String(blocks(message)[0]?.text);
    assert.ok(partial.length > 0 && "alpha beta gamma".startsWith(partial));

    // An error event whose data is not the documented shape is still reported, with its data.
    assert.deepEqual(reassembleMessage([START, { event: "error", data: "upstream exploded" }]).error, {
      type: "api_error",
      message: "upstream exploded",
    });
  });

  test("malformed JSON in a data line does not throw: the message so far, incomplete", () => {
    const events = [
      START,
      frame("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
      delta(0, { type: "text_delta", text: "kept" }),
      {
        event: "content_block_delta",
        data: '{"type":"content_block_delta","index":0,"delta":{"type":"text_del',
      },
      delta(0, { type: "text_delta", text: " but not this" }),
      frame("content_block_stop", { index: 0 }),
      stopDelta("end_turn"),
      frame("message_stop"),
    ];
    const { message, complete, error } = reassembleMessage(events);
    assert.equal(complete, false);
    assert.equal(error, null);
    assert.deepEqual(message?.content, [{ type: "text", text: "kept" }]);

    // A second message_start in one stream is as broken as bad JSON (the SDK refuses it too).
    assert.equal(reassembleMessage([START, START, frame("message_stop")]).complete, false);
  });

  test("tool input that never becomes JSON by content_block_stop makes the stream incomplete", () => {
    const events = [
      START,
      frame("content_block_start", {
        index: 0,
        content_block: { type: "tool_use", id: "t", name: "x", input: {} },
      }),
      delta(0, { type: "input_json_delta", partial_json: '{"a": ' }),
      frame("content_block_stop", { index: 0 }),
      stopDelta("tool_use"),
      frame("message_stop"),
    ];
    const { message, complete } = reassembleMessage(events);
    assert.equal(complete, false);
    assert.deepEqual(blocks(message)[0], { type: "tool_use", id: "t", name: "x", input: {} });
  });

  test("message_delta sets the stop fields and overwrites usage totals it carries, as the SDK does", async () => {
    const events = [
      START,
      frame("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
      delta(0, { type: "text_delta", text: "Stopped at " }),
      delta(0, {
        type: "citations_delta",
        citation: { type: "char_location", cited_text: "x", document_index: 0 },
      }),
      delta(0, { type: "text_delta", text: "END" }),
      frame("content_block_stop", { index: 0 }),
      frame("message_delta", {
        delta: {
          stop_reason: "stop_sequence",
          stop_sequence: "END",
          stop_details: null,
          container: { id: "container_1", expires_at: "2026-01-01T00:00:00Z" },
        },
        usage: {
          output_tokens: 21,
          input_tokens: 40,
          cache_read_input_tokens: null,
          server_tool_use: { web_search_requests: 2 },
        },
      }),
      frame("message_stop"),
    ];
    const { message, complete } = reassembleMessage(events);
    assert.equal(complete, true);
    assert.equal(message?.stop_reason, "stop_sequence");
    assert.equal(message?.stop_sequence, "END");
    assert.deepEqual(message?.container, { id: "container_1", expires_at: "2026-01-01T00:00:00Z" });
    assert.deepEqual(message?.usage, {
      input_tokens: 40,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 3, // null in the delta means "does not apply", not zero
      output_tokens: 21,
      server_tool_use: { web_search_requests: 2 },
    });
    assert.deepEqual(blocks(message)[0], {
      type: "text",
      text: "Stopped at END",
      citations: [{ type: "char_location", cited_text: "x", document_index: 0 }],
    });
    assert.deepStrictEqual(message, await sdkFinalMessage(events));
  });

  test("ping, unnamed, unknown events and unknown delta types are ignored, as the docs ask", async () => {
    const events = [
      frame("content_block_delta", {
        index: 0,
        delta: { type: "text_delta", text: "before start: dropped" },
      }),
      START,
      frame("ping"),
      {
        event: "",
        data: '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":"x"}}',
      },
      frame("content_block_start", { index: 0, content_block: { type: "text", text: "" } }),
      frame("future_event", { anything: [1, 2] }),
      delta(0, { type: "future_delta", stuff: "?" }),
      delta(0, { type: "text_delta", text: "ok" }),
      delta(0, { type: "thinking_delta", thinking: "not a thinking block" }),
      delta(7, { type: "text_delta", text: "no block 7" }),
      frame("content_block_stop", { index: 0 }),
      stopDelta("end_turn"),
      frame("message_stop"),
    ];
    const { message, complete } = reassembleMessage(events);
    assert.equal(complete, true);
    assert.deepEqual(message?.content, [{ type: "text", text: "ok" }]);
    assert.deepStrictEqual(message, await sdkFinalMessage(events));
  });

  // Any reply, split anywhere, must reassemble to what the SDK builds from the same events.
  const blockArb: fc.Arbitrary<FakeContentBlock> = fc.oneof(
    fc.record({ type: fc.constant("text" as const), text: fc.string({ unit: "grapheme" }) }),
    fc.record({
      type: fc.constant("thinking" as const),
      thinking: fc.string({ unit: "grapheme" }),
      signature: fc.base64String(),
    }),
    fc.record({
      type: fc.constant("tool_use" as const),
      id: fc.stringMatching(/^toolu_[A-Za-z0-9]{4,12}$/),
      name: fc.stringMatching(/^[a-z_]{1,12}$/),
      input: fc.dictionary(fc.string(), fc.jsonValue({ maxDepth: 3 })),
    }),
    fc.record({ type: fc.constant("redacted_thinking" as const), data: fc.base64String() }),
  );

  function eventsFor(reply: FakeContentBlock[], cuts: number[]): StreamedEvent[] {
    const pieces = (text: string): string[] => {
      const at = [...new Set(cuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
      const out: string[] = [];
      let from = 0;
      for (const to of [...at, text.length]) {
        if (to > from) out.push(text.slice(from, to));
        from = Math.max(from, to);
      }
      return out.length > 0 ? out : [""];
    };
    const events: StreamedEvent[] = [START];
    reply.forEach((block, index) => {
      if (block.type === "text") {
        events.push(frame("content_block_start", { index, content_block: { type: "text", text: "" } }));
        for (const text of pieces(block.text)) events.push(delta(index, { type: "text_delta", text }));
      } else if (block.type === "thinking") {
        events.push(
          frame("content_block_start", {
            index,
            content_block: { type: "thinking", thinking: "", signature: "" },
          }),
        );
        for (const thinking of pieces(block.thinking))
          events.push(delta(index, { type: "thinking_delta", thinking }));
        events.push(delta(index, { type: "signature_delta", signature: block.signature }));
      } else if (block.type === "tool_use") {
        const { input, ...start } = block;
        events.push(frame("content_block_start", { index, content_block: { ...start, input: {} } }));
        for (const partial_json of pieces(JSON.stringify(input))) {
          events.push(delta(index, { type: "input_json_delta", partial_json }));
        }
      } else {
        events.push(frame("content_block_start", { index, content_block: block }));
      }
      if (index === 0) events.push(frame("ping"));
      events.push(frame("content_block_stop", { index }));
    });
    events.push(
      stopDelta(reply.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn"),
      frame("message_stop"),
    );
    return events;
  }

  test("property: any reply split at any points equals the SDK's reassembly", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(blockArb, { maxLength: 5 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        async (reply, cuts) => {
          const events = eventsFor(reply, cuts);
          const reassembled = reassembleMessage(events);
          assert.equal(reassembled.complete, true);
          assert.deepStrictEqual(reassembled.message, await sdkFinalMessage(events));
          assert.equal(blocks(reassembled.message).length, reply.length);
        },
      ),
    );
  });

  test("property: every proper prefix of a stream reassembles without throwing, incomplete", () => {
    fc.assert(
      fc.property(
        fc.array(blockArb, { minLength: 1, maxLength: 4 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        fc.nat(),
        (reply, cuts, n) => {
          const events = eventsFor(reply, cuts);
          const prefix = events.slice(0, n % events.length);
          const { message, complete, error } = reassembleMessage(prefix);
          assert.equal(complete, false);
          assert.equal(error, null);
          assert.equal(message === null, prefix.length === 0);
          const content = message === null ? [] : blocks(message);
          assert.ok(content.length <= reply.length);
          content.forEach((block, i) => {
            const full = reply[i];
            assert.equal(block.type, full?.type);
            if (full?.type === "text") assert.ok(full.text.startsWith(String(block.text)));
          });
        },
      ),
    );
  });

  test("property: arbitrary events and data never make it throw", () => {
    const names = [
      "message_start",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
    ];
    const eventArb = fc.oneof(
      fc.record({
        event: fc.constantFrom(...names, "message_stop", "ping", "error", "", "x"),
        data: fc.string(),
      }),
      fc
        .record({
          type: fc.constantFrom(...names),
          index: fc.oneof(fc.integer({ min: -3, max: 3 }), fc.string()),
          delta: fc.anything(),
          content_block: fc.anything(),
          message: fc.anything(),
          usage: fc.anything(),
        })
        .map((body) => ({ event: body.type, data: JSON.stringify(body) ?? "" })),
    );
    fc.assert(
      fc.property(fc.array(eventArb, { maxLength: 12 }), (tail) => {
        const result = reassembleMessage([START, ...tail]);
        assert.equal(typeof result.complete, "boolean");
      }),
    );
  });
});
