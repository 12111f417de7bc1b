/**
 * Agent accounts: each agent dials in with its own token, created here and
 * shown once, and may serve the connections of its scope (see scope.ts).
 * Revoking an account ends its live streams at once.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import { v7 as uuidv7 } from "uuid";
import type { AuditLog } from "../audit/log.js";
import { AGENT_TOKEN_PREFIX, generateToken, hashToken } from "../identity/tokens.js";
import type { AgentRecord, Store } from "../store/types.js";
import type { AgentRegistry, LiveAgent } from "./registry.js";

export interface AgentAccountView extends Omit<AgentRecord, "tokenHash"> {
  /** Live streams of this account on this replica. */
  live: Array<Pick<LiveAgent, "agentId" | "version" | "proxyUrl" | "connections" | "connectedAt">>;
}

export class AgentAccounts {
  constructor(
    private readonly deps: {
      store: Store;
      registry: AgentRegistry;
      audit: AuditLog;
      /** Names of the configured connections: a scope may name only these. */
      connections: readonly string[];
      now: () => number;
    },
  ) {}

  /**
   * Creates an account whose agents may serve `connections` (default: every
   * connection, including ones configured later). `actor` is who asked, for the audit log.
   */
  async create(
    actor: string,
    name: string,
    connections: readonly string[] | null = null,
  ): Promise<{ agent: AgentRecord; token: string }> {
    const scope = connections === null ? null : [...new Set(connections)];
    const unknown = scope?.filter((c) => !this.deps.connections.includes(c)) ?? [];
    if (unknown.length > 0) {
      throw new GatehouseError(
        "GATE_CONNECTION_NOT_FOUND",
        `connection ${unknown.map((c) => `'${c}'`).join(", ")} not found; known: ${this.deps.connections.join(", ")}`,
      );
    }
    if (scope !== null && scope.length === 0) {
      throw new GatehouseError(
        "GATE_INVALID_REQUEST",
        "an agent account needs at least one connection; omit connections to let it serve every connection",
      );
    }
    const token = generateToken(AGENT_TOKEN_PREFIX);
    const agent: AgentRecord = {
      id: uuidv7(),
      name,
      tokenHash: hashToken(token),
      createdAt: this.deps.now(),
      revokedAt: null,
      lastSeenAt: null,
      connections: scope,
    };
    await this.deps.audit.record(actor, "agent.create", agent.id, { name, connections: scope });
    await this.deps.store.insertAgent(agent);
    return { agent, token };
  }

  async list(): Promise<AgentAccountView[]> {
    const live = this.deps.registry.list();
    return (await this.deps.store.listAgents()).map(({ tokenHash: _, ...agent }) => ({
      ...agent,
      live: live
        .filter((l) => l.accountId === agent.id)
        .map(({ agentId, version, proxyUrl, connections, connectedAt }) => ({
          agentId,
          version,
          proxyUrl,
          connections,
          connectedAt,
        })),
    }));
  }

  /** Revokes an account; revoking it again changes nothing. `actor` is who asked. */
  async revoke(actor: string, id: string): Promise<AgentRecord> {
    const known = (await this.deps.store.listAgents()).find((a) => a.id === id);
    if (!known) throw new GatehouseError("GATE_NOT_FOUND", `agent '${id}' not found`);
    if (known.revokedAt === null)
      await this.deps.audit.record(actor, "agent.revoke", id, { name: known.name });
    const agent = (await this.deps.store.revokeAgent(id, this.deps.now())) ?? known;
    this.deps.registry.disconnect(id, "agent token revoked");
    return agent;
  }
}
