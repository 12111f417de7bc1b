/**
 * CI runners prove who they are with the OIDC ID token their platform issues
 * (GitHub Actions, Azure Pipelines, GitLab CI, any OIDC issuer). This module
 * verifies such a token against the issuer configured for it and finds the
 * rule that lets it open a session: what connection, for how long, and what the
 * record will say about who asked.
 *
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html
 * @see https://www.rfc-editor.org/rfc/rfc7519#section-7.2 (validating a JWT)
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import { createRemoteJWKSet, decodeJwt, type JWTPayload, errors as joseErrors, jwtVerify } from "jose";
import * as oidc from "openid-client";
import type { Logger } from "pino";
import type { RunnerProviderConfig } from "../config.js";
import type { Subject } from "../store/types.js";
import { type CompiledRule, compileRules, decide } from "./claim-rules.js";

/** A runner token whose signature and claims were checked, not yet matched to a rule. */
export interface VerifiedRunnerToken {
  provider: Provider;
  claims: JWTPayload;
}

/** What a verified runner token may do, and who it is. */
export interface RunnerGrant {
  subject: Subject;
  /** Longest session the rule allows; undefined: the control plane's limit. */
  maxTtlSeconds: number | undefined;
  /** Labels the rule puts on the session. */
  labels: Readonly<Record<string, string>>;
}

/**
 * Claims kept with a session unless a provider lists its own: what GitHub
 * Actions, Azure (Entra and Pipelines) and GitLab CI put in their tokens to say
 * which repository, pipeline, run and person a job is.
 */
export const DEFAULT_RECORD_CLAIMS = [
  // GitHub Actions
  "repository",
  "repository_owner",
  "ref",
  "sha",
  "workflow",
  "workflow_ref",
  "job_workflow_ref",
  "repository_id",
  "repository_owner_id",
  "environment",
  "event_name",
  "run_id",
  "run_attempt",
  "actor",
  "actor_id",
  "runner_environment",
  // Azure / Entra ID
  "tid",
  "oid",
  "appid",
  "azp",
  // GitLab CI
  "project_path",
  "pipeline_id",
  "job_id",
  "user_login",
] as const;

/** The longest a token may have been issued before it is used: guards `iat` in the future. */
const MAX_TOKEN_AGE_SECONDS = 86_400;
const JWKS_CACHE_MS = 10 * 60_000;
const FETCH_TIMEOUT_MS = 10_000;

/** One issuer's discovery document and keys, fetched on first use and kept. */
class Issuer {
  private keys: Promise<ReturnType<typeof createRemoteJWKSet>> | null = null;

  constructor(
    readonly config: RunnerProviderConfig,
    private readonly cooldownMs: number,
  ) {}

  /** The issuer's key set; a failed discovery is tried again on the next call. */
  keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    this.keys ??= this.discover().catch((error: unknown) => {
      this.keys = null;
      throw error;
    });
    return this.keys;
  }

  private async discover(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    const { name, issuer, audience } = this.config;
    let jwksUri: string | undefined;
    try {
      const configuration = await oidc.discovery(new URL(issuer), audience, undefined, undefined, {
        timeout: FETCH_TIMEOUT_MS / 1000,
        // The config allows plain http only for loopback issuers.
        ...(issuer.startsWith("http:") ? { execute: [oidc.allowInsecureRequests] } : {}),
      });
      jwksUri = configuration.serverMetadata().jwks_uri;
    } catch (error) {
      throw new GatehouseError(
        "GATE_IDENTITY_UNAVAILABLE",
        `cannot read the discovery document of provider '${name}' at ${issuer}/.well-known/openid-configuration (${(error as Error).message}); check that the control plane can reach the issuer`,
        { cause: error },
      );
    }
    if (!jwksUri) {
      throw new GatehouseError(
        "GATE_IDENTITY_UNAVAILABLE",
        `the discovery document of provider '${name}' (${issuer}) names no jwks_uri, so its tokens cannot be checked`,
      );
    }
    return createRemoteJWKSet(new URL(jwksUri), {
      timeoutDuration: FETCH_TIMEOUT_MS,
      cacheMaxAge: JWKS_CACHE_MS,
      cooldownDuration: this.cooldownMs,
    });
  }
}

