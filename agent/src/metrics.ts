/** The agent's Prometheus metrics, registered on the registry the process entry passes in. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export type AgentMetrics = ReturnType<typeof createAgentMetrics>;

export function createAgentMetrics(
  registry: Registry,
  probes: { spoolPending: () => number; linkReady: () => boolean },
) {
  const registers = [registry];
  return {
    requestDuration: new Histogram({
      name: "gatehouse_agent_request_duration_seconds",
      help: "Time from a client request to the end of its response, by status.",
      labelNames: ["status"] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      registers,
    }),
    exchanges: new Counter({
      name: "gatehouse_agent_exchanges_total",
      help: "Recorded exchanges by connection, kind and how they ended (completed, cancelled, failed, refused).",
      labelNames: ["connection", "kind", "outcome"] as const,
      registers,
    }),
    spoolPending: new Gauge({
      name: "gatehouse_agent_spool_pending_events",
      help: "Recorded events not yet acknowledged as durable by the control plane.",
      registers,
      collect() {
        this.set(probes.spoolPending());
      },
    }),
    linkReady: new Gauge({
      name: "gatehouse_agent_link_ready",
      help: "1 while the link to the control plane is established, else 0.",
      registers,
      collect() {
        this.set(probes.linkReady() ? 1 : 0);
      },
    }),
  };
}
