/**
 * Masks secrets in what the Messages API returns, before the client and the record see it.
 *
 * Streamed replies: `content_block_delta` events whose delta is `text_delta`,
 * `input_json_delta` or `thinking_delta` are masked as streams (below). Other deltas that carry
 * text (`citations_delta`) and `content_block_start` payloads (server tool results, a tool input
 * given whole) come whole in one event: their string values are masked, except `signature`s. Each content block has its own
 * `StreamMasker`; a delta carries the text released so far (possibly empty, so every upstream
 * event still reaches the client, in order, and parses), and what is held back at the end of a
 * block is sent as one more delta of the same type right before its `content_block_stop`. A delta
 * whose text is released unchanged is relayed as the very bytes received; a rewritten one is
 * re-serialized as compact JSON, with its other lines (`event`, `id`, comments) kept. Every other
 * event (`signature_delta`, `message_delta`, `ping`…), and every one with nothing to mask, passes
 * as the same bytes.
 *
 * Non-streamed JSON replies: every string value is masked, and the body re-serialized only
 * when something was masked.
 *
 * @see https://docs.anthropic.com/en/api/messages-streaming
 */
import type { MaskCounts, Masker, StreamMasker } from "../../masking/masker.js";
import type { ResponseRewriter } from "../forward.js";
import type { SseBlock } from "../sse.js";

/** Where the masking summary goes: counts per type, never values. */
export interface MaskingTally {
  masked(type: string, count: number): void;
}

/** The text field of each delta type that carries model output. */
const TEXT_FIELDS: Record<string, string> = {
  text_delta: "text",
  input_json_delta: "partial_json",
  thinking_delta: "thinking",
};

/** Events before which every block still open is flushed: nothing of a block may follow them. */
const ENDS_BLOCKS = new Set(["message_delta", "message_stop", "error"]);

const JSON_TYPE = /^application\/(?:[\w.+-]*\+)?json\s*(?:;|$)/i;

interface OpenBlock {
  stream: StreamMasker;
  deltaType: string;
  field: string;
}

/** Masks one exchange's response; a new one per exchange. */
export class ResponseMasking implements ResponseRewriter {
  readonly #masker: Masker;
  readonly #tally: MaskingTally;
  readonly #open = new Map<number, OpenBlock>();

  /** `masker`: the agent's current one (built-in detectors and pushed patterns), kept for the whole exchange. */
  constructor(tally: MaskingTally, masker: Masker) {
    this.#masker = masker;
    this.#tally = tally;
  }

