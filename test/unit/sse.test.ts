import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type SseBlock, SseParser } from "@gatehouse/agent/proxy/sse.js";
import { GatehouseError } from "@gatehouse/proto/errors";

const LIMIT = 1 << 20;

/** What a client of the stream sees of a block; `raw` is checked separately. */
function view(block: SseBlock): { event: string; data: string; hasData: boolean; id?: string } {
  const { raw: _raw, ...rest } = block;
  return rest;
}

function parse(
  chunks: (string | Buffer)[],
  maxBlockBytes = LIMIT,
): { blocks: SseBlock[]; rest: Buffer; perPush: number[] } {
  const parser = new SseParser({ maxBlockBytes });
  const blocks: SseBlock[] = [];
  const perPush: number[] = [];
  for (const chunk of chunks) {
    const out = parser.push(typeof chunk === "string" ? Buffer.from(chunk) : chunk);
    perPush.push(out.length);
    blocks.push(...out);
  }
  return { blocks, rest: parser.end(), perPush };
}

function dispatched(stream: string): string[] {
  return parse([stream])
    .blocks.filter((b) => b.hasData)
    .map((b) => b.data);
}

describe("SseParser: WHATWG examples", () => {
  test("each blank line ends an event; consecutive data lines join with LF", () => {
    const stream =
      "data: This is the first message.\n\n" +
      "data: This is the second message, it\ndata: has two lines.\n\n" +
      "data: This is the third message.\n\n";
    assert.deepEqual(dispatched(stream), [
      "This is the first message.",
      "This is the second message, it\nhas two lines.",
      "This is the third message.",
    ]);
  });

  test("the event field names the type; without it the type is message", () => {
    const { blocks } = parse(["event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: plain\n\n"]);
    assert.deepEqual(blocks.map(view), [
      { event: "add", data: "73857293", hasData: true },
      { event: "remove", data: "2153", hasData: true },
      { event: "message", data: "plain", hasData: true },
    ]);
  });

  test("an empty event field also means message", () => {
    assert.equal(parse(["event:\ndata: x\n\n"]).blocks[0]?.event, "message");
  });

  test("three data lines give one value with two LFs", () => {
    assert.deepEqual(dispatched("data: YHOO\ndata: +2\ndata: 10\n\n"), ["YHOO\n+2\n10"]);
  });

  test("comments, ids, an id without value, and exactly one stripped space", () => {
    const stream =
      ": test stream\n\n" +
      "data: first event\nid: 1\n\n" +
      "data:second event\nid\n\n" +
      "data:  third event\n\n";
    assert.deepEqual(parse([stream]).blocks.map(view), [
      { event: "message", data: "", hasData: false },
      { event: "message", data: "first event", hasData: true, id: "1" },
      { event: "message", data: "second event", hasData: true, id: "" },
      { event: "message", data: " third event", hasData: true },
    ]);
  });

  test("a data line without colon is an empty value; the unterminated end is left to end()", () => {
    const { blocks, rest } = parse(["data\n\ndata\ndata\n\ndata:"]);
    assert.deepEqual(blocks.map(view), [
      { event: "message", data: "", hasData: true },
      { event: "message", data: "\n", hasData: true },
    ]);
    assert.equal(rest.toString(), "data:");
  });

  test("a space after the colon is optional", () => {
    assert.deepEqual(dispatched("data:test\n\ndata: test\n\n"), ["test", "test"]);
  });

  test("retry and unknown fields leave the event as it is", () => {
    const { blocks } = parse(["retry: 1000\nfoo: bar\ndata: x\n\n"]);
    assert.deepEqual(blocks.map(view), [{ event: "message", data: "x", hasData: true }]);
  });

  test("an id containing NUL is ignored, as the spec requires", () => {
    const { blocks } = parse(["id: 7\nid: a\0b\ndata: x\n\n"]);
    assert.equal(blocks[0]?.id, "7");
  });

  test("a comment-only block is returned so its bytes can be relayed", () => {
    const { blocks } = parse([": keep-alive\n\n"]);
    assert.equal(blocks.length, 1);
    assert.equal(blocks[0]?.raw.toString(), ": keep-alive\n\n");
    assert.equal(blocks[0]?.hasData, false);
  });
});

