/**
 * The Anthropic API behind a connection of type `anthropic`. Clients (the
 * Anthropic SDKs, Claude Code) use `<proxyUrl>` as their base URL and the
 * session token as their API key or auth token; the agent swaps the token for
 * the real credential. Everything else (every `anthropic-*` header, every body
 * field) passes through unchanged, except that secrets in the response are
 * masked (see `masking.ts`).
 *
 * @see https://docs.anthropic.com/en/api/messages
 * @see https://docs.anthropic.com/en/api/errors
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Connection__Output } from "@gatehouse/proto";
import { bearerToken } from "@gatehouse/proto/bearer";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import { clientGone, readBody } from "../body.js";
import { type ErrorPresenter, forward, halt, type ResponseRewriter, refuse } from "../forward.js";
import { endToEnd, recordable, upstreamRequestHeaders } from "../headers.js";
import { ExchangeRecorder } from "../recorder.js";
import type { ProxyContext } from "../server.js";
import { type UpstreamTarget, upstreamTarget } from "../target.js";
import { type Guard, judgeRequest, ToolCallGate } from "./guard.js";
import { ResponseMasking } from "./masking.js";

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

/**
 * Refusals a retry cannot turn around (a policy, an approver, an approval that could not be
 * asked): the SDKs are told not to retry them, which would only ask again.
 */
const NOT_RETRIED = new Set([
  "GATE_POLICY_DENIED",
  "GATE_APPROVAL_DENIED",
  "GATE_APPROVAL_EXPIRED",
  "GATE_APPROVAL_UNAVAILABLE",
  "GATE_CONFIG_INVALID",
]);

/**
 * Gatehouse's own errors in Anthropic's error shape, so SDKs and Claude Code show the reason.
 *
 * @see https://github.com/anthropics/anthropic-sdk-typescript#retries (`x-should-retry`)
 */
export const anthropicErrors: ErrorPresenter = {
  response: (error) => ({
    status: error.status,
    headers: {
      "content-type": "application/json",
      ...(NOT_RETRIED.has(error.code) ? { "x-should-retry": "false" } : {}),
    },
    body: Buffer.from(errorJson(error)),
  }),
  sseEvent: (error) => Buffer.from(`event: error\ndata: ${errorJson(error)}\n\n`),
};

/** The exchanges whose bodies policies judge. */
const JUDGED_KINDS = new Set(["anthropic.messages", "anthropic.count_tokens"]);

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
  const bearer = bearerToken(req.headers.authorization);
  if (bearer) return bearer;
  const key = req.headers["x-api-key"];
  return typeof key === "string" && key.length > 0 ? key : null;
}

/**
 * Serves one request on an `anthropic` connection. Never rejects once the
 * exchange is being recorded: every way it can end is recorded as its end.
 */
export async function handleAnthropic(
  ctx: ProxyContext,
  connection: Connection__Output,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
): Promise<void> {
  // Attached before anything is awaited, so a client that leaves at any point (during
  // authentication, mid-upload, while a credential is fetched) stops the exchange.
  const stop = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) stop.abort(clientGone("before the response was complete"));
  };
  res.on("close", onClose);
  try {
    await authenticated(ctx, connection, req, res, path, stop);
  } finally {
    res.off("close", onClose);
  }
}

async function authenticated(
  ctx: ProxyContext,
  connection: Connection__Output,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  stop: AbortController,
): Promise<void> {
  const method = req.method ?? "GET";
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
  // Registered in the same turn as the token check, so no revocation can fall between them.
  const unwatch = ctx.verifier.watch(sessionId, (error) => stop.abort(error));
  try {
    await exchange(ctx, connection, req, res, path, method, recorder, stop.signal);
  } catch (error) {
    // A failed spool, or a bug: the client is told and the exchange still ends.
    const err = asGatehouseError(error);
    ctx.logger.error(
      { err: error, connection: connection.name, exchange: recorder.exchangeId, code: err.code },
      "exchange failed",
    );
    refuse(res, recorder, anthropicErrors, err, "OUTCOME_FAILED");
  } finally {
    unwatch();
  }
}

