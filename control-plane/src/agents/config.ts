/** What the control plane pushes to an agent: connections, token keys, revocations, masking patterns. */
import type { AgentConfig, Connection, MaskingPattern } from "@gatehouse/proto";
import type { ConnectionConfig, MaskingPatternConfig } from "../config.js";
import type { SigningKeys } from "../identity/signing-keys.js";
import type { Store } from "../store/types.js";

const DEFAULT_SCHEME: Record<ConnectionConfig["type"], string> = { anthropic: "x-api-key" };

function toConnection(c: ConnectionConfig): Connection {
  return {
    name: c.name,
    type: c.type,
    upstream: c.upstream,
    // Only where the credential lives; the value never crosses the link.
    credential: {
      ...("env" in c.credential ? { env: c.credential.env } : { vault: c.credential.vault }),
      scheme: c.credential.scheme ?? DEFAULT_SCHEME[c.type],
      username: c.credential.username ?? "",
    },
  };
}

function toMaskingPattern(p: MaskingPatternConfig): MaskingPattern {
  // 0 on the wire leaves the length to the agent's default.
  return { name: p.name, pattern: p.pattern, maxLength: p.maxLength ?? 0 };
}

/** The configuration for an agent serving `served` (empty: every connection). */
export async function buildAgentConfig(
  deps: {
    connections: readonly ConnectionConfig[];
    /** Every agent masks these, whichever connections it serves. */
    maskingPatterns?: readonly MaskingPatternConfig[];
    keys: SigningKeys;
    store: Pick<Store, "listRevokedSessions">;
  },
  served: readonly string[],
  now: number,
): Promise<AgentConfig> {
  const revoked = await deps.store.listRevokedSessions(now);
  return {
    connections: deps.connections
      .filter((c) => served.length === 0 || served.includes(c.name))
      .map(toConnection),
    tokenKeys: deps.keys.publicJwks.map((jwk) => ({ kid: String(jwk.kid), jwkJson: JSON.stringify(jwk) })),
    revoked: revoked.map((r) => ({ sessionId: r.id, expiresAtUnixMs: r.expiresAt })),
    maskingPatterns: (deps.maskingPatterns ?? []).map(toMaskingPattern),
  };
}
