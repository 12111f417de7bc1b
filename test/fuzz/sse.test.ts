import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type SseBlock, SseParser } from "@gatehouse/agent/proxy/sse.js";
import fc from "fast-check";

const LIMIT = 1 << 20;

/** Splits `bytes` at the given cut points (any naturals; reduced modulo the length). */
function chunked(bytes: Uint8Array, cuts: number[]): Buffer[] {
  const buf = Buffer.from(bytes);
  const points = [...new Set(cuts.map((c) => c % (buf.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let from = 0;
  for (const at of [...points, buf.length]) {
    chunks.push(buf.subarray(from, at));
    from = at;
  }
  return chunks;
}

function run(chunks: Buffer[]): { blocks: SseBlock[]; rest: Buffer } {
  const parser = new SseParser({ maxBlockBytes: LIMIT });
  const blocks = chunks.flatMap((c) => parser.push(c));
  return { blocks, rest: parser.end() };
}

function meaning(blocks: SseBlock[]): { event: string; data: string; hasData: boolean; id?: string }[] {
  return blocks.map(({ raw: _raw, ...rest }) => rest);
}

// Bytes that matter to the grammar come often, so random streams have many lines, fields and blocks;
// BOM and multibyte bytes exercise the stream start and decoding across chunks.
const streamByte = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom(0x0a, 0x0d, 0x3a, 0x20) },
  { weight: 4, arbitrary: fc.constantFrom(...Buffer.from("dataeventidretry")) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(0xef, 0xbb, 0xbf, 0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xf0, 0x9f, 0x98, 0x80),
  },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) },
);
const streamBytes = fc.array(streamByte, { maxLength: 300 }).map((bytes) => Uint8Array.from(bytes));
const cutPoints = fc.array(fc.nat(), { maxLength: 20 });

describe("SseParser properties", () => {
  test("relaying every raw block and then end() reproduces the input exactly", () => {
    fc.assert(
      fc.property(streamBytes, cutPoints, (bytes, cuts) => {
        const { blocks, rest } = run(chunked(bytes, cuts));
        assert.deepEqual(Buffer.concat([...blocks.map((b) => b.raw), rest]), Buffer.from(bytes));
      }),
      { numRuns: 800 },
    );
  });

  test("what is parsed does not depend on how the stream is chunked", () => {
    fc.assert(
      fc.property(streamBytes, cutPoints, (bytes, cuts) => {
        const whole = run([Buffer.from(bytes)]);
        const pieces = run(chunked(bytes, cuts));
        assert.deepEqual(meaning(pieces.blocks), meaning(whole.blocks));
        assert.deepEqual(
          pieces.blocks.map((b) => b.raw),
          whole.blocks.map((b) => b.raw),
        );
        assert.deepEqual(pieces.rest, whole.rest);
      }),
      { numRuns: 800 },
    );
  });

  test("a well-formed stream parses to exactly the events it was written from", () => {
    const noLineBreak = (s: string) => !/[\r\n]/.test(s);
    const value = fc.string({ unit: "binary", maxLength: 12 }).filter(noLineBreak);
    interface GeneratedEvent {
      name: string | undefined;
      data: string[];
      id: string | undefined;
      comment: string | undefined;
      retry: boolean;
      slots: number[];
      spaced: boolean;
    }
    const event: fc.Arbitrary<GeneratedEvent> = fc.record({
      name: fc.option(value, { nil: undefined }),
      data: fc.array(value, { maxLength: 3 }),
      id: fc.option(
        value.filter((s) => !s.includes("\0")),
        { nil: undefined },
      ),
      comment: fc.option(value, { nil: undefined }),
      retry: fc.boolean(),
      // Where each data line goes among the other lines; data lines keep their order.
      slots: fc.array(fc.nat(), { minLength: 3, maxLength: 3 }),
      spaced: fc.boolean(),
    });
    // Enough line endings for the longest stream generated: 6 blocks of at most 8 lines each.
    const eols = fc.array(fc.constantFrom("\n", "\r", "\r\n"), { minLength: 48, maxLength: 48 });

    const field = (name: string, v: string, spaced: boolean) =>
      spaced || v.startsWith(" ") ? `${name}: ${v}` : `${name}:${v}`;

    function write(events: GeneratedEvent[], bom: boolean, endings: string[]): string {
      let text = bom ? "\uFEFF" : "";
      let previous = "";
      let count = 0;
      const nextEol = (blank: boolean): string => {
        let e = endings[count++ % endings.length] ?? "\n";
        // After a CR, a blank line ending in LF would read as one CRLF and the blank line would vanish.
        if (blank && previous === "\r" && e === "\n") e = "\r\n";
        previous = e;
        return e;
      };
      for (const e of events) {
        const lines: string[] = [];
        if (e.comment !== undefined) lines.push(`:${e.comment}`);
        if (e.retry) lines.push("retry: 3000");
        if (e.name !== undefined) lines.push(field("event", e.name, e.spaced));
        if (e.id !== undefined) lines.push(e.id === "" && e.spaced ? "id" : field("id", e.id, e.spaced));
        let last = -1;
        for (const [k, d] of e.data.entries()) {
          const at = last + 1 + ((e.slots[k] ?? 0) % (lines.length - last));
          lines.splice(at, 0, d === "" && e.spaced ? "data" : field("data", d, e.spaced));
          last = at;
        }
        for (const line of lines) text += line + nextEol(false);
        text += nextEol(true);
      }
      // A blank line's lone CR as the very last byte is held until end(); end such a stream with CRLF.
      return text.endsWith("\r") ? `${text}\n` : text;
    }

    fc.assert(
      fc.property(
        fc.array(event, { maxLength: 6 }),
        fc.boolean(),
        eols,
        cutPoints,
        (events, bom, endings, cuts) => {
          const { blocks, rest } = run(chunked(Buffer.from(write(events, bom, endings)), cuts));
          assert.deepEqual(
            meaning(blocks),
            events.map((e) => {
              const expected: { event: string; data: string; hasData: boolean; id?: string } = {
                event: e.name === undefined || e.name === "" ? "message" : e.name,
                data: e.data.join("\n"),
                hasData: e.data.length > 0,
              };
              if (e.id !== undefined) expected.id = e.id;
              return expected;
            }),
          );
          // A BOM with nothing after it is all there is of an unterminated block.
          assert.deepEqual(rest, Buffer.from(bom && events.length === 0 ? "\uFEFF" : ""));
        },
      ),
      { numRuns: 600 },
    );
  });
});
