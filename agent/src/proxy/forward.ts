/**
 * Sends a client's request upstream and relays the response back, recording
 * both. Backpressure runs both ways: upstream is read only as fast as the
 * client takes the response, and an exchange that is stopped (the client went
 * away, its session was closed) aborts the upstream request. Server-sent event
 * streams are relayed event by event as they arrive, byte for byte, and each
 * event is recorded with its arrival time. A `ResponseRewriter` (masking) may
 * replace events or a whole JSON body; the record holds what the client got.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import { endToEnd, recordable } from "./headers.js";
import type { ExchangeRecorder } from "./recorder.js";
import { type SseBlock, SseParser } from "./sse.js";
import { timeoutError, type UpstreamPool, type UpstreamResponse } from "./upstream.js";

/** How a protocol presents Gatehouse's own errors to its clients. */
export interface ErrorPresenter {
  /** A complete error response. */
  response(error: GatehouseError): { status: number; headers: Record<string, string>; body: Buffer };
  /** An error written into an event stream that has already begun. */
  sseEvent(error: GatehouseError): Buffer;
}

export interface ForwardRequest {
  pool: UpstreamPool;
  /** The URL to request, already checked to be inside the connection (see `target.ts`). */
  target: URL;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  idleTimeoutMs: number;
  maxSseEventBytes: number;
  /**
   * Aborted when the exchange must stop; its reason, a GatehouseError, says why:
   * GATE_CLIENT_GONE (recorded as cancelled) or anything else (told to the client).
   */
  stopped: AbortSignal;
  logger: Logger;
  rewrite?: ResponseRewriter;
}

/**
 * Rewrites a response before the client and the record see it (secret masking, tool calls held
 * for policy). One per exchange. A method may answer with a promise (a tool call waiting for an
 * approval): the relay then waits, reading no more from upstream, and a rejection with a
 * GatehouseError ends the exchange with that error.
 */
export interface ResponseRewriter {
  /** The blocks to relay in place of one upstream event-stream block, in order. */
  event(block: SseBlock): SseBlock[] | Promise<SseBlock[]>;
  /** The blocks to relay once the upstream event stream has ended (what is still held back). */
  endOfEvents(): SseBlock[] | Promise<SseBlock[]>;
  /**
   * Whether a non-streamed body of this content type is rewritten whole; such a body is
   * buffered, up to `maxSseEventBytes`, and sent without its upstream `content-length`.
   */
  rewritesBody(contentType: string): boolean;
  body(body: Buffer): Buffer | Promise<Buffer>;
}

/** Gatehouse's own refusals (policy, approvals) made after the request went upstream. */
const REFUSALS = new Set([
  "GATE_POLICY_DENIED",
  "GATE_APPROVAL_DENIED",
  "GATE_APPROVAL_EXPIRED",
  "GATE_APPROVAL_UNAVAILABLE",
]);

type ErrorOutcome = "OUTCOME_REFUSED" | "OUTCOME_FAILED";

/**
 * Sends a Gatehouse error to the client and records it as the end of the exchange.
 * Before the response head: a complete error response. After it: the error as an
 * event when the response is an event stream (`streamed`), else the connection is
 * cut, since a body cannot say it failed. The status recorded is the one the client got.
 */
export function refuse(
  res: ServerResponse,
  recorder: ExchangeRecorder | null,
  presenter: ErrorPresenter,
  error: GatehouseError,
  outcome: ErrorOutcome,
  streamed = false,
): void {
  let status: number;
  if (!res.headersSent) {
    const response = presenter.response(error);
    status = response.status;
    res.writeHead(status, {
      ...response.headers,
      "content-length": response.body.length,
      "x-gatehouse-error": error.code,
    });
    res.end(response.body);
    recorder?.sentBytes(response.body.length);
  } else {
    status = res.statusCode;
    if (!res.writableEnded && !res.destroyed) {
      if (streamed) {
        const event = presenter.sseEvent(error);
        res.end(event);
        recorder?.sentBytes(event.length);
      } else {
        res.destroy();
      }
    }
  }
  recorder?.end({ outcome, status, errorCode: error.code, errorMessage: error.message });
}

/**
 * Ends an exchange that was stopped (`reason` is the stop signal's reason): a client
 * that left is recorded as cancelled; any other reason is told to the client.
 */
