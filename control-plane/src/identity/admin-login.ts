/**
 * Sign-in of people (admins, approvers, auditors) to the REST API through their
 * organisation's OpenID Connect issuer: the authorization code flow with PKCE.
 * The role comes from the groups the issuer says the person is in.
 *
 * What a sign-in in progress needs to remember (state, nonce, PKCE verifier) is
 * kept in an HttpOnly cookie scoped to `/v1/auth`, not on the server, so any
 * replica can finish a sign-in another one started.
 *
 * @see https://openid.net/specs/openid-connect-core-1_0.html#CodeFlowAuth
 * @see https://www.rfc-editor.org/rfc/rfc7636 (PKCE)
 * @see https://www.rfc-editor.org/rfc/rfc9700#section-2.1 (state, nonce and PKCE together)
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import * as oidc from "openid-client";
import type { Logger } from "pino";
import type { AdminLoginConfig } from "../config.js";
import type { Role } from "../store/types.js";

/** Name of the cookie holding a sign-in in progress. */
export const LOGIN_COOKIE = "gatehouse_login";
/** The cookie goes only to the sign-in routes, never with other API calls. */
const LOGIN_COOKIE_PATH = "/v1/auth";
/** How long a person has at the issuer before the sign-in must start again. */
const PENDING_LOGIN_SECONDS = 600;
const FETCH_TIMEOUT_SECONDS = 10;
/** Most groups named in a refusal; people in hundreds of groups get a readable message. */
const GROUPS_SHOWN = 20;

/** Earlier roles win: a person in an admin group and an auditor group is an admin. */
const ROLES_BY_PRECEDENCE = ["admin", "approver", "auditor"] as const satisfies readonly Role[];

/** Who signed in, as the control plane records them. */
export interface AdminIdentity {
  /** `<issuer>#<sub>`: stable across renames, unique across issuers. */
  subject: string;
  /** For people reading records: the email, else the preferred username, else `sub`. */
  name: string;
  role: Role;
}

/** A sign-in started: send the browser to `authorizationUrl` with `cookie` set. */
export interface LoginStart {
  authorizationUrl: URL;
  state: string;
  /** A complete `Set-Cookie` header value. */
  cookie: string;
}

interface PendingLogin {
  state: string;
  nonce: string;
  verifier: string;
}

/** Values from the issuer or the callback, quoted as JSON text so they cannot pass for part of the message. */
function quoted(value: string, max = 200): string {
  return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value);
}

/** Each value is randomState/randomNonce/randomPKCECodeVerifier output: base64url, no dots. */
const PENDING_PART = /^[A-Za-z0-9_-]{16,128}$/;

function parsePending(cookieValue: string | undefined): PendingLogin | null {
  const parts = cookieValue?.split(".") ?? [];
  if (parts.length !== 3 || !parts.every((part) => PENDING_PART.test(part))) return null;
  const [state = "", nonce = "", verifier = ""] = parts;
  return { state, nonce, verifier };
}

const expired = () =>
  new GatehouseError(
    "GATE_UNAUTHENTICATED",
    "sign-in expired or was started elsewhere; start again at /v1/auth/login",
  );

/** The groups in the claim: an array of strings, or one string; null when the claim is absent. */
function groupsOf(value: unknown): string[] | null {
  if (value === undefined || value === null) return null;
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.filter((group): group is string => typeof group === "string");
  return [];
}

function stringClaim(value: unknown): string | undefined {
  return typeof value === "string" && value !== "" ? value : undefined;
}

interface OAuthRefusal {
  error: string;
  description?: string | null | undefined;
}

/** An OAuth error from the issuer (RFC 6749 §4.1.2.1, §5.2), shown to the person signing in. */
function issuerRefusal(refusal: OAuthRefusal, hint = ""): GatehouseError {
  const description = refusal.description ? ` (${quoted(refusal.description)})` : "";
  return new GatehouseError(
    "GATE_UNAUTHENTICATED",
    `the issuer refused the sign-in: ${quoted(refusal.error, 100)}${description}; start again at /v1/auth/login${hint}`,
  );
}

/** The OAuth error the issuer answered the code exchange with, when that is what failed. */
function oauthError(error: unknown): OAuthRefusal | null {
  if (error instanceof oidc.ResponseBodyError || error instanceof oidc.AuthorizationResponseError) {
    return { error: error.error, description: error.error_description };
  }
  // A refused client authentication comes as a 401 with the error in WWW-Authenticate (RFC 6750 §3).
  if (error instanceof oidc.WWWAuthenticateChallengeError) {
    const parameters = error.cause[0]?.parameters;
    return { error: parameters?.error ?? `HTTP ${error.status}`, description: parameters?.error_description };
  }
  return null;
}

/** A network failure or a non-OAuth answer (a proxy's 502, a timeout) rather than a refusal. */
function isUnreachable(error: unknown): boolean {
  if (error instanceof oidc.ClientError) {
    return [
      "OAUTH_TIMEOUT",
      "OAUTH_ABORT",
      "OAUTH_RESPONSE_IS_NOT_CONFORM",
      "OAUTH_RESPONSE_IS_NOT_JSON",
    ].includes(error.code ?? "");
  }
  // fetch rejects with a TypeError on network failure; openid-client's own argument errors carry a code.
  return error instanceof TypeError && !("code" in error);
}

