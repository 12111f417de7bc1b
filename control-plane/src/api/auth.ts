/**
 * Who is calling, for REST routes: an API key with a role (automation, or a
 * person's sign-in), a CI runner's OIDC token (to open a session), or a
 * session's own token (to close it).
 */
import { bearerToken } from "@gatehouse/proto/bearer";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Context, Next } from "koa";
import type { ApiKeys, Principal, Role } from "../identity/api-keys.js";

export interface AuthState {
  principal: Principal;
}

/** The bearer credential of a request; refuses a request without one. */
export function bearerOf(ctx: Context): string {
  const bearer = bearerToken(ctx.get("authorization"));
  if (!bearer) {
    throw new GatehouseError(
      "GATE_UNAUTHENTICATED",
      "missing credential: send `Authorization: Bearer <API key>` (GATEHOUSE_ADMIN_TOKEN on the control plane bootstraps one)",
    );
  }
  return bearer;
}

/** JWTs (runner OIDC tokens, session tokens) have three base64url parts; API keys have none. */
export function looksLikeJwt(bearer: string): boolean {
  return /^eyJ[\w-]*\.[\w-]+\.[\w-]*$/.test(bearer);
}

/** The principal of an API key, if it holds one of `roles`. */
export async function principalWithRole(
  keys: ApiKeys,
  bearer: string,
  roles: readonly Role[],
): Promise<Principal> {
  const principal = await keys.authenticate(bearer);
  if (!roles.includes(principal.role)) {
    throw new GatehouseError(
      "GATE_FORBIDDEN",
      `this action needs the role ${roles.join(" or ")}; your key '${principal.name}' has ${principal.role}`,
    );
  }
  return principal;
}

/** Requires an API key holding one of `roles`; puts its principal on `ctx.state.principal`. */
export function requireRole(keys: ApiKeys, ...roles: Role[]) {
  return async (ctx: Context, next: Next) => {
    ctx.state.principal = await principalWithRole(keys, bearerOf(ctx), roles);
    await next();
  };
}
