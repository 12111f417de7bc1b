/**
 * The `Bearer` credential of an Authorization field, as every Gatehouse
 * endpoint takes it: API keys at the REST API, session tokens at an agent's
 * proxy, agent tokens in AgentLink call metadata.
 *
 * @see https://www.rfc-editor.org/rfc/rfc6750#section-2.1
 */

/** The token of `Bearer <token>` (scheme in any case), or null for any other value or none. */
export function bearerToken(authorization: unknown): string | null {
  if (typeof authorization !== "string") return null;
  return /^Bearer\s+(\S+)$/i.exec(authorization)?.[1] ?? null;
}