/** What failed, with the system error code a network failure carries (ECONNREFUSED, ENOTFOUND…). */
function reason(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause: unknown = error.cause;
  const code = cause instanceof Error && "code" in cause ? String(cause.code) : undefined;
  return code === undefined ? error.message : `${error.message}: ${code}`;
}

/**
 * Signs people in through one OIDC issuer (`identity.admin`). The issuer is
 * discovered on first use, not at start-up, so the control plane starts while
 * the issuer is down; a failed discovery is tried again at the next sign-in.
 */
export class AdminSignIn {
  private configuration: Promise<oidc.Configuration> | null = null;
  private readonly clientSecret: string | undefined;
  private readonly scope: string;
  private readonly secureCookie: boolean;

  /**
   * @param deps.clientSecret the text of `clientSecretFile`, read by the caller; omit for a public client
   * @throws GatehouseError GATE_CONFIG_INVALID when a client secret file was read but holds nothing
   */
  constructor(
    private readonly config: AdminLoginConfig,
    private readonly deps: { clientSecret?: string | undefined; logger: Pick<Logger, "info" | "warn"> },
  ) {
    this.clientSecret = deps.clientSecret?.trim();
    if (this.clientSecret === "") {
      throw new GatehouseError(
        "GATE_CONFIG_INVALID",
        "identity.admin.clientSecretFile is empty; put the client secret the issuer gave in it, or remove the key for a public client",
      );
    }
    // Without openid the issuer returns no ID token, and so no subject, nonce or groups.
    this.scope = [...new Set(["openid", ...config.scopes])].join(" ");
    this.secureCookie = new URL(config.redirectUrl).protocol === "https:";
  }

  /** This control plane's callback URL, as registered at the issuer. */
  get redirectUrl(): string {
    return this.config.redirectUrl;
  }

  /** The `Set-Cookie` value that removes the pending sign-in once it is used. */
  get clearCookie(): string {
    return this.cookie("", 0);
  }

  /**
   * Starts a sign-in: fresh state, nonce and PKCE verifier (S256), remembered in the cookie.
   *
   * @throws GatehouseError GATE_IDENTITY_UNAVAILABLE (503) when the issuer cannot be discovered
   */
  async begin(): Promise<LoginStart> {
    const configuration = await this.discovered();
    const pending: PendingLogin = {
      state: oidc.randomState(),
      nonce: oidc.randomNonce(),
      verifier: oidc.randomPKCECodeVerifier(),
    };
    const authorizationUrl = oidc.buildAuthorizationUrl(configuration, {
      redirect_uri: this.config.redirectUrl,
      scope: this.scope,
      state: pending.state,
      nonce: pending.nonce,
      code_challenge: await oidc.calculatePKCECodeChallenge(pending.verifier),
      code_challenge_method: "S256",
    });
    const value = [pending.state, pending.nonce, pending.verifier].join(".");
    return { authorizationUrl, state: pending.state, cookie: this.cookie(value, PENDING_LOGIN_SECONDS) };
  }

  /**
   * Finishes a sign-in at the callback: checks the state against the cookie,
   * exchanges the code (with the PKCE verifier), validates the ID token (with
   * the nonce) and maps the person's groups to a role.
   *
   * @param callbackUrl the callback request's URL; only its query is read
   * @param cookieValue the {@link LOGIN_COOKIE} cookie the browser sent, if any
   * @throws GatehouseError GATE_UNAUTHENTICATED (401) when the sign-in expired, was
   *   started elsewhere, or the issuer refused it; GATE_TOKEN_INVALID (401) when
   *   the issuer's answer fails validation; GATE_FORBIDDEN (403) when no group of
   *   the person's is mapped to a role; GATE_IDENTITY_UNAVAILABLE (503) when the
   *   issuer cannot be reached
   */
  async complete(callbackUrl: URL, cookieValue: string | undefined): Promise<AdminIdentity> {
    const pending = parsePending(cookieValue);
    const query = callbackUrl.searchParams;
    if (pending === null || query.get("state") !== pending.state) throw expired();
    const refused = query.get("error");
    if (refused !== null)
      throw issuerRefusal({ error: refused, description: query.get("error_description") });
    const configuration = await this.discovered();
    // The redirect_uri sent with the code must be the registered one, whatever
    // host or proxy the callback request came through.
    const response = new URL(this.config.redirectUrl);
    response.search = callbackUrl.search;
    let tokens: Awaited<ReturnType<typeof oidc.authorizationCodeGrant>>;
    try {
      tokens = await oidc.authorizationCodeGrant(configuration, response, {
        pkceCodeVerifier: pending.verifier,
        expectedState: pending.state,
        expectedNonce: pending.nonce,
      });
    } catch (error) {
      throw this.exchangeRefusal(error, [query.get("code") ?? "", pending.verifier]);
    }
    // expectedNonce makes openid-client require an ID token, so claims are there.
    const claims = tokens.claims();
    if (claims === undefined) throw new GatehouseError("GATE_INTERNAL", "the token response had no ID token");
    const subject = `${claims.iss}#${claims.sub}`;
    const name = stringClaim(claims.email) ?? stringClaim(claims.preferred_username) ?? claims.sub;
    const role = this.roleOf(subject, name, groupsOf(claims[this.config.groupsClaim]));
    this.deps.logger.info({ subject, name, role }, "signed in");
    return { subject, name, role };
  }