  event(block: SseBlock): SseBlock[] {
    if (block.event === "content_block_delta") return this.#delta(block);
    if (block.event === "content_block_start") return [this.#maskedValues(block)];
    if (block.event === "content_block_stop") {
      const index = indexOf(block.data);
      const open = index === undefined ? undefined : this.#open.get(index);
      if (index === undefined || open === undefined) return [block];
      this.#open.delete(index);
      return [...this.#flush(index, open), block];
    }
    if (ENDS_BLOCKS.has(block.event)) return [...this.endOfEvents(), block];
    return [block];
  }

  endOfEvents(): SseBlock[] {
    const blocks: SseBlock[] = [];
    for (const [index, open] of this.#open) blocks.push(...this.#flush(index, open));
    this.#open.clear();
    return blocks;
  }

  rewritesBody(contentType: string): boolean {
    return JSON_TYPE.test(contentType);
  }

  body(body: Buffer): Buffer {
    const text = body.toString("utf8");
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      // Not JSON after all: masked as text, which markers cannot make less valid than it was.
      const masked = this.#masker.mask(text);
      this.#count(masked.found);
      return masked.found.size === 0 ? body : Buffer.from(masked.text);
    }
    const found: MaskCounts = new Map();
    const masked = maskStrings(value, this.#masker, found);
    if (found.size === 0) return body;
    this.#count(found);
    return Buffer.from(JSON.stringify(masked));
  }

  #delta(block: SseBlock): SseBlock[] {
    let event: { index?: unknown; delta?: Record<string, unknown> };
    try {
      event = JSON.parse(block.data) as typeof event;
    } catch {
      return [this.#maskedWhole(block)];
    }
    const delta = event.delta;
    const deltaType = typeof delta?.type === "string" ? delta.type : "";
    const field = TEXT_FIELDS[deltaType];
    if (delta === undefined || deltaType === "signature_delta") return [block];
    if (field === undefined) return [this.#maskedValues(block)];
    if (typeof event.index !== "number") return [block];
    const text = delta[field];
    if (typeof text !== "string") return [block];
    let open = this.#open.get(event.index);
    if (open === undefined) {
      open = { stream: this.#masker.stream(), deltaType, field };
      this.#open.set(event.index, open);
    }
    const released = open.stream.push(text);
    if (released === text) return [block];
    delta[field] = released;
    return [withData(block, JSON.stringify(event))];
  }

  #flush(index: number, open: OpenBlock): SseBlock[] {
    const rest = open.stream.flush();
    // Tallied once per block, at its end, when the stream's counts are complete.
    this.#count(open.stream.found);
    if (rest === "") return [];
    const data = JSON.stringify({
      type: "content_block_delta",
      index,
      delta: { type: open.deltaType, [open.field]: rest },
    });
    return [
      {
        raw: Buffer.from(`event: content_block_delta\ndata: ${data}\n\n`),
        event: "content_block_delta",
        data,
        hasData: true,
      },
    ];
  }

  /** An event that comes whole: its string values masked (signatures kept), re-serialized only when something was. */
  #maskedValues(block: SseBlock): SseBlock {
    let value: unknown;
    try {
      value = JSON.parse(block.data);
    } catch {
      return this.#maskedWhole(block);
    }
    const found: MaskCounts = new Map();
    const masked = maskStrings(value, this.#masker, found);
    if (found.size === 0) return block;
    this.#count(found);
    return withData(block, JSON.stringify(masked));
  }

  /** A delta that is not JSON: its data masked as text, so a secret in it is not relayed. */
  #maskedWhole(block: SseBlock): SseBlock {
    const masked = this.#masker.mask(block.data);
    if (masked.found.size === 0) return block;
    this.#count(masked.found);
    return withData(block, masked.text);
  }

  #count(found: MaskCounts): void {
    for (const [type, count] of found) this.#tally.masked(type, count);
  }
}

function indexOf(data: string): number | undefined {
  try {
    const index = (JSON.parse(data) as { index?: unknown }).index;
    return typeof index === "number" ? index : undefined;
  } catch {
    return undefined;
  }
}

/** Every string value in `value` masked; keys, and `signature` values (verified by the API), are left alone. */
function maskStrings(value: unknown, masker: Masker, found: MaskCounts): unknown {
  if (typeof value === "string") {
    const masked = masker.mask(value);
    for (const [type, count] of masked.found) found.set(type, (found.get(type) ?? 0) + count);
    return masked.text;
  }
  if (Array.isArray(value)) return value.map((v) => maskStrings(v, masker, found));
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value))
      out[key] = key === "signature" ? v : maskStrings(v, masker, found);
    return out;
  }
  return value;
}

/** The block with its data lines replaced by one carrying `data`; every other line is kept. */
function withData(block: SseBlock, data: string): SseBlock {
  const lines = block.raw.toString("utf8").split(/\r\n|\r|\n/);
  const kept: string[] = [];
  let placed = false;
  // The last two entries are the blank line that ends the block.
  for (const line of lines.slice(0, -2)) {
    if (line === "data" || line.startsWith("data:")) {
      if (!placed) kept.push(`data: ${data}`);
      placed = true;
    } else {
      kept.push(line);
    }
  }
  return { ...block, data, raw: Buffer.from(`${kept.join("\n")}\n\n`) };
}
