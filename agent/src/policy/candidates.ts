/**
 * The strings of a Messages API request or a tool call that policy patterns are searched in.
 *
 * Bodies are `JSON.parse`d client input, so every shape is checked before it is read: a field of
 * the wrong type contributes nothing instead of throwing. Nothing here re-serialises a body.
 *
 * Pure code: no I/O.
 *
 * @see https://docs.anthropic.com/en/api/messages
 */

/** The prompt string is (part of) the system prompt. */
export const FROM_SYSTEM = 1;
/** The prompt string is the text of a message, or of one of its `text` blocks. */
export const FROM_MESSAGE = 2;
/** The prompt string is the text of a `tool_result` block. */
export const FROM_TOOL_RESULT = 4;
/** The prompt string is a tool definition's description. */
export const FROM_TOOLS = 8;
/** Any of the above: what a `text` pattern is searched in. */
export const FROM_ANYWHERE = FROM_SYSTEM | FROM_MESSAGE | FROM_TOOL_RESULT | FROM_TOOLS;

/**
 * The text of a request's prompt. An agent loop resends its whole history, so the same text can
 * occur many times; each distinct string is kept once, which both bounds the pattern work and
 * keeps the pieces of a rule hit free of repeats.
 */
export interface PromptText {
  /** Each distinct non-empty string once, in the order of its first appearance. */
  readonly strings: readonly string[];
  /** For each string, the places (`FROM_*` bits) it appeared in. */
  readonly sources: readonly number[];
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isTextBlock(block: unknown): block is { type: "text"; text: string } {
  return isObject(block) && block.type === "text" && typeof block.text === "string";
}

/**
 * The text a content block puts before the model: a `text` block's text; a `document` whose source
 * is plain text (`{type: "text", data}`) or content blocks; a `search_result`'s text blocks. Images,
 * PDFs (base64), tool_use and thinking blocks carry none that can be read here.
 */
function blockTexts(block: unknown, out: (text: string) => void): void {
  if (isTextBlock(block)) out(block.text);
  else if (!isObject(block)) return;
  else if (block.type === "document" && isObject(block.source)) {
    if (typeof block.title === "string") out(block.title);
    if (typeof block.context === "string") out(block.context);
    const source = block.source;
    if (source.type === "text" && typeof source.data === "string") out(source.data);
    else if (source.type === "content" && Array.isArray(source.content)) {
      for (const part of source.content) if (isTextBlock(part)) out(part.text);
    }
  } else if (block.type === "search_result" && Array.isArray(block.content)) {
    for (const part of block.content) if (isTextBlock(part)) out(part.text);
  }
}

/**
 * Collects the system prompt, message text and tool_result text of a request body (text blocks,
 * plain-text documents and search results: see {@link blockTexts}).
 *
 * Empty strings are left out: no rule can usefully ask about them, and they would only show up
 * as empty pieces.
 */
export function promptText(request: unknown): PromptText {
  const strings: string[] = [];
  const sources: number[] = [];
  const seen = new Map<string, number>();
  const add = (text: string, from: number): void => {
    if (text.length === 0) return;
    const at = seen.get(text);
    if (at === undefined) {
      seen.set(text, strings.length);
      strings.push(text);
      sources.push(from);
    } else {
      sources[at] = (sources[at] ?? 0) | from;
    }
  };
  if (!isObject(request)) return { strings, sources };

  const system = request.system;
  if (typeof system === "string") add(system, FROM_SYSTEM);
  else if (Array.isArray(system)) {
    const texts = system.filter(isTextBlock).map((b) => b.text);
    for (const text of texts) add(text, FROM_SYSTEM);
    // The model reads adjacent blocks as one text: a pattern split across two is found in the join.
    if (texts.length > 1) add(texts.join(""), FROM_SYSTEM);
  }
  // Tool definitions are rendered into the prompt too.
  if (Array.isArray(request.tools)) {
    for (const tool of request.tools) {
      if (isObject(tool) && typeof tool.description === "string") add(tool.description, FROM_TOOLS);
    }
  }

  const messages = request.messages;
  if (!Array.isArray(messages)) return { strings, sources };
  for (const message of messages) {
    if (!isObject(message)) continue;
    const content = message.content;
    if (typeof content === "string") {
      add(content, FROM_MESSAGE);
      continue;
    }
    if (!Array.isArray(content)) continue;
    const texts: string[] = [];
    for (const block of content) {
      if (isObject(block) && block.type === "tool_result") {
        const result = block.content;
        if (typeof result === "string") add(result, FROM_TOOL_RESULT);
        else if (Array.isArray(result)) {
          const parts: string[] = [];
          for (const part of result) blockTexts(part, (text) => parts.push(text));
          for (const text of parts) add(text, FROM_TOOL_RESULT);
          if (parts.length > 1) add(parts.join(""), FROM_TOOL_RESULT);
        }
      } else if (isObject(block) && block.type === "tool_use") {
        // Earlier tool calls in the history are sent back to the model as well.
        for (const value of inputStrings(block.input)) add(value, FROM_MESSAGE);
      } else {
        blockTexts(block, (text) => {
          add(text, FROM_MESSAGE);
          texts.push(text);
        });
      }
    }
    if (texts.length > 1) add(texts.join(""), FROM_MESSAGE);
  }
  return { strings, sources };
}

/** The distinct names of the tools a request offers (`tools[].name`), in order. */
export function toolNames(request: unknown): string[] {
  if (!isObject(request) || !Array.isArray(request.tools)) return [];
  const names = new Set<string>();
  for (const tool of request.tools) {
    if (isObject(tool) && typeof tool.name === "string") names.add(tool.name);
  }
  return [...names];
}

/** The request's `model`, when it is a string. */
export function requestModel(request: unknown): string | undefined {
  return isObject(request) && typeof request.model === "string" ? request.model : undefined;
}

/** The request's `max_tokens`, when it is a number. */
export function requestMaxTokens(request: unknown): number | undefined {
  return isObject(request) && typeof request.max_tokens === "number" ? request.max_tokens : undefined;
}

/**
 * Every distinct string value at any depth of a tool call's input, in document order (keys are
 * not values). The walk keeps its own stack, so input nested deeper than the call stack allows
 * is still read to the end; `input` is a parsed JSON value, which cannot contain cycles.
 */
export function inputStrings(input: unknown): string[] {
  const found = new Set<string>();
  const stack: unknown[] = [input];
  while (stack.length > 0) {
    const value = stack.pop();
    if (typeof value === "string") found.add(value);
    else if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) stack.push(value[i]);
    } else if (isObject(value)) {
      const values = Object.values(value);
      for (let i = values.length - 1; i >= 0; i--) stack.push(values[i]);
    }
  }
  return [...found];
}