export interface Provider {
  issuer: Issuer;
  rules: CompiledRule[];
}

const describe = (value: unknown) => {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
};

/**
 * Verifies runner tokens. Each configured issuer is discovered with
 * `openid-client` on first use; its keys are cached and fetched again when a
 * token names a key id the cache lacks (the issuer rotated its keys).
 */
export class RunnerIdentities {
  private readonly providers: Provider[];

  constructor(
    providers: readonly RunnerProviderConfig[],
    private readonly deps: { now: () => number; logger: Pick<Logger, "info" | "warn"> },
  ) {
    this.providers = providers.map((config) => ({
      issuer: new Issuer(config, config.jwksCooldownSeconds * 1000),
      rules: compileRules(config.rules),
    }));
  }

  get configured(): boolean {
    return this.providers.length > 0;
  }

  /**
   * Checks `token`: its issuer is configured, its signature verifies with the
   * issuer's keys, and `iss`, `aud`, `exp`, `nbf` and `iat` are acceptable.
   *
   * @throws GatehouseError 401 (GATE_TOKEN_INVALID / GATE_TOKEN_EXPIRED) when the token
   *   is not valid, 503 (GATE_IDENTITY_UNAVAILABLE) when its issuer cannot be reached.
   */
  async verify(token: string): Promise<VerifiedRunnerToken> {
    const provider = this.providerFor(token);
    const { config } = provider.issuer;
    try {
      const keySet = await provider.issuer.keySet();
      const { payload } = await jwtVerify(token, keySet, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: config.algorithms,
        clockTolerance: config.clockSkewSeconds,
        maxTokenAge: MAX_TOKEN_AGE_SECONDS,
        requiredClaims: ["sub", "exp", "iat"],
        currentDate: new Date(this.deps.now()),
      });
      return { provider, claims: payload };
    } catch (error) {
      const refused = error instanceof GatehouseError ? error : refusal(config, error);
      if (refused.code === "GATE_IDENTITY_UNAVAILABLE") {
        // Exposed errors are not logged by the API; an issuer outage must leave a trace.
        this.deps.logger.warn({ provider: config.name, err: error }, refused.message);
      }
      throw refused;
    }
  }

  /**
   * The first rule of the token's provider that matches its claims and allows `connection`.
   *
   * @throws GatehouseError 403 (GATE_FORBIDDEN) naming, per rule, what kept it from applying.
   */
  grant(token: VerifiedRunnerToken, connection: string): RunnerGrant {
    const { provider, claims } = token;
    const { config } = provider.issuer;
    const decision = decide(provider.rules, claims, connection);
    if (!decision.allowed) {
      const message = `provider '${config.name}': no rule lets this token open a session for '${connection}' (${decision.reason})`;
      this.deps.logger.info({ provider: config.name, sub: claims.sub }, message);
      throw new GatehouseError("GATE_FORBIDDEN", message);
    }
    const recorded: Record<string, string> = {
      provider: config.name,
      issuer: config.issuer,
      sub: String(claims.sub),
      rule: decision.rule.name,
    };
    for (const name of config.recordClaims ?? DEFAULT_RECORD_CLAIMS) {
      const value = claims[name];
      if (typeof value === "string" || typeof value === "number" || typeof value === "boolean") {
        recorded[name] = String(value);
      }
    }
    return {
      subject: { kind: "oidc", id: `${config.issuer}#${claims.sub}`, claims: recorded },
      maxTtlSeconds: decision.rule.rule.maxTtlSeconds,
      labels: decision.rule.rule.labels,
    };
  }

  /** The provider whose issuer (and, among several, audience) the token names; unverified yet. */
  private providerFor(token: string): Provider {
    let payload: JWTPayload;
    try {
      payload = decodeJwt(token);
    } catch {
      throw new GatehouseError(
        "GATE_TOKEN_INVALID",
        "the runner token is not a JWT; send the OIDC ID token your CI platform issued (`gatehouse exec --oidc …`)",
      );
    }
    const candidates = this.providers.filter((p) => p.issuer.config.issuer === payload.iss);
    if (candidates.length === 0) {
      // Provider names only: the issuers trusted are not for an unauthenticated caller to list.
      const known = this.providers.map((p) => p.issuer.config.name).join(", ");
      throw new GatehouseError(
        "GATE_TOKEN_INVALID",
        `the token's issuer ${describe(payload.iss ?? "(none)")} is not a configured identity provider (providers: ${known}); request the token from your CI platform's issuer`,
      );
    }
    const audiences = typeof payload.aud === "string" ? [payload.aud] : (payload.aud ?? []);
    return (
      candidates.find((p) => audiences.includes(p.issuer.config.audience)) ?? (candidates[0] as Provider)
    );
  }
}