export function halt(
  res: ServerResponse,
  recorder: ExchangeRecorder,
  presenter: ErrorPresenter,
  reason: unknown,
  outcome: ErrorOutcome,
  streamed = false,
): void {
  const error =
    reason instanceof GatehouseError
      ? reason
      : new GatehouseError("GATE_INTERNAL", `exchange stopped: ${String(reason)}`);
  if (error.code !== "GATE_CLIENT_GONE") {
    refuse(res, recorder, presenter, error, outcome, streamed);
    return;
  }
  recorder.end({
    outcome: "OUTCOME_CANCELLED",
    status: res.headersSent ? res.statusCode : 0,
    errorCode: error.code,
    errorMessage: error.message,
  });
}

function upstreamError(error: unknown, up: ForwardRequest): GatehouseError {
  if (error instanceof GatehouseError) return error;
  const timeout = timeoutError(error, { url: up.target, idleTimeoutMs: up.idleTimeoutMs });
  if (timeout) return timeout;
  const code = systemCode(error);
  return new GatehouseError(
    "GATE_UPSTREAM_UNREACHABLE",
    `upstream ${up.target.origin} unreachable${code ? ` (${code})` : ""}; check the connection's upstream URL and the agent's network`,
    { cause: error },
  );
}

/**
 * The first `code` (ECONNREFUSED, UND_ERR_SOCKET…) on an error, its causes, or
 * the attempts of an AggregateError (a connect that tried several addresses).
 */
function systemCode(error: unknown, depth = 0): string | undefined {
  if (typeof error !== "object" || error === null || depth > 4) return undefined;
  const { code, cause, errors } = error as { code?: unknown; cause?: unknown; errors?: unknown };
  if (typeof code === "string") return code;
  return (
    systemCode(cause, depth + 1) ?? (Array.isArray(errors) ? systemCode(errors[0], depth + 1) : undefined)
  );
}

/**
 * The upstream body's chunks, with read failures turned into Gatehouse's upstream
 * errors, so that whatever else fails while relaying is known to be Gatehouse's own.
 */
async function* upstreamChunks(body: AsyncIterable<Buffer>, up: ForwardRequest): AsyncGenerator<Buffer> {
  const chunks = body[Symbol.asyncIterator]();
  for (;;) {
    let next: IteratorResult<Buffer>;
    try {
      next = await chunks.next();
    } catch (error) {
      throw upstreamError(error, up);
    }
    if (next.done) return;
    yield next.value;
  }
}

/**
 * Forwards one request and relays its response. Resolves when the exchange is
 * over, however it ended, and never rejects: the recorder has the outcome, and
 * the upstream response is released whatever happened.
 */
export async function forward(
  up: ForwardRequest,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  presenter: ErrorPresenter,
): Promise<void> {
  const { stopped } = up;
  // Stopped before anything went upstream: nothing must.
  if (stopped.aborted) return halt(res, recorder, presenter, stopped.reason, "OUTCOME_REFUSED");
  let response: UpstreamResponse | undefined;
  let streamed = false;
  try {
    try {
      response = await up.pool.request({
        url: up.target,
        method: up.method,
        headers: up.headers,
        body: up.body,
        signal: stopped,
        idleTimeoutMs: up.idleTimeoutMs,
      });
    } catch (error) {
      if (stopped.aborted) return halt(res, recorder, presenter, stopped.reason, "OUTCOME_FAILED");
      return refuse(res, recorder, presenter, upstreamError(error, up), "OUTCOME_FAILED");
    }
    const status = response.statusCode;
    const headers = endToEnd(response.headers);
    const contentType = String(headers["content-type"] ?? "");
    streamed = contentType.startsWith("text/event-stream");
    const rewrite = up.rewrite;
    const wholeBody = !streamed && rewrite?.rewritesBody(contentType) === true;
    // A rewritten body has a length of its own; without the header the response is chunked.
    if (wholeBody) delete headers["content-length"];
    recorder.responseHead(status, recordable(headers));
    const chunks = upstreamChunks(response.body, up);
    // A body rewritten whole is sent only once it is rewritten: until then it may still be refused.
    if (wholeBody && rewrite) await relayRewrittenBody(chunks, res, recorder, up, rewrite, status, headers);
    else {
      res.writeHead(status, headers);
      if (streamed) await relayEvents(chunks, res, recorder, up.maxSseEventBytes, stopped, rewrite);
      else await relayBody(chunks, res, recorder, stopped);
    }
    res.end();
    recorder.end({ outcome: "OUTCOME_COMPLETED", status });
  } catch (error) {
    if (stopped.aborted) return halt(res, recorder, presenter, stopped.reason, "OUTCOME_FAILED", streamed);
    let err: GatehouseError;
    if (error instanceof GatehouseError) {
      err = error;
    } else {
      up.logger.error({ err: error, exchange: recorder.exchangeId }, "relaying an exchange failed");
      err = new GatehouseError("GATE_INTERNAL", `relaying the response failed: ${String(error)}`, {
        cause: error,
      });
    }
    refuse(
      res,
      recorder,
      presenter,
      err,
      REFUSALS.has(err.code) ? "OUTCOME_REFUSED" : "OUTCOME_FAILED",
      streamed,
    );
  } finally {
    // An upstream response not read to its end holds a pooled connection until it is destroyed.
    // undici then emits its RequestAbortedError, which is this very abort: nothing to report.
    if (response && !response.body.readableEnded) {
      response.body.on("error", () => {});
      response.body.destroy();
    }
    if (!recorder.isEnded) {
      recorder.end({
        outcome: "OUTCOME_FAILED",
        status: res.headersSent ? res.statusCode : 0,
        errorCode: "GATE_INTERNAL",
        errorMessage: "the exchange ended without an outcome; see the agent log",
      });
    }
  }
}

