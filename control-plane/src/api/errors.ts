/** Maps every error to the REST error body, once, at the edge. */
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import type { Context, Next } from "koa";
import type { Logger } from "pino";

/** Errors thrown by koa middleware (http-errors) carry a status. */
function fromHttpError(error: unknown): GatehouseError | null {
  if (!(error instanceof Error) || !("status" in error) || typeof error.status !== "number") return null;
  const status = error.status;
  const type = "type" in error ? String(error.type) : "";
  if (status === 413) {
    return new GatehouseError("GATE_BODY_TOO_LARGE", "request body too large for the REST API (limit 1 MiB)");
  }
  if (status === 400 && type === "entity.parse.failed") {
    return new GatehouseError("GATE_INVALID_JSON", `request body is not valid JSON: ${error.message}`);
  }
  if (status === 415) {
    return new GatehouseError("GATE_INVALID_REQUEST", "send the request body as application/json");
  }
  if (status >= 400 && status < 500) return new GatehouseError("GATE_INVALID_REQUEST", error.message);
  return null;
}

export function errorMiddleware(logger: Logger) {
  return async (ctx: Context, next: Next) => {
    try {
      await next();
      if (ctx.status === 404 && ctx.body === undefined) {
        throw new GatehouseError(
          "GATE_NOT_FOUND",
          `no route for ${ctx.method} ${ctx.path}; see /v1/openapi.json`,
        );
      }
    } catch (error) {
      const err = fromHttpError(error) ?? asGatehouseError(error);
      if (!err.expose) logger.error({ err: error, method: ctx.method, path: ctx.path }, "request failed");
      ctx.status = err.status;
      ctx.set("cache-control", "no-store");
      ctx.body = err.toBody();
    }
  };
}
