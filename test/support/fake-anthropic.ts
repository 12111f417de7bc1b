/**
 * An in-process fake of the Anthropic API, for tests and benchmarks: the
 * upstream behind a Gatehouse agent's `anthropic` connection. It speaks the
 * Messages API as documented, server-sent events included, so the real
 * `@anthropic-ai/sdk` works against it unchanged (test/unit/fake-anthropic.test.ts
 * proves that). It is a fake, not a model: replies are echoes or scripted.
 *
 * Routes: `POST /v1/messages` (JSON or, with `"stream": true`, SSE),
 * `POST /v1/messages/count_tokens`, `GET /v1/models`, `GET /v1/models/{id}`;
 * anything else is a 404 `not_found_error`. Every route checks the API key (see {@link authenticated}).
 *
 * @see https://docs.claude.com/en/api/messages
 * @see https://docs.claude.com/en/api/messages-streaming
 * @see https://docs.claude.com/en/api/messages-count-tokens
 * @see https://docs.claude.com/en/api/models-list
 * @see https://docs.claude.com/en/api/errors
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** The upstream key the fake accepts unless told otherwise; what a test's Vault double hands the agent. */
export const FAKE_UPSTREAM_API_KEY = "sk-ant-fake-upstream-key";

/**
 * What the fake received: one entry per request, in arrival order, recorded once its body was
 * read, or when the client gave up mid-upload (then `closedEarly` is already true and `body` is
 * what arrived).
 */
export interface ReceivedRequest {
  readonly method: string;
  /** Path including the query string, e.g. `/v1/models?limit=1`. */
  readonly path: string;
  /** Header names lower-cased; repeated headers joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  /** The body parsed as JSON, or undefined when it is empty or not JSON. */
  readonly json: unknown;
  /** Becomes true if the client connection closed before the response finished (an aborted request). */
  readonly closedEarly: boolean;
  /** Settles once the exchange is over: the response finished or the client went away. Never rejects. */
  readonly ended: Promise<void>;
  /**
   * Resolves, with the bytes of stream written so far, the first time the reader stops keeping
   * up (a write had to wait for 'drain'): how a test sees backpressure reach the upstream.
   */
  readonly stalled: Promise<number>;
}

/** A content block the fake answers with; `tool_use` ids are generated when omitted. */
export type FakeContentBlock =
  | { type: "text"; text: string }
  | { type: "tool_use"; id?: string; name: string; input: Record<string, unknown> }
  | { type: "thinking"; thinking: string; signature: string }
  | { type: "redacted_thinking"; data: string };

export interface FakeUsage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

/** How a streamed reply is paced; ignored for requests without `"stream": true`. */
export interface FakeStreaming {
  /** How many `text_delta`/`thinking_delta`/`input_json_delta` pieces each string is split into (default 3; short strings give fewer). */
  pieces?: number;
  /** Wait this long before each event (default 0: events are written back to back). */
  eventDelayMs?: number;
  /**
   * Stop after `afterEvents` events (counting every event written, `ping` included) until
   * `until` settles: fulfilled resumes the stream, rejected cuts the connection as a dropped
   * upstream would. Without `until` the stream never finishes; it ends when the client goes
   * away or the fake closes.
   */
  hold?: { afterEvents: number; until?: Promise<unknown> };
  /** After this many events, send `event: error` with an `overloaded_error` and end the response. */
  errorAfterEvents?: number;
}

/** A Message reply; every field has a default. */
export interface FakeMessageReply {
  /** Default: an echo, one text block `echo: <last user text>`. */
  content?: FakeContentBlock[];
  /** Default: `tool_use` when the content has a tool_use block, else `end_turn`. */
  stopReason?: string;
  stopSequence?: string | null;
  /** Default: tokens estimated from the request and reply sizes. */
  usage?: Partial<FakeUsage>;
  /** Default: a fresh `msg_…` id; fix it to compare two replies field for field. */
  id?: string;
  /** Default: the request's `model`. */
  model?: string;
  streaming?: FakeStreaming;
}

/** An HTTP error reply in the documented error shape, e.g. `{status: 529, error: {type: "overloaded_error", message: "Overloaded"}}`. */
export interface FakeErrorReply {
  status: number;
  error: { type: string; message: string };
  headers?: Record<string, string>;
}

