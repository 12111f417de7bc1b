/**
 * The agents connected to this control-plane replica right now. The AgentLink
 * server adds one entry per live stream; sessions use it to hand out proxy URLs
 * and to push revocations to every agent at once.
 */
import type { ControlMessage } from "@gatehouse/proto";
import { inScope, servedScope } from "./scope.js";

export interface LiveAgent {
  /** The agent account (token) the stream authenticated as. */
  accountId: string;
  /** The id the agent process reported in its hello. */
  agentId: string;
  name: string;
  version: string;
  /** Connections the agent serves; empty means all. */
  connections: readonly string[];
  proxyUrl: string;
  connectedAt: number;
  /** Queues a message on the agent's stream. */
  send(message: ControlMessage): void;
  /** Ends the agent's stream, e.g. when its token is revoked. */
  disconnect(reason: string): void;
}

export class AgentRegistry {
  private readonly live = new Set<LiveAgent>();

  /** Registers a live agent; call the returned function when its stream ends. */
  add(agent: LiveAgent): () => void {
    this.live.add(agent);
    return () => {
      this.live.delete(agent);
    };
  }

  get size(): number {
    return this.live.size;
  }

  list(): LiveAgent[] {
    return [...this.live];
  }

  /** Proxy URL for a connection, from the longest-connected agent that serves it. */
  proxyUrlFor(connection: string): string | null {
    for (const agent of this.live) {
      if (inScope(servedScope(agent.connections), connection)) {
        return `${agent.proxyUrl.replace(/\/+$/, "")}/c/${connection}`;
      }
    }
    return null;
  }

  /** Ends every stream of the agent with this account id. */
  disconnect(accountId: string, reason: string): void {
    for (const agent of this.live) if (agent.accountId === accountId) agent.disconnect(reason);
  }

  broadcast(message: ControlMessage): void {
    for (const agent of this.live) agent.send(message);
  }
}
