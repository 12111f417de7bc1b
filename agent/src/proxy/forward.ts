/**
 * Sends a client's request upstream and relays the response back, recording
 * both. Backpressure runs both ways: upstream is read only as fast as the
 * client takes the response, and a client that goes away aborts the upstream
 * request. Server-sent event streams are relayed event by event as they
 * arrive, byte for byte, and each event is recorded with its arrival time.
 */
import { once } from "node:events";
import type { ServerResponse } from "node:http";
import { GatehouseError } from "@gatehouse/proto/errors";
import { endToEnd, recordable } from "./headers.js";
import type { ExchangeRecorder } from "./recorder.js";
import { SseParser } from "./sse.js";
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
  /** Connection's upstream base URL. */
  upstream: URL;
  /** Path below the connection prefix, with query. */
  path: string;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  idleTimeoutMs: number;
  maxSseEventBytes: number;
}

/** Sends a Gatehouse error to the client and records it as the end of the exchange. */
export function refuse(
  res: ServerResponse,
  recorder: ExchangeRecorder | null,
  presenter: ErrorPresenter,
  error: GatehouseError,
  outcome: "OUTCOME_REFUSED" | "OUTCOME_FAILED",
): void {
  const { status, headers, body } = presenter.response(error);
  if (!res.headersSent) {
    res.writeHead(status, { ...headers, "content-length": body.length, "x-gatehouse-error": error.code });
    res.end(body);
  } else {
    res.destroy();
  }
  recorder?.end({ outcome, status, errorCode: error.code, errorMessage: error.message });
}

function upstreamError(error: unknown, up: ForwardRequest): GatehouseError {
  if (error instanceof GatehouseError) return error;
  const timeout = timeoutError(error, { url: up.upstream, idleTimeoutMs: up.idleTimeoutMs });
  if (timeout) return timeout;
  const upstream = up.upstream;
  const code = (error as { code?: string }).code ?? (error as { cause?: { code?: string } }).cause?.code;
  return new GatehouseError(
    "GATE_UPSTREAM_UNREACHABLE",
    `upstream ${upstream.origin} unreachable${code ? ` (${code})` : ""}; check the connection's upstream URL and the agent's network`,
    { cause: error },
  );
}

/**
 * Forwards one request and relays its response. Resolves when the exchange is
 * over, however it ended; the recorder has the outcome.
 */
export async function forward(
  up: ForwardRequest,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  presenter: ErrorPresenter,
): Promise<void> {
  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort();
  };
  res.on("close", onClose);
  const basePath = up.upstream.pathname.replace(/\/+$/, "");
  let status = 0;
  try {
    let response: UpstreamResponse;
    try {
      response = await up.pool.request({
        url: new URL(basePath + up.path, up.upstream.origin),
        method: up.method,
        headers: up.headers,
        body: up.body,
        signal: abort.signal,
        idleTimeoutMs: up.idleTimeoutMs,
      });
    } catch (error) {
      if (abort.signal.aborted) return cancelled(recorder, 0);
      return refuse(res, recorder, presenter, upstreamError(error, up), "OUTCOME_FAILED");
    }
    status = response.statusCode;
    const headers = endToEnd(response.headers);
    recorder.responseHead(status, recordable(headers));
    res.writeHead(status, headers);
    const streamed = String(headers["content-type"] ?? "").startsWith("text/event-stream");
    try {
      if (streamed) await relayEvents(response.body, res, recorder, up.maxSseEventBytes, abort.signal);
      else await relayBody(response.body, res, recorder, abort.signal);
    } catch (error) {
      if (abort.signal.aborted) return cancelled(recorder, status);
      response.body.destroy();
      const err = upstreamError(error, up);
      if (streamed && !res.destroyed) res.end(presenter.sseEvent(err));
      else res.destroy();
      recorder.end({ outcome: "OUTCOME_FAILED", status, errorCode: err.code, errorMessage: err.message });
      return;
    }
    res.end();
    recorder.end({ outcome: "OUTCOME_COMPLETED", status });
  } finally {
    res.off("close", onClose);
  }
}

function cancelled(recorder: ExchangeRecorder, status: number): void {
  recorder.end({
    outcome: "OUTCOME_CANCELLED",
    status,
    errorCode: "GATE_CLIENT_GONE",
    errorMessage: "the client closed the connection before the response was complete; upstream was aborted",
  });
}

/** Waits until the client can take more, or throws when it has gone. */
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

async function relayEvents(
  body: AsyncIterable<Buffer>,
  res: ServerResponse,
  recorder: ExchangeRecorder,
  maxEventBytes: number,
  signal: AbortSignal,
): Promise<void> {
  const parser = new SseParser({ maxBlockBytes: maxEventBytes });
  for await (const chunk of body) {
    const blocks = parser.push(chunk);
    if (blocks.length === 0) continue;
    // Several events in one chunk leave in one write.
    res.cork();
    for (const block of blocks) {
      res.write(block.raw);
      if (block.hasData) recorder.sse(block.event, block.data, block.raw.length);
    }
    res.uncork();
    if (res.writableNeedDrain) await drained(res, signal);
  }
  const rest = parser.end();
  if (rest.length > 0) {
    recorder.responseBody(rest);
    res.write(rest);
  }
}
