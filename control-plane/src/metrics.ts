/** The control plane's Prometheus metrics, registered on the registry the process entry passes in. */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import type { AgentRegistry } from "./agents/registry.js";

export type ControlPlaneMetrics = ReturnType<typeof createControlPlaneMetrics>;

export function createControlPlaneMetrics(registry: Registry, agents: AgentRegistry) {
  const registers = [registry];
  return {
    httpRequests: new Histogram({
      name: "gatehouse_cp_http_request_duration_seconds",
      help: "REST API request duration by route and status.",
      labelNames: ["method", "route", "status"] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
    eventsIngested: new Counter({
      name: "gatehouse_cp_events_ingested_total",
      help: "Session events stored (duplicates of stored events excluded).",
      registers,
    }),
    eventDuplicates: new Counter({
      name: "gatehouse_cp_event_duplicates_total",
      help: "Session events received again after they were stored (resent by an agent).",
      registers,
    }),
    eventsForUnknownSessions: new Counter({
      name: "gatehouse_cp_events_unknown_session_total",
      help: "Session events stored for a session id the store has no session for (kept, not attached to a session).",
      registers,
    }),
    ingestSeconds: new Histogram({
      name: "gatehouse_cp_ingest_batch_duration_seconds",
      help: "Time to store one batch of events from an agent.",
      buckets: [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1],
      registers,
    }),
    connectedAgents: new Gauge({
      name: "gatehouse_cp_connected_agents",
      help: "Agents holding a link to this control-plane replica.",
      registers,
      collect() {
        this.set(agents.size);
      },
    }),
  };
}
