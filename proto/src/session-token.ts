/**
 * The session token, as the control plane issues it and agents verify it: a
 * JWT (RFC 7519) signed with EdDSA (RFC 8037) by a key the control plane pushes
 * to agents over AgentLink.
 *
 * Claims: `iss` and `aud` below; `sub` the subject that opened the session;
 * `sid` (also `jti`) the session id; `cnx` the one connection it opens; `iat`, `exp`.
 */
export const SESSION_TOKEN = {
  issuer: "gatehouse",
  audience: "gatehouse-agent",
  /** The JOSE `typ` header. */
  type: "gatehouse-session+jwt",
  algorithm: "EdDSA",
} as const;