async function exchange(
  ctx: ProxyContext,
  connection: Connection__Output,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  method: string,
  recorder: ExchangeRecorder,
  stopped: AbortSignal,
): Promise<void> {
  // The path is checked before it is recorded, so that an accepted exchange records
  // exactly what was requested upstream, and a refused one what the client sent.
  let target: UpstreamTarget | GatehouseError;
  try {
    target = upstreamTarget(new URL(connection.upstream), path);
  } catch (error) {
    target = asGatehouseError(error);
  }
  const recordedPath = target instanceof GatehouseError ? path : target.path;
  const kind = exchangeKind(method, recordedPath);
  const clientHeaders = endToEnd(req.headers);
  recorder.requestHead({
    connection: connection.name,
    kind,
    method,
    path: recordedPath,
    headers: recordable(clientHeaders),
  });

  let body: Buffer;
  try {
    body = await readBody(req, ctx.limits.maxRequestBytes, stopped);
  } catch (error) {
    const err = asGatehouseError(error);
    if (stopped.aborted || err.code === "GATE_CLIENT_GONE") {
      return halt(res, recorder, anthropicErrors, stopped.aborted ? stopped.reason : err, "OUTCOME_REFUSED");
    }
    // The rest of the body is unread, so this connection cannot carry another request.
    res.shouldKeepAlive = false;
    return refuse(res, recorder, anthropicErrors, err, "OUTCOME_REFUSED");
  }
  recorder.requestBody(body);
  if (stopped.aborted) return halt(res, recorder, anthropicErrors, stopped.reason, "OUTCOME_REFUSED");
  if (target instanceof GatehouseError) {
    return refuse(res, recorder, anthropicErrors, target, "OUTCOME_REFUSED");
  }

  const policies = ctx.policies();
  if (policies instanceof GatehouseError) {
    return refuse(res, recorder, anthropicErrors, policies, "OUTCOME_REFUSED");
  }
  const policy = policies.forConnection(connection.name);
  if (
    (policy.hasRequestRules || policy.hasResponseRules) &&
    !JUDGED_KINDS.has(kind) &&
    method !== "GET" &&
    method !== "HEAD"
  ) {
    // Fail closed: a body no rule was judged on (a batch, a path spelled another way) must not
    // take the connection's credential upstream.
    const err = new GatehouseError(
      "GATE_POLICY_DENIED",
      `policies apply to connection '${connection.name}', and Gatehouse judges only POST /v1/messages and /v1/messages/count_tokens; ${method} ${recordedPath.split("?", 1)[0]} is refused`,
    );
    return refuse(res, recorder, anthropicErrors, err, "OUTCOME_REFUSED");
  }
  const masker = ctx.masker();
  const guard: Guard = {
    policy,
    desk: ctx.approvals,
    recorder,
    connection: connection.name,
    masker,
    stopped,
  };
  let model = "";
  if (JUDGED_KINDS.has(kind)) {
    let request: unknown;
    try {
      request = JSON.parse(body.toString("utf8"));
    } catch (error) {
      // The parser's own message quotes the body, which may hold a secret: give the position only.
      const at = /position (\d+)/.exec((error as Error).message)?.[1];
      const err = new GatehouseError(
        "GATE_INVALID_JSON",
        `request body is not valid JSON${at === undefined ? "" : ` (at position ${at})`}; send the Messages API request as JSON`,
      );
      return refuse(res, recorder, anthropicErrors, err, "OUTCOME_REFUSED");
    }
    try {
      // Before the credential is fetched: a refused request costs the upstream nothing.
      await judgeRequest(guard, request);
    } catch (error) {
      const err = asGatehouseError(error);
      if (err.code === "GATE_CLIENT_GONE" || stopped.aborted) {
        return halt(
          res,
          recorder,
          anthropicErrors,
          stopped.aborted ? stopped.reason : err,
          "OUTCOME_REFUSED",
        );
      }
      ctx.logger.info(
        { connection: connection.name, exchange: recorder.exchangeId, code: err.code },
        "request refused by policy",
      );
      return refuse(res, recorder, anthropicErrors, err, "OUTCOME_REFUSED");
    }
    const asked = (request as { model?: unknown } | null)?.model;
    model = typeof asked === "string" ? asked : "";
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

  // forward() sends nothing upstream if the exchange was stopped while the credential was fetched.
  await forward(
    {
      pool: ctx.upstreams,
      target: target.url,
      method,
      // Identity encoding, so the recorded response is readable and its events can be parsed.
      headers: {
        ...upstreamRequestHeaders(clientHeaders),
        "accept-encoding": "identity",
        ...credentialHeaders,
      },
      body,
      idleTimeoutMs: ctx.limits.upstreamIdleTimeoutSeconds * 1000,
      maxSseEventBytes: ctx.limits.maxSseEventBytes,
      stopped,
      logger: ctx.logger,
      // Secrets in the reply are masked before the client or the record sees them; tool calls
      // a response rule could apply to are then held until judged.
      rewrite: responseRewriter(guard, kind, model),
    },
    res,
    recorder,
    anthropicErrors,
  );
}

function responseRewriter(guard: Guard, kind: string, model: string): ResponseRewriter {
  const masking = new ResponseMasking(guard.recorder, guard.masker);
  return kind === "anthropic.messages" && guard.policy.hasResponseRules
    ? new ToolCallGate(masking, guard, model)
    : masking;
}
