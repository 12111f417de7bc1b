/**
 * Secrets that come back from the model are masked before the client or the record sees them:
 * the real Anthropic SDK, through the agent, against a fake upstream that streams a canary of
 * every type the agent knows, cut into deltas at every boundary.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type Anthropic from "@anthropic-ai/sdk";
import { Masker } from "@gatehouse/agent/masking/masker.js";
import { TestGatehouse } from "../support/gatehouse.js";
import { CANARIES, type Canary, canaryProse } from "../support/masking-canaries.js";

const MODEL = "claude-sonnet-4-6";

/** Pieces of a secret long enough to be telling, without the line breaks a JSON record escapes. */
function fragments(canary: Canary): string[] {
  return canary.secret.split("\n").filter((line) => line.length >= 8);
}

function assertMasked(where: string, text: string): void {
  for (const canary of CANARIES) {
    for (const fragment of fragments(canary)) {
      assert.ok(!text.includes(fragment), `${where} holds the ${canary.type} canary`);
    }
    assert.ok(text.includes(`[MASKED:${canary.type}]`), `${where} lacks the ${canary.type} marker`);
  }
}

describe("masking secrets in responses", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(async () => {
    await gh.stop();
  });

  const prose = canaryProse();
  const toolInput = { files: CANARIES.map((c, i) => ({ path: `config/${i}.env`, content: c.text })) };

  async function streamed(client: Anthropic): Promise<{ text: string; thinking: string; input: unknown }> {
    const stream = client.messages.stream({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: "user", content: "show me the configuration" }],
    });
    const message = await stream.finalMessage();
    let text = "";
    let thinking = "";
    let input: unknown;
    for (const block of message.content) {
      if (block.type === "text") text += block.text;
      else if (block.type === "thinking") thinking += block.thinking;
      else if (block.type === "tool_use") input = block.input;
    }
    return { text, thinking, input };
  }

  const expected = new Masker().mask(prose).text;

  test("streamed one character per delta, a boundary at every position of every canary, the text arrives masked", async () => {
    const session = await gh.openSession();
    gh.fake.reply({ content: [{ type: "text", text: prose }], streaming: { pieces: prose.length } });
    const got = await streamed(gh.anthropic(session));
    assert.equal(got.text, expected);
    assertMasked("the record", JSON.stringify(await gh.record(session.id)));
  });

  for (const pieces of [1, 2, 3, 7, 50]) {
    test(`streamed in ${pieces} pieces, text, thinking and tool input reach the client and the record masked`, async () => {
      const session = await gh.openSession();
      gh.fake.reply({
        content: [
          { type: "thinking", thinking: prose, signature: "sig-canaries-1" },
          { type: "text", text: prose },
          { type: "tool_use", name: "write_files", input: toolInput },
        ],
        streaming: { pieces },
      });
      const finished = gh.exchangeFinished(session.id);
      const got = await streamed(gh.anthropic(session));
      assertMasked("client text", got.text);
      assertMasked("client thinking", got.thinking);
      assertMasked("client tool input", JSON.stringify(got.input));
      // Only secrets changed: the rest of the prose arrives exactly, and the tool input still parses.
      assert.equal(got.text, expected);
      assert.equal(got.thinking, expected);

      const exchange = await finished;
      for (const canary of CANARIES) assert.ok((exchange.masked[canary.type] ?? 0) >= 3, canary.type);

      const record = await gh.record(session.id);
      assertMasked("the record", JSON.stringify(record));
      // The durable record keeps the same summary: counts per type, which the listener also got.
      assert.deepEqual(record.exchanges[0]?.masked, exchange.masked);
      const events = await (await gh.admin.events(session.id)).text();
      assertMasked("the recorded events", events);
      // The thinking block's signature is relayed and recorded untouched.
      assert.ok(events.includes("sig-canaries-1"));
    });
  }

  test("a non-streamed reply is masked in its string values and still parses", async () => {
    const session = await gh.openSession();
    gh.fake.reply({
      content: [
        { type: "text", text: prose },
        { type: "tool_use", name: "write_files", input: toolInput },
      ],
    });
    const message = await gh.anthropic(session).messages.create({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: "user", content: "show me the configuration" }],
    });
    assertMasked("client reply", JSON.stringify(message.content));
    assert.equal(message.model, MODEL);
    const record = await gh.record(session.id);
    assertMasked("the record", JSON.stringify(record));
    // Each canary is masked once in the text and once in the tool input.
    const masked = record.exchanges[0]?.masked ?? {};
    for (const canary of CANARIES) assert.ok((masked[canary.type] ?? 0) >= 2, canary.type);
  });

  test("the first delta reaches the client while upstream still holds the rest of the stream", async () => {
    const session = await gh.openSession();
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    const first = "Here is the first line of the answer. ";
    // message_start, content_block_start, ping, then the first delta; the rest waits on `held`.
    gh.fake.reply({
      content: [{ type: "text", text: `${first}${"and then a good deal more, ".repeat(40)}done.` }],
      streaming: { pieces: 41, hold: { afterEvents: 4, until: held } },
    });
    const stream = gh.anthropic(session).messages.stream({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: "user", content: "hello" }],
    });
    const firstText = await new Promise<string>((resolve) => stream.once("text", resolve));
    assert.equal(firstText, first.slice(0, firstText.length));
    assert.ok(firstText.length > 0);
    release();
    const message = await stream.finalMessage();
    assert.equal(
      message.content[0]?.type === "text" ? message.content[0].text.endsWith("done.") : false,
      true,
    );
    // Nothing was masked, and the record says so.
    assert.deepEqual((await gh.record(session.id)).exchanges[0]?.masked, {});
  });
});

