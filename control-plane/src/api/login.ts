/**
 * The sign-in routes: a person's browser starts at `/v1/auth/login`, signs in at
 * the OIDC issuer and comes back to `/v1/auth/callback`, which answers with an
 * API key for the REST API carrying the role the person's groups grant.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import type Router from "@koa/router";
import type { AdminIdentity, AdminSignIn } from "../identity/admin-login.js";
import { LOGIN_COOKIE } from "../identity/admin-login.js";
import { iso } from "../time.js";

/** An API key made for a signed-in person; stored hashed and audited by whoever issues it. */
export interface LoginKey {
  id: string;
  key: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

export interface SignInRouteDeps {
  signIn: AdminSignIn;
  issueLoginKey: (identity: AdminIdentity) => Promise<LoginKey>;
}

/** Where sign-in is not configured, the routes still exist (and are documented) and say so. */
function configured(deps: SignInRouteDeps | undefined): SignInRouteDeps {
  if (deps !== undefined) return deps;
  throw new GatehouseError(
    "GATE_NOT_FOUND",
    "sign-in through OIDC is not configured on this control plane (identity.admin); use an API key",
  );
}

/**
 * Adds `GET /v1/auth/login` (302 to the issuer, setting the pending-sign-in
 * cookie) and `GET /v1/auth/callback` (200 `{key, id, role, name, expiresAt}`)
 * to `router`. Refusals are thrown as GatehouseError for the error middleware.
 * Without `deps` (no `identity.admin`), both answer 404 saying sign-in is not configured.
 *
 * @see https://openid.net/specs/openid-connect-core-1_0.html#CodeFlowAuth
 */
export function addSignInRoutes(router: Router, deps: SignInRouteDeps | undefined): void {
  router.get("/v1/auth/login", async (ctx) => {
    const { authorizationUrl, cookie } = await configured(deps).signIn.begin();
    ctx.append("set-cookie", cookie);
    // Each visit must start a sign-in of its own: a cached redirect would reuse a state.
    ctx.set("cache-control", "no-store");
    ctx.redirect(authorizationUrl.href);
  });

  router.get("/v1/auth/callback", async (ctx) => {
    const { signIn, issueLoginKey } = configured(deps);
    // Resolved against the configured callback rather than the Host header, which a proxy may change.
    const callbackUrl = new URL(ctx.originalUrl, signIn.redirectUrl);
    const identity = await signIn.complete(callbackUrl, ctx.cookies.get(LOGIN_COOKIE));
    const issued = await issueLoginKey(identity);
    ctx.append("set-cookie", signIn.clearCookie);
    ctx.set("cache-control", "no-store");
    ctx.body = {
      key: issued.key,
      id: issued.id,
      role: identity.role,
      name: identity.name,
      expiresAt: iso(issued.expiresAt),
    };
  });
}
