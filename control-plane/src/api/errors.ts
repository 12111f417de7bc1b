/** Maps every error to the REST error body, once, at the edge. */
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import type { Context, Next } from "koa";
import type { Logger } from "pino";

/**
 * Errors thrown by koa middleware (http-errors, co-body, raw-body) carry a status.
 * A GatehouseError has one too, but already says what it means.
 */
function fromHttpError(error: unknown): GatehouseError | null {
  if (error instanceof GatehouseError) return null;
  if (!(error instanceof Error) || !("status" in error) || typeof error.status !== "number") return null;
  const status = error.status;
  const type = "type" in error ? String(error.type) : "";
  if (status === 413) {
    return new GatehouseError("GATE_BODY_TOO_LARGE", "request body too large for the REST API (limit 1 MiB)");
  }
  if (status === 400 && (error instanceof SyntaxError || type === "entity.parse.failed")) {
    // The parser's own message quotes the input, which may hold a pasted key: name the position only.
    const at = /at position (\d+)/.exec(error.message)?.[1];
    return new GatehouseError(
      "GATE_INVALID_JSON",
      `request body is not valid JSON${at === undefined ? "" : ` (at position ${at})`}; send one JSON object with content-type application/json`,
    );
  }
  if (status === 415) {
    return new GatehouseError("GATE_INVALID_REQUEST", "send the request body as application/json");
  }
  if (status >= 400 && status < 500) return new GatehouseError("GATE_INVALID_REQUEST", error.message);
  return null;
}

/**
 * The `WWW-Authenticate` challenge a 401 carries; an `error` only when a
 * credential was sent and refused.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-3
 */
function challenge(error: GatehouseError): string {
  const realm = 'Bearer realm="gatehouse"';
  return error.code === "GATE_UNAUTHENTICATED" ? realm : `${realm}, error="invalid_token"`;
}

export function errorMiddleware(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    // Messages never repeat the request path: a token pasted into a URL would come back in them.
    try {
      await next();
      if (ctx.body === undefined || ctx.body === null) {
        if (ctx.status === 404) {
          throw new GatehouseError(
            "GATE_NOT_FOUND",
            `no route for ${ctx.method} at this path; the routes are listed in /v1/openapi.json`,
          );
        }
        // The router answers 405 (or 501 for a method it knows nothing of) with
        // an Allow header and no body; keep the status, add the usual body.
        if (ctx.status === 405 || ctx.status === 501) {
          const allowed = ctx.response.get("allow");
          const status = ctx.status;
          ctx.set("cache-control", "no-store");
          ctx.body = new GatehouseError(
            "GATE_INVALID_REQUEST",
            `${ctx.method} is not allowed on this route; allowed: ${allowed || "none"}`,
          ).toBody();
          ctx.status = status;
        }
      }
    } catch (error) {
      const err = fromHttpError(error) ?? asGatehouseError(error);
      if (!err.expose) logger.error({ err: error, method: ctx.method, path: ctx.path }, "request failed");
      ctx.status = err.status;
      ctx.set("cache-control", "no-store");
      if (err.status === 401) ctx.set("www-authenticate", challenge(err));
      ctx.body = err.toBody();
    }
  };
}