/** Waits until the client can take more, or throws when the exchange was stopped. */
async function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  await once(res, "drain", { signal });
}

async function relayBody(
  body: AsyncIterable<Buffer>,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  signal: AbortSignal,
): Promise<void> {
  for await (const chunk of body) {
    recorder.responseBody(chunk);
    if (!res.write(chunk)) await drained(res, signal);
  }
}

/** A body rewritten whole (a JSON reply being masked): buffered up to the event limit, then sent. */
async function relayRewrittenBody(
  body: AsyncIterable<Buffer>,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  up: ForwardRequest,
  rewrite: ResponseRewriter,
  status: number,
  headers: Record<string, string | string[]>,
): Promise<void> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > up.maxSseEventBytes) {
      throw new GatehouseError(
        "GATE_UPSTREAM_PROTOCOL",
        `upstream sent a JSON response larger than maxSseEventBytes (${up.maxSseEventBytes} bytes), ` +
          "which must be read whole to mask secrets in it; ask for a streamed response, or raise maxSseEventBytes",
      );
    }
    chunks.push(chunk);
  }
  const rewritten = await rewrite.body(Buffer.concat(chunks, size));
  if (up.stopped.aborted) throw up.stopped.reason;
  res.writeHead(status, headers);
  recorder.responseBody(rewritten);
  if (!res.write(rewritten)) await drained(res, up.stopped);
}

async function relayEvents(
  body: AsyncIterable<Buffer>,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  maxEventBytes: number,
  signal: AbortSignal,
  rewrite: ResponseRewriter | undefined,
): Promise<void> {
  const parser = new SseParser({ maxBlockBytes: maxEventBytes });
  const send = (blocks: readonly SseBlock[]) => {
    // Several events in one chunk leave in one write.
    res.cork();
    try {
      for (const block of blocks) {
        // Recorded before it is sent: when recording fails, the client never sees an event
        // the record lacks. Every block the client gets counts, events or not (comments, keep-alives).
        if (block.hasData) recorder.sse(block.event, block.data, block.raw.length);
        else recorder.sentBytes(block.raw.length);
        res.write(block.raw);
      }
    } finally {
      res.uncork();
    }
  };
  for await (const chunk of body) {
    const blocks = parser.push(chunk);
    if (blocks.length === 0) continue;
    if (!rewrite) send(blocks);
    else {
      let out: SseBlock[] = [];
      for (const block of blocks) {
        const result = block.hasData ? rewrite.event(block) : [block];
        if (Array.isArray(result)) {
          out.push(...result);
          continue;
        }
        // The rewriter waits (a held tool call): what came before goes out first, whatever follows.
        send(out);
        out = await result;
      }
      send(out);
    }
    if (res.writableNeedDrain) await drained(res, signal);
  }
  // A stream that ended without closing its blocks still gets what was held back, masked.
  if (rewrite) send(await rewrite.endOfEvents());
  const rest = parser.end();
  if (rest.length > 0) {
    recorder.responseBody(rest);
    res.write(rest);
  }
}