/** A jose verification failure as the error the runner sees: what was wrong, never the token. */
function refusal(config: RunnerProviderConfig, error: unknown): GatehouseError {
  const from = `runner token from provider '${config.name}'`;
  const invalid = (why: string) => new GatehouseError("GATE_TOKEN_INVALID", `${from} ${why}`);
  if (error instanceof joseErrors.JWTExpired && error.claim === "iat") {
    return invalid(
      `was issued more than a day ago (iat ${isoSeconds(error.payload.iat)}); request a fresh token`,
    );
  }
  if (error instanceof joseErrors.JWTExpired) {
    const exp =
      typeof error.payload.exp === "number" ? ` at ${new Date(error.payload.exp * 1000).toISOString()}` : "";
    return new GatehouseError(
      "GATE_TOKEN_EXPIRED",
      `${from} expired${exp}; request a fresh token from your CI platform (they live minutes)`,
    );
  }
  if (error instanceof joseErrors.JWTClaimValidationFailed) {
    const { claim, reason, payload } = error;
    if (reason === "missing") return invalid(`lacks the required ${claim} claim`);
    if (claim === "aud") {
      return invalid(
        `is for audience ${describe(payload.aud)}, not '${config.audience}'; request the token with that audience`,
      );
    }
    if (claim === "nbf") {
      return invalid(
        `is not valid before ${new Date(Number(payload.nbf) * 1000).toISOString()}; check the clocks of the runner's platform and the control plane`,
      );
    }
    if (claim === "iat") {
      return invalid(
        `was issued in the future (iat ${isoSeconds(payload.iat)}); check the clocks of the runner's platform and the control plane`,
      );
    }
    return invalid(`has an unacceptable ${claim} claim`);
  }
  if (error instanceof joseErrors.JOSEAlgNotAllowed) {
    return invalid(
      `is signed with an algorithm the provider does not allow (allowed: ${config.algorithms.join(", ")})`,
    );
  }
  if (error instanceof joseErrors.JWKSNoMatchingKey) {
    return invalid(
      "is signed with a key the issuer does not publish; it was not issued by this issuer, or its key was withdrawn",
    );
  }
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) {
    return invalid(
      "has a signature that does not verify with the issuer's keys; it was altered or not issued by this issuer",
    );
  }
  if (issuerUnreachable(error)) {
    return new GatehouseError(
      "GATE_IDENTITY_UNAVAILABLE",
      `cannot fetch the signing keys of provider '${config.name}' (${(error as Error).message}); check that the control plane can reach the issuer's jwks_uri`,
      { cause: error },
    );
  }
  // Anything else jose refuses (malformed, unsupported or critical headers…) is the token's fault.
  return invalid(
    "is malformed or uses features Gatehouse does not accept; send the OIDC ID token exactly as your CI platform issued it",
  );
}

/** A JWT time claim (seconds) as ISO 8601, or as given when it is no number. */
function isoSeconds(value: unknown): string {
  return typeof value === "number" ? new Date(value * 1000).toISOString() : describe(value);
}

/** Failures to fetch the keys (network, timeout, a bad answer), as opposed to a bad token. */
function issuerUnreachable(error: unknown): boolean {
  if (!(error instanceof joseErrors.JOSEError)) return true;
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JWKSInvalid) return true;
  return error.code === "ERR_JOSE_GENERIC" && error.message.startsWith("Expected 200 OK");
}