describe("SseParser: line endings", () => {
  for (const [name, eol] of [
    ["LF", "\n"],
    ["CR", "\r"],
    ["CRLF", "\r\n"],
  ] as const) {
    test(`${name} line endings`, () => {
      // The unterminated tail also releases a block whose blank line's CR ended the previous bytes.
      const stream = `event: a${eol}data: 1${eol}data: 2${eol}${eol}: c${eol}data: 3${eol}${eol}data: tail`;
      const { blocks, rest } = parse([stream]);
      assert.deepEqual(blocks.map(view), [
        { event: "a", data: "1\n2", hasData: true },
        { event: "message", data: "3", hasData: true },
      ]);
      assert.deepEqual(
        blocks.map((b) => b.raw.toString()),
        [`event: a${eol}data: 1${eol}data: 2${eol}${eol}`, `: c${eol}data: 3${eol}${eol}`],
      );
      assert.equal(rest.toString(), "data: tail");
    });
  }

  test("mixed endings within one stream", () => {
    const { blocks } = parse(["data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\n\n"]);
    assert.deepEqual(
      blocks.map((b) => b.data),
      ["a\nb\nc", "d"],
    );
  });

  test("a CRLF split between chunks is one line ending, not a blank line", () => {
    // Taking the LF for a blank line would end the event early and split the relayed bytes wrongly.
    const { blocks, perPush, rest } = parse(["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
    assert.deepEqual(perPush, [0, 0, 0, 1]);
    assert.deepEqual(blocks.map(view), [{ event: "message", data: "a\nb", hasData: true }]);
    assert.equal(blocks[0]?.raw.toString(), "data: a\r\ndata: b\r\n\r\n");
    assert.equal(rest.length, 0);
  });

  test("a blank line's CR at the end of a chunk waits for the next byte before the block is returned", () => {
    // The block's raw bytes must include the LF of a CRLF that arrives in the next chunk.
    const withLf = parse(["data: a\r\r", "\ndata: b\n\n"]);
    assert.deepEqual(withLf.perPush, [0, 2]);
    assert.deepEqual(
      withLf.blocks.map((b) => b.raw.toString()),
      ["data: a\r\r\n", "data: b\n\n"],
    );

    const withoutLf = parse(["data: a\r\r", "data: b\n\n"]);
    assert.deepEqual(withoutLf.perPush, [0, 2]);
    assert.deepEqual(
      withoutLf.blocks.map((b) => b.raw.toString()),
      ["data: a\r\r", "data: b\n\n"],
    );
    assert.deepEqual(
      withoutLf.blocks.map((b) => b.data),
      ["a", "b"],
    );
  });

  test("a stream ending on a blank line's lone CR hands its bytes back from end()", () => {
    const { blocks, rest } = parse(["data: a\r\r"]);
    assert.equal(blocks.length, 0);
    assert.equal(rest.toString(), "data: a\r\r");
  });
});

describe("SseParser: bytes and text", () => {
  test("one leading BOM is ignored for parsing but kept in the relayed bytes", () => {
    const { blocks } = parse([Buffer.from("\uFEFFdata: x\n\n")]);
    assert.equal(blocks[0]?.data, "x");
    assert.deepEqual(blocks[0]?.raw, Buffer.from("\uFEFFdata: x\n\n"));
  });

  test("a BOM split across chunks is still recognised", () => {
    const bytes = Buffer.from("\uFEFF\ndata: x\n\n");
    const { blocks } = parse([bytes.subarray(0, 1), bytes.subarray(1, 2), bytes.subarray(2)]);
    // With the BOM ignored, the first line is blank and ends an empty block.
    assert.deepEqual(blocks.map(view), [
      { event: "message", data: "", hasData: false },
      { event: "message", data: "x", hasData: true },
    ]);
    assert.deepEqual(blocks[0]?.raw, Buffer.from([0xef, 0xbb, 0xbf, 0x0a]));
  });

  test("only the first BOM is ignored; a second is part of the field name", () => {
    const { blocks } = parse(["\uFEFF\uFEFFdata: x\n\n"]);
    assert.equal(blocks[0]?.hasData, false);
  });

  test("a BOM later in the stream is not stripped", () => {
    const { blocks } = parse(["data: a\n\n\uFEFFdata: b\n\n"]);
    assert.deepEqual(
      blocks.map((b) => b.hasData),
      [true, false],
    );
  });

  test("multibyte UTF-8 split across chunks at every byte decodes correctly", () => {
    const text = "héllo € 😀 日本";
    const bytes = Buffer.from(`event: é\ndata: ${text}\n\n`);
    for (let cut = 1; cut < bytes.length; cut++) {
      const { blocks } = parse([bytes.subarray(0, cut), bytes.subarray(cut)]);
      assert.deepEqual(blocks.map(view), [{ event: "é", data: text, hasData: true }], `cut at ${cut}`);
    }
    const byteByByte = parse([...bytes].map((b) => Buffer.from([b])));
    assert.equal(byteByByte.blocks[0]?.data, text);
  });

  test("blocks within one chunk are slices of it, not copies", () => {
    // Copying every event would cost the streaming hot path a second pass over each token.
    const chunk = Buffer.from("data: a\n\ndata: b\n\n");
    const blocks = new SseParser({ maxBlockBytes: LIMIT }).push(chunk);
    assert.equal(blocks.length, 2);
    for (const block of blocks) assert.equal(block.raw.buffer, chunk.buffer);
  });
});

describe("SseParser: limits and end of stream", () => {
  function assertTooLarge(fn: () => void, limit: number): void {
    assert.throws(fn, (err: unknown) => {
      assert.ok(err instanceof GatehouseError);
      assert.equal(err.code, "GATE_UPSTREAM_PROTOCOL");
      assert.match(err.message, new RegExp(`maxBlockBytes \\(${limit} bytes\\)`));
      return true;
    });
  }

  test("an unterminated block growing past the limit throws, naming the limit", () => {
    const parser = new SseParser({ maxBlockBytes: 64 });
    parser.push(Buffer.from(`data: ${"x".repeat(40)}`));
    assertTooLarge(() => parser.push(Buffer.from("y".repeat(40))), 64);
  });

  test("a complete block over the limit in one chunk throws too", () => {
    const parser = new SseParser({ maxBlockBytes: 64 });
    assertTooLarge(() => parser.push(Buffer.from(`data: ${"x".repeat(100)}\n\n`)), 64);
  });

  test("a block of exactly the limit is accepted", () => {
    const block = `data: ${"x".repeat(56)}\n\n`;
    assert.equal(block.length, 64);
    const { blocks } = parse([block.slice(0, 30), block.slice(30)], 64);
    assert.equal(blocks[0]?.raw.length, 64);
  });

  test("the limit applies per block, not to the whole stream", () => {
    const block = `data: ${"x".repeat(50)}\n\n`;
    const { blocks } = parse([block.repeat(100)], 64);
    assert.equal(blocks.length, 100);
  });

  test("end() returns the unterminated trailing block, and nothing after a clean end", () => {
    const parser = new SseParser({ maxBlockBytes: LIMIT });
    assert.equal(parser.push(Buffer.from("data: a\n\nevent: x\ndata: par")).length, 1);
    assert.equal(parser.push(Buffer.from("tial\n")).length, 0);
    assert.equal(parser.end().toString(), "event: x\ndata: partial\n");

    const clean = parse(["data: a\n\n"]);
    assert.equal(clean.rest.length, 0);
  });
});

describe("SseParser: Anthropic Messages stream", () => {
  const events: [string, unknown][] = [
    [
      "message_start",
      {
        type: "message_start",
        message: {
          id: "msg_01",
          type: "message",
          role: "assistant",
          content: [],
          model: "claude-sonnet-4-5",
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: 25, output_tokens: 1 },
        },
      },
    ],
    [
      "content_block_start",
      { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } },
    ],
    ["ping", { type: "ping" }],
    [
      "content_block_delta",
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "Hello, " } },
    ],
    [
      "content_block_delta",
      { type: "content_block_delta", index: 0, delta: { type: "text_delta", text: "wörld ✓" } },
    ],
    ["content_block_stop", { type: "content_block_stop", index: 0 }],
    [
      "message_delta",
      {
        type: "message_delta",
        delta: { stop_reason: "end_turn", stop_sequence: null },
        usage: { output_tokens: 4 },
      },
    ],
    ["message_stop", { type: "message_stop" }],
  ];
  const stream = Buffer.from(
    events.map(([name, body]) => `event: ${name}\ndata: ${JSON.stringify(body)}\n\n`).join(""),
  );

  test("every event comes back with its name, JSON data and exact bytes, in any chunking", () => {
    for (const size of [1, 7, 64, 1024, stream.length]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i += size) chunks.push(stream.subarray(i, i + size));
      const { blocks, rest } = parse(chunks);
      assert.deepEqual(
        blocks.map((b) => [b.event, JSON.parse(b.data)]),
        events,
        `chunk size ${size}`,
      );
      assert.deepEqual(Buffer.concat([...blocks.map((b) => b.raw), rest]), stream);
      assert.equal(rest.length, 0);
    }
  });
});
