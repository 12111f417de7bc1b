/**
 * Rebuilds the Anthropic Message of a streamed `/v1/messages` response from its
 * server-sent events, so a session record can show what the model answered as
 * one object (the `message` of an exchange's response) next to the raw chunks.
 *
 * The result is the object the official TypeScript SDK's `finalMessage()`
 * resolves to for the same stream (without the SDK's client-side
 * `parsed_output` helper field), so an auditor sees what the agent's caller saw.
 * Unlike the SDK it never throws: a stream cut short, an `error` event or a
 * malformed event yields what was built up to that point with `complete: false`.
 *
 * @see https://docs.claude.com/en/docs/build-with-claude/streaming
 * @see https://docs.claude.com/en/api/messages-streaming
 */

/** One server-sent event: its `event` field ("" when absent) and its `data` lines joined by "\n". */
export interface StreamedEvent {
  readonly event: string;
  readonly data: string;
}

/** An `error` event sent inside a stream, such as `overloaded_error` under load. */
export interface StreamedError {
  type: string;
  message: string;
}

export interface ReassembledMessage {
  /** The Message as far as the stream built it; null when no `message_start` arrived. */
  message: Record<string, unknown> | null;
  /** The stream's `error` event, if it sent one. */
  error: StreamedError | null;
  /** True only when `message_stop` arrived and nothing was malformed and no error was sent. */
  complete: boolean;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Tool input arrives as pieces of one JSON text; these block types carry it. */
function tracksToolInput(block: JsonObject): boolean {
  return block.type === "tool_use" || block.type === "server_tool_use";
}

/** Usage counters that `message_delta` carries as whole-message totals when they apply. */
const CUMULATIVE_USAGE = [
  "input_tokens",
  "cache_creation_input_tokens",
  "cache_read_input_tokens",
  "server_tool_use",
  "output_tokens_details",
] as const;

function streamedError(data: string): StreamedError {
  let body: unknown;
  try {
    body = JSON.parse(data);
  } catch {
    body = undefined;
  }
  const error = isObject(body) ? body.error : undefined;
  if (!isObject(error)) return { type: "api_error", message: data };
  return {
    type: typeof error.type === "string" ? error.type : "api_error",
    message: typeof error.message === "string" ? error.message : data,
  };
}

/**
 * Rebuilds the final Message from the events of one streamed response.
 *
 * Follows the documented event flow: `message_start` gives the base Message;
 * `content_block_start` appends a block; `content_block_delta` applies a
 * `text_delta`, `citations_delta`, `input_json_delta` (tool input JSON is
 * accumulated and parsed at `content_block_stop`; no pieces leaves the start's
 * input), `thinking_delta` or `signature_delta` to the block at its `index`;
 * `message_delta` sets `stop_reason`, `stop_sequence`, `stop_details`, a
 * non-null `container`, `usage.output_tokens` and those other usage totals it
 * carries; `message_stop` completes it. `ping`, unnamed and unknown events are
 * ignored, as the documentation asks of clients.
 *
 * Processing stops at the first `error` event or malformed event (data that is
 * not a JSON object, a second `message_start`, tool input that is not JSON), as
 * the SDK stops there too; the stream then counts as incomplete.
 */
export function reassembleMessage(events: Iterable<StreamedEvent>): ReassembledMessage {
  let message: JsonObject | null = null;
  let content: unknown[] = [];
  let error: StreamedError | null = null;
  let stopped = false;
  let broken = false;
  /** Tool input JSON text by block position; `dirty` holds positions with pieces not yet parsed. */
  const toolJson = new Map<number, string>();
  const dirty = new Set<number>();

  /** Parses a tool block's accumulated input and moves `input` last, where the SDK puts it. */
  const settleToolInput = (position: number): boolean => {
    dirty.delete(position);
    const block = content[position];
    const text = toolJson.get(position) ?? "";
    if (!isObject(block)) return true;
    let input: unknown;
    try {
      input = text === "" ? {} : JSON.parse(text);
    } catch {
      return false;
    }
    // Built from entries, whose keys become data properties: a field named `__proto__` stays a
    // field (assigned to a plain object, it would set the prototype and vanish).
    const settled: JsonObject = Object.fromEntries(Object.entries(block).filter(([key]) => key !== "input"));
    settled.input = input;
    content[position] = settled;
    return true;
  };

  const applyDelta = (event: JsonObject): boolean => {
    const { index, delta } = event;
    if (typeof index !== "number" || !Number.isInteger(index) || !isObject(delta)) return false;
    // Array.prototype.at semantics, as the SDK uses: a negative index counts from the end.
    const position = index < 0 ? content.length + index : index;
    const block = content[position];
    if (!isObject(block)) return true;
    switch (delta.type) {
      case "text_delta":
        if (block.type !== "text") return true;
        if (typeof delta.text !== "string") return false;
        content[position] = {
          ...block,
          text: (typeof block.text === "string" ? block.text : "") + delta.text,
        };
        return true;
      case "citations_delta": {
        if (block.type !== "text") return true;
        const citations = Array.isArray(block.citations) ? block.citations : [];
        content[position] = { ...block, citations: [...citations, delta.citation] };
        return true;
      }
      case "input_json_delta":
        if (!tracksToolInput(block)) return true;
        if (typeof delta.partial_json !== "string") return false;
        toolJson.set(position, (toolJson.get(position) ?? "") + delta.partial_json);
        dirty.add(position);
        return true;
      case "thinking_delta":
        if (block.type !== "thinking") return true;
        if (typeof delta.thinking !== "string" || typeof block.thinking !== "string") return false;
        content[position] = { ...block, thinking: block.thinking + delta.thinking };
        return true;
      case "signature_delta":
        if (block.type !== "thinking") return true;
        content[position] = { ...block, signature: delta.signature };
        return true;
      default:
        return true;
    }
  };

  const applyMessageDelta = (current: JsonObject, event: JsonObject): boolean => {
    const { delta, usage } = event;
    if (!isObject(delta)) return false;
    // Assigned even when absent, as the SDK does: an absent field reads as undefined afterwards.
    current.stop_reason = delta.stop_reason;
    current.stop_sequence = delta.stop_sequence;
    current.stop_details = delta.stop_details;
    if (delta.container !== null && delta.container !== undefined) current.container = delta.container;
    if (isObject(usage)) {
      let total = current.usage;
      if (!isObject(total)) {
        total = {};
        current.usage = total;
      }
      const into = total as JsonObject;
      into.output_tokens = usage.output_tokens;
      // Whole-message totals, omitted when they do not apply: overwrite when present, never add.
      for (const key of CUMULATIVE_USAGE) {
        if (usage[key] !== null && usage[key] !== undefined) into[key] = usage[key];
      }
    }
    return true;
  };

  /** Applies one parsed event; false when it is malformed for its type. */
  const apply = (event: JsonObject): boolean => {
    if (event.type === "message_start") {
      if (message !== null || !isObject(event.message)) return false;
      message = event.message;
      content = Array.isArray(message.content) ? message.content : [];
      message.content = content;
      return true;
    }
    // Before message_start there is nothing to apply a change to.
    if (message === null) return true;
    switch (event.type) {
      case "message_stop":
        stopped = true;
        return true;
      case "message_delta":
        return applyMessageDelta(message, event);
      case "content_block_start":
        if (!isObject(event.content_block)) return false;
        content.push({ ...event.content_block });
        return true;
      case "content_block_delta":
        return applyDelta(event);
      case "content_block_stop": {
        const { index } = event;
        if (typeof index !== "number" || !Number.isInteger(index)) return false;
        const position = index < 0 ? content.length + index : index;
        return dirty.has(position) ? settleToolInput(position) : true;
      }
      default:
        return true;
    }
  };

  for (const { event, data } of events) {
    // Unnamed events and keep-alives carry nothing for the message.
    if (event === "" || event === "ping") continue;
    if (event === "error") {
      error = streamedError(data);
      break;
    }
    if (data === "") continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(data);
    } catch {
      broken = true;
      break;
    }
    if (!isObject(parsed) || !apply(parsed)) {
      broken = true;
      break;
    }
  }

  // A block whose input was still arriving keeps its start input unless the pieces so far parse.
  for (const position of [...dirty]) {
    if (!settleToolInput(position)) broken = true;
  }

  return { message, error, complete: stopped && !broken && error === null };
}
