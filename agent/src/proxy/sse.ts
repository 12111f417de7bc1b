import { GatehouseError } from "@gatehouse/proto/errors";

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const UTF8_BOM = [0xef, 0xbb, 0xbf] as const;

/**
 * One block of a `text/event-stream`: the lines up to and including the blank line that ends it.
 *
 * Every block is returned, also those the WHATWG processing model would not dispatch (comments only,
 * no `data` field), so that a relay can pass on every byte it received.
 *
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
export interface SseBlock {
  /** Exact bytes of this block as received, up to and including the blank line that ended it. */
  raw: Buffer;
  /** The `event` field, or "message" when none was given (WHATWG default type). */
  event: string;
  /** `data` lines joined with "\n", per the spec. */
  data: string;
  /** True when at least one data field was present (the spec dispatches only then). */
  hasData: boolean;
  /**
   * The value of this block's last `id` field ("" for an `id` field without value, which resets the
   * last event ID); absent when the block has none. A value containing U+0000 is ignored, per the spec.
   */
  id?: string;
}

/**
 * Incremental parser of a Server-Sent Events byte stream that keeps each block's exact bytes, so a
 * proxy can relay (or rewrite) a stream event by event while recording it.
 *
 * Lines end in CRLF, LF or CR; a CR at the end of one chunk and an LF at the start of the next are
 * one line ending. One leading UTF-8 BOM is ignored. Text is decoded per complete block, so a
 * character split across chunks decodes correctly. Memory is bounded by `maxBlockBytes`.
 *
 * After `push` throws, the stream cannot be continued; abandon it.
 *
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream
 */
export class SseParser {
  readonly #maxBlockBytes: number;
  /** Bytes of the block in progress, from earlier chunks. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** The next byte starts a line (so a line ending there is a blank line and ends a block). */
  #atLineStart = true;
  /** The last byte seen was a CR ending a non-blank line: an LF right after it belongs to it. */
  #crPending = false;
  /**
   * The pending block ended with a blank line whose CR was the last byte seen. It is held until the
   * next byte shows whether an LF completes a CRLF, so that LF is not taken for another blank line.
   */
  #heldAtCr = false;
  #bomChecked = false;
  /** The stream began with a BOM, which the first block's text must not include. */
  #stripBom = false;

  constructor(options: { maxBlockBytes: number }) {
    if (!Number.isSafeInteger(options.maxBlockBytes) || options.maxBlockBytes < 1) {
      throw new GatehouseError(
        "GATE_INTERNAL",
        `SseParser maxBlockBytes must be a positive integer, got ${options.maxBlockBytes}`,
      );
    }
    this.#maxBlockBytes = options.maxBlockBytes;
  }