  /** The first role, in precedence order, that any of the groups grants. */
  private roleOf(subject: string, name: string, groups: string[] | null): Role {
    const claim = quoted(this.config.groupsClaim);
    const role =
      groups === null
        ? undefined
        : ROLES_BY_PRECEDENCE.find((candidate) =>
            this.config.roles[candidate].some((g) => groups.includes(g)),
          );
    if (role !== undefined) return role;
    this.deps.logger.warn({ subject, name, groups }, "sign-in refused: no group mapped to a role");
    if (groups === null) {
      throw new GatehouseError(
        "GATE_FORBIDDEN",
        `${quoted(name)} signed in, but the ID token has no ${claim} claim, so no role can be given; have the issuer release the user's groups in it, or set identity.admin.groupsClaim to the claim it uses`,
      );
    }
    const shown = groups.slice(0, GROUPS_SHOWN).map((g) => quoted(g, 100));
    const more = groups.length > GROUPS_SHOWN ? ` and ${groups.length - GROUPS_SHOWN} more` : "";
    throw new GatehouseError(
      "GATE_FORBIDDEN",
      `${quoted(name)} is in no group mapped to a role (the ${claim} claim lists ${shown.length === 0 ? "no groups" : `${shown.join(", ")}${more}`}); an operator maps groups to roles in identity.admin.roles (admin, approver, auditor)`,
    );
  }

  /** The error a failed code exchange becomes. `secrets` are cut out of anything the issuer said. */
  private exchangeRefusal(error: unknown, secrets: string[]): GatehouseError {
    const redact = (text: string) =>
      secrets.reduce((out, secret) => (secret === "" ? out : out.replaceAll(secret, "[redacted]")), text);
    const refusal = oauthError(error);
    if (refusal !== null) {
      const refused = issuerRefusal(
        refusal,
        " (if this keeps happening, check identity.admin's clientId and client secret against the issuer)",
      );
      return new GatehouseError(refused.code, redact(refused.message));
    }
    if (isUnreachable(error)) return this.unavailable("its token endpoint or keys", error);
    if (error instanceof oidc.ClientError) {
      // The cause names the check that failed (a claim, the signature); it holds no token.
      const check = error.cause instanceof Error ? error.cause.message : error.message;
      return new GatehouseError(
        "GATE_TOKEN_INVALID",
        redact(
          `the issuer's answer to the sign-in failed validation (${check}); start again at /v1/auth/login`,
        ),
      );
    }
    // Not attached as the cause: an unknown error might carry the token response.
    return new GatehouseError("GATE_INTERNAL", redact(`completing the sign-in failed: ${reason(error)}`));
  }

  private unavailable(what: string, error: unknown): GatehouseError {
    return new GatehouseError(
      "GATE_IDENTITY_UNAVAILABLE",
      `cannot reach the sign-in issuer ${this.config.issuer} (${what}: ${reason(error)}); check that the control plane can reach it, then start again at /v1/auth/login`,
    );
  }

  /** The issuer's configuration, discovered once; a failure is forgotten, so the next call tries again. */
  private discovered(): Promise<oidc.Configuration> {
    this.configuration ??= this.discover().catch((error: unknown) => {
      this.configuration = null;
      throw error;
    });
    return this.configuration;
  }

  private async discover(): Promise<oidc.Configuration> {
    const { issuer, clientId } = this.config;
    try {
      const configuration = await oidc.discovery(
        new URL(issuer),
        clientId,
        undefined,
        // client_secret_basic is the default token endpoint auth method of OIDC client registration.
        this.clientSecret === undefined ? oidc.None() : oidc.ClientSecretBasic(this.clientSecret),
        {
          timeout: FETCH_TIMEOUT_SECONDS,
          // The config allows plain http only for loopback issuers.
          execute: new URL(issuer).protocol === "http:" ? [oidc.allowInsecureRequests] : [],
        },
      );
      this.deps.logger.info({ issuer }, "discovered the sign-in issuer");
      return configuration;
    } catch (error) {
      this.deps.logger.warn(
        { issuer, reason: reason(error) },
        "cannot discover the sign-in issuer; trying again at the next sign-in",
      );
      throw this.unavailable("its discovery document", error);
    }
  }

  private cookie(value: string, maxAgeSeconds: number): string {
    const attributes = [
      `${LOGIN_COOKIE}=${value}`,
      `Path=${LOGIN_COOKIE_PATH}`,
      `Max-Age=${maxAgeSeconds}`,
      "HttpOnly",
      // Lax: the cookie comes back on the issuer's top-level redirect to the callback.
      "SameSite=Lax",
    ];
    if (this.secureCookie) attributes.push("Secure");
    return attributes.join("; ");
  }
}