export type FakeReply = FakeMessageReply | FakeErrorReply;

/**
 * Decides the reply to one `POST /v1/messages` from its parsed body. It may return a promise;
 * the response head waits for it, so a test can hold a non-streamed reply too.
 */
export type FakeReplyHandler = (
  body: Record<string, unknown>,
  request: ReceivedRequest,
) => FakeReply | Promise<FakeReply>;

export interface FakeAnthropicOptions {
  /** The only API key accepted, as `x-api-key` or `Authorization: Bearer` (default {@link FAKE_UPSTREAM_API_KEY}). */
  apiKey?: string;
  /** Keep every request in `requests` (default true); benchmarks turn it off to hold no memory per request. */
  recordRequests?: boolean;
}

export interface FakeAnthropic {
  /** `http://127.0.0.1:PORT`, no trailing slash: an SDK `baseURL` or a connection's upstream. */
  readonly url: string;
  readonly apiKey: string;
  /** Every request received, in arrival order (empty when `recordRequests` is false). */
  readonly requests: readonly ReceivedRequest[];
  /**
   * Scripts the replies to `POST /v1/messages` from now on: a handler, one fixed reply for
   * every request, or null for the default echo.
   */
  reply(script: FakeReplyHandler | FakeReply | null): void;
  /**
   * The first request to arrive after this call, so a test can await the request its
   * client is about to send. Rejects when the fake closes.
   */
  nextRequest(): Promise<ReceivedRequest>;
  /** Stops listening and destroys open connections, held streams included. */
  close(): Promise<void>;
}

/** A content block as sent: tool_use ids filled in. */
type WireBlock =
  | Exclude<FakeContentBlock, { type: "tool_use" }>
  | { type: "tool_use"; id: string; name: string; input: Record<string, unknown> };

interface MutableRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  json: unknown;
  closedEarly: boolean;
  ended: Promise<void>;
  stalled: Promise<number>;
  markStalled: (bytes: number) => void;
}

// Newest first, as the API lists them; release dates are the fake's own.
const MODELS = [
  { id: "claude-opus-4-6", display_name: "Claude Opus 4.6", created_at: "2026-02-04T00:00:00Z" },
  { id: "claude-sonnet-4-6", display_name: "Claude Sonnet 4.6", created_at: "2026-02-03T00:00:00Z" },
  { id: "claude-haiku-4-5-20251001", display_name: "Claude Haiku 4.5", created_at: "2025-10-01T00:00:00Z" },
].map((model) => ({ type: "model" as const, ...model }));

const DEFAULT_PIECES = 3;

function estimateTokens(chars: number): number {
  return Math.max(1, Math.ceil(chars / 4));
}

function flatHeaders(req: IncomingMessage): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : value;
  }
  return headers;
}

/**
 * The key may come as `x-api-key` (the documented header) or as `Authorization: Bearer`, which is
 * how the installed `@anthropic-ai/sdk` (1.x) sends an `apiKey`. Every credential presented must be
 * the key, so a session token leaking upstream beside the real key is refused, not ignored.
 */
function authenticated(headers: Readonly<Record<string, string>>, apiKey: string): boolean {
  const header = headers["x-api-key"];
  const authorization = headers.authorization;
  if (header === undefined && authorization === undefined) return false;
  if (header !== undefined && header !== apiKey) return false;
  return authorization === undefined || authorization === `Bearer ${apiKey}`;
}

function lastUserText(body: Record<string, unknown>): string {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  for (let i = messages.length - 1; i >= 0; i -= 1) {
    const message: unknown = messages[i];
    if (typeof message !== "object" || message === null) continue;
    const { role, content } = message as Record<string, unknown>;
    if (role !== "user") continue;
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) return "";
    const texts: string[] = [];
    for (const block of content) {
      if (typeof block === "object" && block !== null) {
        const { type, text } = block as Record<string, unknown>;
        if (type === "text" && typeof text === "string") texts.push(text);
      }
    }
    return texts.join("\n");
  }
  return "";
}

