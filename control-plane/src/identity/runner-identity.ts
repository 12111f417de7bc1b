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
import type { RunnerProviderConfig } from "../config.js";
import type { Subject } from "../store/types.js";
import { type CompiledRule, compileRules, decide } from "./claim-rules.js";

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
  "job_workflow_ref",
  "environment",
  "event_name",
  "run_id",
  "run_attempt",
  "actor",
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

interface Provider {
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
    private readonly now: () => number,
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
   * Verifies `token` and finds the rule that lets it open `connection`.
   *
   * @throws GatehouseError 401 (GATE_TOKEN_INVALID / GATE_TOKEN_EXPIRED) when the token
   *   is not valid, 403 (GATE_FORBIDDEN) when no rule lets it open `connection`,
   *   503 (GATE_IDENTITY_UNAVAILABLE) when its issuer cannot be reached.
   */
  async authorize(token: string, connection: string): Promise<RunnerGrant> {
    const provider = this.providerFor(token);
    const { config } = provider.issuer;
    const claims = await this.verify(provider, token);
    const decision = decide(provider.rules, claims, connection);
    if (!decision.allowed) {
      throw new GatehouseError(
        "GATE_FORBIDDEN",
        `provider '${config.name}': no rule lets this token open a session for '${connection}' (${decision.reason})`,
      );
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

  private async verify(provider: Provider, token: string): Promise<JWTPayload> {
    const { config } = provider.issuer;
    const keySet = await provider.issuer.keySet();
    try {
      const { payload } = await jwtVerify(token, keySet, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: config.algorithms,
        clockTolerance: config.clockSkewSeconds,
        maxTokenAge: MAX_TOKEN_AGE_SECONDS,
        requiredClaims: ["sub", "exp", "iat"],
        currentDate: new Date(this.now()),
      });
      return payload;
    } catch (error) {
      throw refusal(config, error);
    }
  }
}

/** A jose verification failure as the error the runner sees: what was wrong, never the token. */
function refusal(config: RunnerProviderConfig, error: unknown): GatehouseError {
  const from = `runner token from provider '${config.name}'`;
  const invalid = (why: string) => new GatehouseError("GATE_TOKEN_INVALID", `${from} ${why}`);
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
        `was issued in the future or too long ago (iat ${describe(payload.iat)}); check the clocks, or request a fresh token`,
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
  if (error instanceof joseErrors.JWTInvalid || error instanceof joseErrors.JWSInvalid) {
    return invalid("is malformed; send the OIDC ID token exactly as your CI platform issued it");
  }
  return new GatehouseError(
    "GATE_IDENTITY_UNAVAILABLE",
    `cannot fetch the signing keys of provider '${config.name}' (${(error as Error).message}); check that the control plane can reach the issuer`,
    { cause: error },
  );
}
