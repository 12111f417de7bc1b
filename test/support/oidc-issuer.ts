/**
 * An in-process OIDC issuer of CI runner tokens, as GitHub Actions, Azure
 * Pipelines or Entra ID publish them: a discovery document and a JWKS over
 * real HTTP, RS256 ID tokens with the claims those platforms put in theirs,
 * and key rotation. It counts the requests it serves, so tests can see the
 * control plane cache its keys.
 *
 * @see https://openid.net/specs/openid-connect-discovery-1_0.html
 * @see https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
 */
import { randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { type CryptoKey, exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from "jose";

interface IssuerKey {
  kid: string;
  alg: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function makeKey(alg = "RS256"): Promise<IssuerKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const kid = randomUUID();
  return { kid, alg, privateKey, jwk: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

export interface SignOptions {
  /** Lifetime from `iat`; negative for a token that has already expired. */
  expiresInSeconds?: number;
  /** Seconds added to now for `iat` (and `nbf` unless given). */
  issuedAtOffsetSeconds?: number;
  nbfOffsetSeconds?: number;
  audience?: string | string[];
  issuer?: string;
  /** Sign with a key the issuer does not publish. */
  unpublishedKey?: boolean;
  /** Sign with another algorithm (its key is not published either). */
  alg?: "ES256" | "RS384";
}

export class OidcIssuer {
  readonly requests = { discovery: 0, jwks: 0 };
  private keys: IssuerKey[] = [];
  private stranger: IssuerKey | undefined;
  private available = true;

  private constructor(
    private readonly server: Server,
    /** The `iss` of its tokens, e.g. http://127.0.0.1:PORT/tenant/v2.0. */
    readonly issuer: string,
    readonly audience: string,
  ) {}

  /** Starts an issuer on 127.0.0.1, port 0; `path` makes a path-based issuer like Entra's. */
  static async start(options: { path?: string; audience?: string } = {}): Promise<OidcIssuer> {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}${options.path ?? ""}`;
    const issuer = new OidcIssuer(server, base, options.audience ?? "gatehouse");
    issuer.keys = [await makeKey()];
    server.on("request", (req, res) => {
      const path = new URL(req.url ?? "/", base).pathname;
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      };
      if (!issuer.available) return send(503, { error: "temporarily_unavailable" });
      if (path === new URL(`${base}/.well-known/openid-configuration`).pathname) {
        issuer.requests.discovery++;
        return send(200, {
          issuer: base,
          jwks_uri: `${base}/keys`,
          authorization_endpoint: `${base}/authorize`,
          response_types_supported: ["id_token"],
          subject_types_supported: ["public", "pairwise"],
          id_token_signing_alg_values_supported: ["RS256"],
          claims_supported: ["sub", "aud", "exp", "iat", "iss", "nbf", "jti"],
        });
      }
      if (path === new URL(`${base}/keys`).pathname) {
        issuer.requests.jwks++;
        return send(200, { keys: issuer.keys.map((k) => k.jwk) });
      }
      send(404, { error: "not_found" });
    });
    return issuer;
  }

  /** While false, every request gets 503 (an issuer outage). */
  setAvailable(available: boolean): void {
    this.available = available;
  }

  /**
   * Makes a new signing key and publishes it; with `retireOld`, the old keys are
   * no longer published (tokens they signed stop verifying once keys are re-read).
   */
  async rotate(options: { retireOld?: boolean } = {}): Promise<void> {
    const key = await makeKey();
    this.keys = options.retireOld ? [key] : [key, ...this.keys];
  }

  async sign(claims: JWTPayload, options: SignOptions = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000) + (options.issuedAtOffsetSeconds ?? 0);
    let key = this.keys[0] as IssuerKey;
    if (options.alg) key = await makeKey(options.alg);
    else if (options.unpublishedKey) key = this.stranger ??= await makeKey();
    return new SignJWT({ jti: randomUUID(), ...claims })
      .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: "JWT" })
      .setIssuer(options.issuer ?? this.issuer)
      .setAudience(options.audience ?? this.audience)
      .setIssuedAt(now)
      .setNotBefore(now + (options.nbfOffsetSeconds ?? 0))
      .setExpirationTime(now + (options.expiresInSeconds ?? 300))
      .sign(key.privateKey);
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Claims of a GitHub Actions job token (a push to `ref` of `repository`). */
export function githubClaims(overrides: Record<string, string> = {}): Record<string, string> {
  const repository = overrides.repository ?? "contoso/app";
  const ref = overrides.ref ?? "refs/heads/main";
  return {
    sub: `repo:${repository}:ref:${ref}`,
    repository,
    repository_owner: repository.split("/")[0] ?? "",
    ref,
    sha: "6f1ed002ab5595859014ebf0951522d9e4a2a1d1",
    workflow: "ci",
    job_workflow_ref: `${repository}/.github/workflows/ci.yml@${ref}`,
    event_name: "push",
    run_id: "7312457981",
    run_attempt: "1",
    actor: "octocat",
    ...overrides,
  };
}

/** Claims of an Azure Pipelines workload-identity token for a service connection. */
export function azureClaims(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    sub: "sc://contoso/app/gatehouse-connection",
    tid: "72f988bf-86f1-41af-91ab-2d7cd011db47",
    oid: "4f2a9b1e-58b0-4c1e-9c2d-1a7f0e2d9c11",
    ...overrides,
  };
}