/** Splits into at most `pieces` non-empty parts, never between the halves of a surrogate pair. */
function split(text: string, pieces: number): string[] {
  if (pieces <= 1 || text.length <= 1) return [text];
  const size = Math.max(1, Math.ceil(text.length / pieces));
  const parts: string[] = [];
  let start = 0;
  while (start < text.length) {
    let end = Math.min(text.length, start + size);
    const code = text.charCodeAt(end - 1);
    if (end < text.length && code >= 0xd800 && code <= 0xdbff) end += 1;
    parts.push(text.slice(start, end));
    start = end;
  }
  return parts;
}

function sse(type: string, data: unknown): string {
  return `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Resolves when `res` can take more data, or has closed. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off("drain", done);
      res.off("close", done);
      resolve();
    };
    res.on("drain", done);
    res.on("close", done);
  });
}

function closedPromise(res: ServerResponse): Promise<void> {
  if (res.destroyed || res.writableFinished) return Promise.resolve();
  return new Promise((resolve) => res.once("close", () => resolve()));
}

/**
 * Starts a fake Anthropic API on 127.0.0.1 on a free port.
 *
 * @example
 * const fake = await startFakeAnthropic();
 * const client = new Anthropic({ baseURL: fake.url, apiKey: fake.apiKey, maxRetries: 0 });
 * fake.reply({ content: [{ type: "text", text: "hi" }], streaming: { pieces: 2 } });
 */
export async function startFakeAnthropic(options: FakeAnthropicOptions = {}): Promise<FakeAnthropic> {
  const apiKey = options.apiKey ?? FAKE_UPSTREAM_API_KEY;
  const recordRequests = options.recordRequests ?? true;
  const requests: ReceivedRequest[] = [];
  const waiters: { resolve: (r: ReceivedRequest) => void; reject: (e: Error) => void }[] = [];
  let script: FakeReplyHandler | FakeReply | null = null;
  let closing = false;
  const sockets = new Set<Socket>();

  // Ids look like the real ones (prefix plus 24 characters) yet cost a counter, not entropy.
  const instance = randomBytes(6).toString("hex");
  let counter = 0;
  const nextId = (prefix: string) => {
    counter += 1;
    return `${prefix}01${instance}${counter.toString(36).padStart(10, "0")}`;
  };

  const sendError = (
    res: ServerResponse,
    status: number,
    type: string,
    message: string,
    headers: Record<string, string> = {},
  ) => {
    const requestId = nextId("req_");
    const body = JSON.stringify({ type: "error", error: { type, message }, request_id: requestId });
    res.writeHead(status, {
      ...headers,
      "content-type": "application/json",
      "request-id": requestId,
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  };

  const sendJson = (res: ServerResponse, value: unknown) => {
    const body = JSON.stringify(value);
    res.writeHead(200, {
      "content-type": "application/json",
      "request-id": nextId("req_"),
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  };

  const record = (request: ReceivedRequest) => {
    if (recordRequests) requests.push(request);
    for (const waiter of waiters.splice(0)) waiter.resolve(request);
  };

  const buildMessage = (reply: FakeMessageReply, body: Record<string, unknown>, raw: Buffer) => {
    const scripted = reply.content ?? [{ type: "text", text: `echo: ${lastUserText(body)}` }];
    const content = scripted.map(
      (block): WireBlock =>
        block.type === "tool_use"
          ? { type: "tool_use", id: block.id ?? nextId("toolu_"), name: block.name, input: block.input }
          : { ...block },
    );
    let outputChars = 0;
    for (const block of content) {
      if (block.type === "text") outputChars += block.text.length;
      else if (block.type === "thinking") outputChars += block.thinking.length;
      else if (block.type === "tool_use") outputChars += JSON.stringify(block.input).length;
    }
    const usage: FakeUsage = {
      input_tokens: estimateTokens(raw.length),
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
      output_tokens: estimateTokens(outputChars),
      ...reply.usage,
    };
    return {
      id: reply.id ?? nextId("msg_"),
      type: "message" as const,
      role: "assistant" as const,
      model: reply.model ?? (typeof body.model === "string" ? body.model : "claude-sonnet-4-6"),
      content,
      stop_reason: reply.stopReason ?? (content.some((b) => b.type === "tool_use") ? "tool_use" : "end_turn"),
      stop_sequence: reply.stopSequence ?? null,
      stop_details: null,
      usage,
    };
  };

  /** The documented event flow for one Message, each event already framed. */
  const streamEvents = (message: ReturnType<typeof buildMessage>, pieces: number): string[] => {
    const { content, usage } = message;
    const events = [
      sse("message_start", {
        type: "message_start",
        message: {
          ...message,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { ...usage, output_tokens: 1 },
        },
      }),
    ];
    content.forEach((block, index) => {
      const delta = (d: Record<string, unknown>) =>
        sse("content_block_delta", { type: "content_block_delta", index, delta: d });
      let start: Record<string, unknown>;
      const deltas: string[] = [];
      if (block.type === "text") {
        start = { type: "text", text: "" };
        for (const text of split(block.text, pieces)) deltas.push(delta({ type: "text_delta", text }));
      } else if (block.type === "thinking") {
        start = { type: "thinking", thinking: "", signature: "" };
        for (const thinking of split(block.thinking, pieces))
          deltas.push(delta({ type: "thinking_delta", thinking }));
        deltas.push(delta({ type: "signature_delta", signature: block.signature }));
      } else if (block.type === "tool_use") {
        start = { type: "tool_use", id: block.id, name: block.name, input: {} };
        for (const partial_json of split(JSON.stringify(block.input), pieces)) {
          deltas.push(delta({ type: "input_json_delta", partial_json }));
        }
      } else {
        // Redacted thinking has nothing to stream: the whole block comes with its start.
        start = block;
      }
      events.push(sse("content_block_start", { type: "content_block_start", index, content_block: start }));
      if (index === 0) events.push(sse("ping", { type: "ping" }));
      events.push(...deltas, sse("content_block_stop", { type: "content_block_stop", index }));
    });
    events.push(
      sse("message_delta", {
        type: "message_delta",
        delta: { stop_reason: message.stop_reason, stop_sequence: message.stop_sequence, stop_details: null },
        usage,
      }),
      sse("message_stop", { type: "message_stop" }),
    );
    return events;
  };

  const writeStream = async (
    res: ServerResponse,
    events: string[],
    streaming: FakeStreaming,
    request: MutableRequest,
  ) => {
    let written = 0;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      "request-id": nextId("req_"),
    });
    const delay = streaming.eventDelayMs ?? 0;
    let closed: Promise<void> | undefined;
    const whenClosed = () => {
      closed ??= closedPromise(res);
      return closed;
    };
    for (let i = 0; i <= events.length; i += 1) {
      if (res.destroyed) return;
      if (streaming.errorAfterEvents === i) {
        res.end(sse("error", { type: "error", error: { type: "overloaded_error", message: "Overloaded" } }));
        return;
      }
      if (streaming.hold?.afterEvents === i) {
        const until = streaming.hold.until;
        if (until === undefined) {
          await whenClosed();
          return;
        }
        const resumed = await Promise.race([
          until.then(
            () => true,
            () => false,
          ),
          whenClosed().then(() => true),
        ]);
        if (!resumed) {
          res.destroy();
          return;
        }
        if (res.destroyed) return;
      }
      const event = events[i];
      if (event === undefined) break;
      if (delay > 0) {
        await Promise.race([new Promise((resolve) => setTimeout(resolve, delay)), whenClosed()]);
        if (res.destroyed) return;
      }
      written += Buffer.byteLength(event);
      if (!res.write(event)) {
        request.markStalled(written);
        await drained(res);
      }
    }
    res.end();
  };

  const handleMessages = async (res: ServerResponse, request: MutableRequest) => {
    const body = request.json;
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      sendError(res, 400, "invalid_request_error", "The request body is not valid JSON; send a JSON object.");
      return;
    }
    const params = body as Record<string, unknown>;
    let reply: FakeReply;
    try {
      reply = typeof script === "function" ? await script(params, request) : (script ?? {});
    } catch (cause) {
      // A throwing script is a bug in the test; say so in the reply the client shows.
      sendError(res, 500, "api_error", `fake-anthropic reply script threw: ${String(cause)}`);
      return;
    }
    // The client may have gone away while an async script decided.
    if (res.destroyed) return;
    if ("status" in reply) {
      sendError(res, reply.status, reply.error.type, reply.error.message, reply.headers);
      return;
    }
    const message = buildMessage(reply, params, request.body);
    if (params.stream !== true) {
      sendJson(res, message);
      return;
    }
    const streaming = reply.streaming ?? {};
    await writeStream(res, streamEvents(message, streaming.pieces ?? DEFAULT_PIECES), streaming, request);
  };

  const handleModels = (res: ServerResponse, url: URL) => {
    const id = url.pathname.slice("/v1/models/".length);
    if (url.pathname.startsWith("/v1/models/")) {
      const model = MODELS.find((m) => m.id === id);
      if (model) sendJson(res, model);
      else sendError(res, 404, "not_found_error", `model: ${id}`);
      return;
    }
    const limit = Math.min(1000, Math.max(1, Number(url.searchParams.get("limit") ?? 20) || 20));
    const afterId = url.searchParams.get("after_id");
    const beforeId = url.searchParams.get("before_id");
    let from = 0;
    let to = MODELS.length;
    if (afterId !== null) from = MODELS.findIndex((m) => m.id === afterId) + 1;
    if (beforeId !== null)
      to = Math.max(
        0,
        MODELS.findIndex((m) => m.id === beforeId),
      );
    const page =
      beforeId !== null ? MODELS.slice(Math.max(from, to - limit), to) : MODELS.slice(from, from + limit);
    const first = page[0];
    const last = page.at(-1);
    sendJson(res, {
      data: page,
      has_more: beforeId !== null ? to - limit > from : from + limit < to,
      first_id: first?.id ?? null,
      last_id: last?.id ?? null,
    });
  };

  const route = async (res: ServerResponse, request: MutableRequest) => {
    if (!authenticated(request.headers, apiKey)) {
      sendError(res, 401, "authentication_error", "invalid x-api-key");
      return;
    }
    const url = new URL(request.path, "http://fake.invalid");
    const { pathname } = url;
    if (request.method === "POST" && pathname === "/v1/messages") {
      await handleMessages(res, request);
    } else if (request.method === "POST" && pathname === "/v1/messages/count_tokens") {
      if (typeof request.json !== "object" || request.json === null || Array.isArray(request.json)) {
        sendError(
          res,
          400,
          "invalid_request_error",
          "The request body is not valid JSON; send a JSON object.",
        );
      } else {
        sendJson(res, { input_tokens: estimateTokens(request.body.length) });
      }
    } else if (
      request.method === "GET" &&
      (pathname === "/v1/models" || pathname.startsWith("/v1/models/"))
    ) {
      handleModels(res, url);
    } else {
      sendError(res, 404, "not_found_error", "Not found");
    }
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let received = false;
    // Writes racing a client that went away must not crash the test process.
    res.on("error", () => {});
    const receive = (uploaded: boolean) => {
      if (received) return;
      received = true;
      const raw = chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks);
      let json: unknown;
      if (uploaded && raw.length > 0) {
        try {
          json = JSON.parse(raw.toString("utf8"));
        } catch {
          json = undefined;
        }
      }
      let markStalled: (bytes: number) => void = () => {};
      const request: MutableRequest = {
        method: req.method ?? "GET",
        path: req.url ?? "/",
        headers: flatHeaders(req),
        body: raw,
        json,
        closedEarly: !uploaded,
        ended: closedPromise(res),
        stalled: new Promise((resolve) => {
          markStalled = resolve;
        }),
        markStalled: (bytes) => markStalled(bytes),
      };
      res.once("close", () => {
        if (!res.writableFinished) request.closedEarly = true;
      });
      record(request);
      // A client that aborted its upload gets no answer; the record says what arrived.
      if (!uploaded) return;
      route(res, request).catch((cause: unknown) => {
        if (!res.headersSent) sendError(res, 500, "api_error", `fake-anthropic failed: ${String(cause)}`);
        else res.destroy();
      });
    };
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => receive(true));
    req.on("error", () => receive(false));
    req.on("close", () => {
      if (!req.complete) receive(false);
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    apiKey,
    requests,
    reply(next) {
      script = next;
    },
    nextRequest() {
      if (closing) return Promise.reject(new Error("fake-anthropic is closed; no request will arrive"));
      return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
    },
    async close() {
      if (closing) return;
      closing = true;
      for (const waiter of waiters.splice(0))
        waiter.reject(new Error("fake-anthropic closed before a request arrived"));
      const stopped = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      await stopped;
    },
  };
}
