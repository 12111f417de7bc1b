/** Bearer API-key authentication and role checks for REST routes. */
import { bearerToken } from "@gatehouse/proto/bearer";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Context, Next } from "koa";
import type { ApiKeyAuthenticator, Principal, Role } from "../identity/principals.js";

export interface AuthState {
  principal: Principal;
}

/** Requires a caller holding one of `roles`; puts it on `ctx.state.principal`. */
export function requireRole(auth: ApiKeyAuthenticator, ...roles: Role[]) {
  return async (ctx: Context, next: Next) => {
    const bearer = bearerToken(ctx.get("authorization"));
    if (!bearer) {
      throw new GatehouseError(
        "GATE_UNAUTHENTICATED",
        "missing API key: send `Authorization: Bearer <key>` (GATEHOUSE_ADMIN_TOKEN on the control plane bootstraps one)",
      );
    }
    const principal = auth.authenticate(bearer);
    if (!principal)
      throw new GatehouseError("GATE_TOKEN_INVALID", "API key not recognised, expired or revoked");
    if (!roles.includes(principal.role)) {
      throw new GatehouseError(
        "GATE_FORBIDDEN",
        `this action needs the role ${roles.join(" or ")}; you have ${principal.role}`,
      );
    }
    ctx.state.principal = principal;
    await next();
  };
}