describe("masking custom patterns from the control plane's configuration", () => {
  const internalHost = { name: "internal-host", pattern: "corp-[a-z]+\\.internal" };
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start({ controlPlane: { masking: { custom: [internalHost] } } });
  });
  after(async () => {
    await gh.stop();
  });

  // The host name is cut across deltas at every position (one character per delta), and the
  // built-in canaries ride along: custom patterns add to the built-in detectors, never replace them.
  const text = `Artifacts are pushed to corp-build.internal. ${canaryProse()}`;
  const expected = new Masker([internalHost]).mask(text).text;

  for (const [pieces, how] of [
    [text.length, "one character per delta"],
    [1, "in one delta"],
  ] as const) {
    test(`streamed ${how}, a host name matching a configured pattern reaches the client and the record masked`, async () => {
      const session = await gh.openSession();
      gh.fake.reply({ content: [{ type: "text", text }], streaming: { pieces } });
      const finished = gh.exchangeFinished(session.id);
      const message = await gh
        .anthropic(session)
        .messages.stream({ model: MODEL, max_tokens: 1024, messages: [{ role: "user", content: "where?" }] })
        .finalMessage();
      const got = message.content[0]?.type === "text" ? message.content[0].text : "";
      assert.ok(got.startsWith("Artifacts are pushed to [MASKED:internal-host]. "), got.slice(0, 80));
      assert.equal(got, expected);
      assertMasked("client text", got);

      const exchange = await finished;
      assert.equal(exchange.masked["internal-host"], 1);
      const record = await gh.record(session.id);
      assert.deepEqual(record.exchanges[0]?.masked, exchange.masked);
      const events = await (await gh.admin.events(session.id)).text();
      for (const [where, recorded] of [
        ["the record", JSON.stringify(record)],
        ["the recorded events", events],
      ] as const) {
        assert.ok(!recorded.includes("corp-build"), `${where} holds the host name`);
        assert.ok(recorded.includes("[MASKED:internal-host]"), `${where} lacks the marker`);
        assertMasked(where, recorded);
      }
    });
  }

  test("a non-streamed reply is masked with the configured pattern too", async () => {
    const session = await gh.openSession();
    gh.fake.reply({ content: [{ type: "text", text }] });
    const message = await gh.anthropic(session).messages.create({
      model: MODEL,
      max_tokens: 1024,
      messages: [{ role: "user", content: "where?" }],
    });
    assert.equal(message.content[0]?.type === "text" ? message.content[0].text : "", expected);
  });
});
