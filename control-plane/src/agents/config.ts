/** What the control plane pushes to an agent: connections, token keys, revocations, masking patterns, policies. */
import type { AgentConfig, Connection, MaskingPattern, Policy } from "@gatehouse/proto";
import type { ConnectionConfig, MaskingPatternConfig } from "../config.js";
import type { SigningKeys } from "../identity/signing-keys.js";
import type { PolicyConfig } from "../policy/schema.js";
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

/** A validated policy as agents receive it. */
export function toPolicy(p: PolicyConfig): Policy {
  return {
    name: p.name,
    connections: p.connections ?? [],
    rules: p.rules.map((r) => ({
      name: r.name,
      when: r.when,
      action: r.action,
      message: r.message ?? "",
      // Unset fields go as "" (0 for the number): not matched on.
      match: {
        text: r.match.text ?? "",
        system: r.match.system ?? "",
        model: r.match.model ?? "",
        tool: r.match.tool ?? "",
        toolInput: r.match.toolInput ?? "",
        toolResult: r.match.toolResult ?? "",
        maxTokensAbove: r.match.maxTokensAbove ?? 0,
      },
    })),
  };
}

/** The configuration for an agent serving `served` (empty: every connection). */
export async function buildAgentConfig(
  deps: {
    connections: readonly ConnectionConfig[];
    /** Every agent masks these, whichever connections it serves. */
    maskingPatterns?: readonly MaskingPatternConfig[];
    /** In evaluation order; every agent gets them all and applies those of the connections it serves. */
    policies?: readonly PolicyConfig[];
    approvalTimeoutSeconds?: number;
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
    policies: (deps.policies ?? []).map(toPolicy),
    approvalTimeoutSeconds: deps.approvalTimeoutSeconds ?? 0,
  };
}