  /** Feeds one chunk; returns the blocks it completed, in order. */
  push(chunk: Buffer): SseBlock[] {
    const blocks: SseBlock[] = [];
    if (chunk.length === 0) return blocks;
    let buf = chunk;
    let pos = 0;

    if (!this.#bomChecked) {
      // The BOM may arrive split across chunks; the bytes before the decision are at most two.
      if (this.#pendingBytes > 0) {
        buf = Buffer.concat([...this.#pending, buf]);
        this.#pending = [];
        this.#pendingBytes = 0;
      }
      if (buf.length < UTF8_BOM.length && isBomPrefix(buf)) {
        this.#keep(buf, 0);
        return blocks;
      }
      this.#bomChecked = true;
      if (isBomPrefix(buf)) {
        pos = UTF8_BOM.length;
        this.#stripBom = true;
      }
    }

    const len = buf.length;
    // Start (in `buf`) of the block in progress; earlier bytes of it, if any, are in #pending.
    let blockStart = 0;

    if (this.#heldAtCr) {
      this.#heldAtCr = false;
      const end = buf[0] === LF ? 1 : 0;
      blocks.push(this.#complete(buf, 0, end));
      blockStart = end;
      pos = end;
    }

    // Positions of the next LF and CR at or after `pos`, or `len` when there is none. Each is searched
    // again only once `pos` has passed it, so a chunk is scanned in linear time whatever its lines.
    let nextLf = -1;
    let nextCr = -1;

    while (pos < len) {
      if (this.#crPending) {
        this.#crPending = false;
        if (buf[pos] === LF) {
          pos++;
          continue;
        }
      }
      if (this.#atLineStart) {
        const b = buf[pos];
        if (b === LF) {
          blocks.push(this.#complete(buf, blockStart, pos + 1));
          blockStart = ++pos;
          continue;
        }
        if (b === CR) {
          if (pos + 1 === len) {
            this.#heldAtCr = true;
            pos = len;
            break;
          }
          const end = buf[pos + 1] === LF ? pos + 2 : pos + 1;
          blocks.push(this.#complete(buf, blockStart, end));
          blockStart = pos = end;
          continue;
        }
        this.#atLineStart = false;
      }
      if (nextLf < pos) nextLf = indexOrEnd(buf, LF, pos);
      if (nextCr < pos) nextCr = indexOrEnd(buf, CR, pos);
      const lineEnd = Math.min(nextLf, nextCr);
      if (lineEnd === len) break;
      this.#crPending = lineEnd === nextCr;
      this.#atLineStart = true;
      pos = lineEnd + 1;
    }

    if (blockStart < len) this.#keep(buf, blockStart);
    return blocks;
  }

  /**
   * At end of stream: the bytes of an unterminated trailing block (possibly empty), to be relayed as
   * they are. The spec discards such a block rather than dispatch it. This includes a block whose blank
   * line ended in a lone CR as the very last byte of the stream, since until the stream ended it could
   * not be told from the start of a CRLF.
   */
  end(): Buffer {
    const rest =
      this.#pendingBytes === 0 ? Buffer.alloc(0) : Buffer.concat(this.#pending, this.#pendingBytes);
    this.#pending = [];
    this.#pendingBytes = 0;
    this.#heldAtCr = false;
    this.#crPending = false;
    this.#atLineStart = true;
    return rest;
  }

  /** Holds `buf[start..]` as part of the block in progress, refusing to hold more than the limit. */
  #keep(buf: Buffer, start: number): void {
    const size = this.#pendingBytes + buf.length - start;
    if (size > this.#maxBlockBytes) throw this.#tooLarge();
    // A slice, not a copy: upstream chunks are not reused after they are pushed, so they stay intact.
    this.#pending.push(start === 0 ? buf : buf.subarray(start));
    this.#pendingBytes = size;
  }

  /** Builds the block that ends at `buf[end]` (exclusive), with any earlier bytes of it held pending. */
  #complete(buf: Buffer, start: number, end: number): SseBlock {
    let raw: Buffer;
    if (this.#pendingBytes === 0) {
      if (end - start > this.#maxBlockBytes) throw this.#tooLarge();
      // A slice of the chunk, not a copy: upstream chunks are not reused after they are pushed.
      raw = buf.subarray(start, end);
    } else {
      const size = this.#pendingBytes + end;
      if (size > this.#maxBlockBytes) throw this.#tooLarge();
      this.#pending.push(buf.subarray(0, end));
      raw = Buffer.concat(this.#pending, size);
      this.#pending = [];
      this.#pendingBytes = 0;
    }
    let text = raw.toString("utf8");
    if (this.#stripBom) {
      this.#stripBom = false;
      text = text.slice(1);
    }
    return interpretBlock(raw, text);
  }

  #tooLarge(): GatehouseError {
    return new GatehouseError(
      "GATE_UPSTREAM_PROTOCOL",
      `upstream sent a server-sent event larger than maxBlockBytes (${this.#maxBlockBytes} bytes); ` +
        "the stream was stopped rather than buffered without bound. If the upstream legitimately sends " +
        "events this large, raise maxBlockBytes.",
    );
  }
}

function indexOrEnd(buf: Buffer, byte: number, from: number): number {
  const at = buf.indexOf(byte, from);
  return at === -1 ? buf.length : at;
}

function isBomPrefix(buf: Buffer): boolean {
  const n = Math.min(buf.length, UTF8_BOM.length);
  for (let i = 0; i < n; i++) if (buf[i] !== UTF8_BOM[i]) return false;
  return true;
}

/**
 * Applies the field rules to the text of one complete block, which ends with its blank line.
 *
 * @see https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 */
function interpretBlock(raw: Buffer, text: string): SseBlock {
  let event = "";
  let data = "";
  let hasData = false;
  let id: string | undefined;

  const len = text.length;
  // Same linear scan as for bytes: each search runs again only after the position passes its result.
  let nextLf = -1;
  let nextCr = -1;
  let nextColon = -1;
  let pos = 0;
  while (pos < len) {
    if (nextLf < pos) nextLf = stringIndexOrEnd(text, "\n", pos);
    if (nextCr < pos) nextCr = stringIndexOrEnd(text, "\r", pos);
    const lineEnd = Math.min(nextLf, nextCr);
    if (lineEnd === pos) break; // the blank line that ends the block
    const lineStart = pos;
    pos = text.charCodeAt(lineEnd) === CR && text.charCodeAt(lineEnd + 1) === LF ? lineEnd + 2 : lineEnd + 1;
    if (text.charCodeAt(lineStart) === COLON) continue; // comment

    if (nextColon < lineStart) nextColon = stringIndexOrEnd(text, ":", lineStart);
    let field: string;
    let value: string;
    if (nextColon < lineEnd) {
      field = text.slice(lineStart, nextColon);
      const valueStart = text.charCodeAt(nextColon + 1) === SPACE ? nextColon + 2 : nextColon + 1;
      value = valueStart < lineEnd ? text.slice(valueStart, lineEnd) : "";
    } else {
      field = text.slice(lineStart, lineEnd);
      value = "";
    }
    switch (field) {
      case "event":
        event = value;
        break;
      case "data":
        data = hasData ? `${data}\n${value}` : value;
        hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) id = value;
        break;
      // `retry` and unknown fields do not concern a relay.
    }
  }

  const block: SseBlock = { raw, event: event === "" ? "message" : event, data, hasData };
  if (id !== undefined) block.id = id;
  return block;
}

function stringIndexOrEnd(text: string, search: string, from: number): number {
  const at = text.indexOf(search, from);
  return at === -1 ? text.length : at;
}
