/**
 * The Anthropic API behind a connection of type `anthropic`. Clients (the
 * Anthropic SDKs, Claude Code) use `<proxyUrl>` as their base URL and the
 * session token as their API key or auth token; the agent swaps the token for
 * the real credential. Everything else (every `anthropic-*` header, every body
 * field) passes through unchanged.
 *
 * @see https://docs.anthropic.com/en/api/messages
 * @see https://docs.anthropic.com/en/api/errors
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Connection__Output } from "@gatehouse/proto";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import { readBody } from "../body.js";
import { type ErrorPresenter, forward, refuse } from "../forward.js";
import { endToEnd, recordable } from "../headers.js";
import { ExchangeRecorder } from "../recorder.js";
import type { ProxyContext } from "../server.js";

const ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
};

function errorJson(error: GatehouseError): string {
  return JSON.stringify({
    type: "error",
    error: {
      type: ERROR_TYPES[error.status] ?? "api_error",
      message: `Gatehouse (${error.code}): ${error.toBody().error.message}`,
    },
  });
}

/** Gatehouse's own errors in Anthropic's error shape, so SDKs and Claude Code show the reason. */
export const anthropicErrors: ErrorPresenter = {
  response: (error) => ({
    status: error.status,
    headers: { "content-type": "application/json" },
    body: Buffer.from(errorJson(error)),
  }),
  sseEvent: (error) => Buffer.from(`event: error\ndata: ${errorJson(error)}\n\n`),
};

/** What an exchange is, from its path (without query). */
export function exchangeKind(method: string, path: string): string {
  const bare = path.split("?", 1)[0] ?? "";
  if (method === "POST" && bare === "/v1/messages") return "anthropic.messages";
  if (method === "POST" && bare === "/v1/messages/count_tokens") return "anthropic.count_tokens";
  if (bare === "/v1/models" || bare.startsWith("/v1/models/")) return "anthropic.models";
  return "anthropic.other";
}

/** The session token: `Authorization: Bearer` (ANTHROPIC_AUTH_TOKEN) or `x-api-key` (ANTHROPIC_API_KEY). */
function sessionToken(req: IncomingMessage): string | null {
  const bearer = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "")?.[1];
  if (bearer) return bearer;
  const key = req.headers["x-api-key"];
  return typeof key === "string" && key.length > 0 ? key : null;
}

export async function handleAnthropic(
  ctx: ProxyContext,
  connection: Connection__Output,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<void> {
  const method = req.method ?? "GET";
  const kind = exchangeKind(method, path);
  const token = sessionToken(req);
  if (!token) {
    const error = new GatehouseError(
      "GATE_UNAUTHENTICATED",
      "missing session token: send it as x-api-key or `Authorization: Bearer` (ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN)",
    );
    return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
  }
  let sessionId: string;
  try {
    ({ sessionId } = await ctx.verifier.verify(token, connection.name));
  } catch (error) {
    const err = asGatehouseError(error);
    ctx.logger.info({ connection: connection.name, code: err.code }, "session token refused");
    return refuse(res, null, anthropicErrors, err, "OUTCOME_REFUSED");
  }

  const recorder = new ExchangeRecorder(ctx.spool, sessionId, ctx.onExchangeFinished);
  const clientHeaders = endToEnd(req.headers);
  recorder.requestHead({
    connection: connection.name,
    kind,
    method,
    path,
    headers: recordable(clientHeaders),
  });

  let body: Buffer;
  try {
    body = await readBody(req, ctx.limits.maxRequestBytes);
  } catch (error) {
    // The rest of the body is unread, so this connection cannot carry another request.
    res.shouldKeepAlive = false;
    return refuse(res, recorder, anthropicErrors, asGatehouseError(error), "OUTCOME_REFUSED");
  }
  recorder.requestBody(body);

  if (kind === "anthropic.messages" || kind === "anthropic.count_tokens") {
    try {
      JSON.parse(body.toString("utf8"));
    } catch (error) {
      // The parser's own message quotes the body, which may hold a secret: give the position only.
      const at = /position (\d+)/.exec((error as Error).message)?.[1];
      const err = new GatehouseError(
        "GATE_INVALID_JSON",
        `request body is not valid JSON${at === undefined ? "" : ` (at position ${at})`}; send the Messages API request as JSON`,
      );
      return refuse(res, recorder, anthropicErrors, err, "OUTCOME_REFUSED");
    }
  }

  let credentialHeaders: Record<string, string>;
  try {
    credentialHeaders = await ctx.credentials.headersFor(connection);
  } catch (error) {
    const err = asGatehouseError(error);
    ctx.logger.error(
      { connection: connection.name, code: err.code, reason: err.message },
      "credential unavailable",
    );
    return refuse(res, recorder, anthropicErrors, err, "OUTCOME_FAILED");
  }

  const {
    authorization: _a,
    "x-api-key": _k,
    host: _h,
    "content-length": _l,
    expect: _e,
    ...passThrough
  } = clientHeaders;
  await forward(
    {
      pool: ctx.upstreams,
      upstream: new URL(connection.upstream),
      path,
      method,
      // Identity encoding, so the recorded response is readable and its events can be parsed.
      headers: { ...passThrough, "accept-encoding": "identity", ...credentialHeaders },
      body,
      idleTimeoutMs: ctx.limits.upstreamIdleTimeoutSeconds * 1000,
      maxSseEventBytes: ctx.limits.maxSseEventBytes,
    },
    res,
    recorder,
    anthropicErrors,
  );
}
