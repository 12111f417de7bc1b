/**
 * Verifies session tokens locally, with the public keys and revocations the
 * control plane pushes over the link, so that no request waits on the control
 * plane. A token's signature is checked once; expiry, revocation and the
 * connection it is bound to are checked on every use.
 *
 * @see https://www.rfc-editor.org/rfc/rfc7519 (JWT)
 */
import { EventEmitter } from "node:events";
import type { AgentConfig__Output, RevokedSession__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import { SESSION_TOKEN } from "@gatehouse/proto/session-token";
import { createLocalJWKSet, type JWK, errors as joseErrors, jwtVerify } from "jose";

export interface SessionClaims {
  sessionId: string;
  connection: string;
  subject: string;
  /** Milliseconds since the epoch. */
  expiresAt: number;
}

/** Verified tokens kept; beyond this the oldest are forgotten (and verified again if reused). */
const CACHE_LIMIT = 10_000;

/** Told, once, that the session it watches was closed; the error says so to a client. */
export type RevocationWatcher = (error: GatehouseError) => void;

function revokedError(sessionId: string): GatehouseError {
  return new GatehouseError("GATE_TOKEN_REVOKED", `session ${sessionId} was closed; open a new session`);
}

/** One pushed token key, read as a JWK; jose checks the rest when a token is verified with it. */
function tokenKey(key: { kid: string; jwkJson: string }): JWK {
  let parsed: unknown;
  try {
    parsed = JSON.parse(key.jwkJson);
  } catch {
    parsed = undefined;
  }
  const jwk = parsed as { kty?: unknown } | null | undefined;
  if (typeof jwk !== "object" || jwk === null || Array.isArray(jwk) || typeof jwk.kty !== "string") {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `token key '${key.kid}' from the control plane is not a JWK; check the control plane's signing key file`,
    );
  }
  return jwk as JWK;
}

/**
 * `revoked` carries the ids of sessions whose tokens are refused from now on;
 * `configured` follows each new set of keys and revocations from the control plane.
 */
export class TokenVerifier extends EventEmitter<{ revoked: [sessionIds: string[]]; configured: [] }> {
  private keySet: ReturnType<typeof createLocalJWKSet> | null = null;
  private readonly verified = new Map<string, SessionClaims>();
  private readonly revoked = new Map<string, number>();
  /** Exchanges in flight, by session id, to stop when their session is closed. */
  private readonly watchers = new Map<string, Set<RevocationWatcher>>();

  constructor(private readonly now: () => number = Date.now) {
    super();
  }

  /**
   * Replaces the verification keys with the control plane's current set and adds its revocations.
   *
   * @throws GatehouseError GATE_CONFIG_INVALID when a key is not a JWK; nothing is changed then.
   */
  configure(config: Pick<AgentConfig__Output, "tokenKeys" | "revoked">): void {
    const keySet = createLocalJWKSet({ keys: config.tokenKeys.map(tokenKey) });
    this.keySet = keySet;
    // A key may have been withdrawn: tokens verified with it must be checked again.
    this.verified.clear();
    // Revocations only accumulate (until the tokens expire): a configuration read from the
    // store before a session was closed must not undo the close's broadcast that overtook it.
    this.revoke(config.revoked);
    this.emit("configured");
  }

  revoke(sessions: readonly RevokedSession__Output[]): void {
    const now = this.now();
    for (const s of sessions) if (s.expiresAtUnixMs > now) this.revoked.set(s.sessionId, s.expiresAtUnixMs);
    // Entries for tokens that have expired anyway are no longer needed.
    for (const [id, expiresAt] of this.revoked) if (expiresAt <= now) this.revoked.delete(id);
    for (const s of sessions) {
      const watchers = this.watchers.get(s.sessionId);
      if (!watchers) continue;
      this.watchers.delete(s.sessionId);
      for (const watcher of watchers) watcher(revokedError(s.sessionId));
    }
    this.emit(
      "revoked",
      sessions.map((s) => s.sessionId),
    );
  }

  /**
   * Calls `onRevoked` when session `sessionId` is revoked (at once if it already is),
   * until the returned function is called. Checking a token once is not enough for an
   * exchange that runs for minutes: closing a session must stop what it is doing.
   */
  watch(sessionId: string, onRevoked: RevocationWatcher): () => void {
    if (this.revoked.has(sessionId)) {
      onRevoked(revokedError(sessionId));
      return () => {};
    }
    let watchers = this.watchers.get(sessionId);
    if (!watchers) {
      watchers = new Set();
      this.watchers.set(sessionId, watchers);
    }
    watchers.add(onRevoked);
    return () => {
      const current = this.watchers.get(sessionId);
      if (!current?.delete(onRevoked) || current.size > 0) return;
      this.watchers.delete(sessionId);
    };
  }

  /** The claims of a valid token for `connection`, or a GatehouseError saying why it is refused. */
  async verify(token: string, connection: string): Promise<SessionClaims> {
    const claims = this.verified.get(token) ?? (await this.verifySignature(token));
    if (claims.expiresAt <= this.now()) {
      this.verified.delete(token);
      throw new GatehouseError(
        "GATE_TOKEN_EXPIRED",
        `session token expired at ${new Date(claims.expiresAt).toISOString()}; open a new session`,
      );
    }
    if (this.revoked.has(claims.sessionId)) throw revokedError(claims.sessionId);
    if (claims.connection !== connection) {
      throw new GatehouseError(
        "GATE_WRONG_CONNECTION",
        `session token is for connection '${claims.connection}', not '${connection}'; open a session for '${connection}'`,
      );
    }
    return claims;
  }

  private async verifySignature(token: string): Promise<SessionClaims> {
    if (!this.keySet) {
      throw new GatehouseError(
        "GATE_NOT_READY",
        "agent has no token keys yet; it has not reached the control plane",
      );
    }
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(token, this.keySet, {
        issuer: SESSION_TOKEN.issuer,
        audience: SESSION_TOKEN.audience,
        typ: SESSION_TOKEN.type,
        algorithms: [SESSION_TOKEN.algorithm],
        requiredClaims: ["exp", "sub", "sid", "cnx"],
      }));
    } catch (error) {
      if (error instanceof joseErrors.JWTExpired) {
        throw new GatehouseError("GATE_TOKEN_EXPIRED", "session token expired; open a new session");
      }
      throw new GatehouseError(
        "GATE_TOKEN_INVALID",
        "session token is not valid (malformed, not signed by this Gatehouse, or for another audience); open a session with `gatehouse exec` or POST /v1/sessions",
      );
    }
    const { sid, cnx, sub, exp } = payload;
    if (
      typeof sid !== "string" ||
      typeof cnx !== "string" ||
      typeof sub !== "string" ||
      typeof exp !== "number"
    ) {
      throw new GatehouseError("GATE_TOKEN_INVALID", "session token lacks its session or connection claims");
    }
    const claims: SessionClaims = { sessionId: sid, connection: cnx, subject: sub, expiresAt: exp * 1000 };
    if (this.verified.size >= CACHE_LIMIT) {
      const oldest = this.verified.keys().next();
      if (!oldest.done) this.verified.delete(oldest.value);
    }
    this.verified.set(token, claims);
    return claims;
  }
}
