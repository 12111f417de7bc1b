/**
 * Child process of the benchmarks: Gatehouse itself, recording on, with
 * `anthropic` connections pointing at the fake upstream (one, `claude`, unless
 * `--connections` names others).
 *
 * `--role control-plane` and `--role agent` run the two halves in separate
 * processes, as `gatehouse up` and the split deployment do, so the agent's own
 * cost can be told apart from the store's. `--role all` runs both in one
 * process, linked over real gRPC: a diagnostic of what sharing one event loop costs.
 *
 * Usage: gateway.js --role all|control-plane --upstream URL --upstream-key KEY
 *        gateway.js --role agent --control-plane HOST:PORT --agent-token TOKEN --upstream-key KEY
 *        [--log-level info] [--keep-data]
 *        [--connections claude,…] [--config-json '{"policies": …}'] [--admin-token TOKEN]
 * `--connections` names the `anthropic` connections, each to `--upstream` (default `claude`);
 * `--config-json` is merged over the control plane's configuration (e.g. `policies`, `approvals`);
 * `--admin-token` is accepted as an admin API key, as `GATEHOUSE_ADMIN_TOKEN` is.
 * Prints a {@link GatewayInfo} JSON line on stdout once ready (an agent: once linked).
 * Logs (JSON, pino) go to gateway.log in the process's temporary data directory.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import type { RunningAgent } from "@gatehouse/agent";
import type { RunningControlPlane } from "@gatehouse/control-plane";
import { type Level, pino } from "pino";
import { Registry } from "prom-client";
import {
  type DrainResult,
  type GatewayInfo,
  type RecordingState,
  type SessionGrant,
  serveCommands,
} from "./child.js";

const { values } = parseArgs({
  options: {
    role: { type: "string", default: "all" },
    upstream: { type: "string" },
    "upstream-key": { type: "string" },
    "control-plane": { type: "string" },
    "agent-token": { type: "string" },
    "log-level": { type: "string", default: "info" },
    "keep-data": { type: "boolean", default: false },
    connections: { type: "string", default: "claude" },
    "config-json": { type: "string", default: "{}" },
    "admin-token": { type: "string" },
  },
});
const role = values.role;
if (role !== "all" && role !== "control-plane" && role !== "agent") {
  throw new Error(`--role must be all, control-plane or agent; got ${JSON.stringify(role)}`);
}
const UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY";

const dataDir = await mkdtemp(join(tmpdir(), `gatehouse-bench-${role}-`));
const root = pino(
  { level: values["log-level"] as Level, base: { pid: process.pid } },
  pino.destination({ dest: join(dataDir, "gateway.log"), sync: false }),
);
const log = (component: string) => root.child({ component });
const registry = new Registry();

let cp: RunningControlPlane | undefined;
let agentToken = values["agent-token"] ?? "";
let grpcAddress = values["control-plane"] ?? "";
if (role !== "agent") {
  if (!values.upstream) throw new Error("--upstream URL is required");
  // Loaded only where it runs, as the `gatehouse` command does, so an agent's memory is its own.
  const { controlPlaneConfigSchema, startControlPlane } = await import("@gatehouse/control-plane");
  const upstream = values.upstream;
  const extra = JSON.parse(values["config-json"]) as Record<string, unknown>;
  cp = await startControlPlane({
    config: controlPlaneConfigSchema.parse({
      connections: values.connections.split(",").map((name) => ({
        name: name.trim(),
        type: "anthropic",
        upstream,
        credential: { env: UPSTREAM_KEY_ENV },
      })),
      http: { listen: "127.0.0.1:0" },
      grpc: { listen: "127.0.0.1:0" },
      ...extra,
    }),
    dataDir,
    adminToken: values["admin-token"],
    log,
    registry,
  });
  grpcAddress = cp.grpcAddress;
  agentToken = (await cp.accounts.create("bench", "bench-agent")).token;
}

let agent: RunningAgent | undefined;
if (role !== "control-plane") {
  if (!grpcAddress || !agentToken)
    throw new Error("--control-plane HOST:PORT and --agent-token are required");
  const { agentConfigSchema, startAgent } = await import("@gatehouse/agent");
  agent = await startAgent({
    config: agentConfigSchema.parse({
      controlPlane: { address: grpcAddress },
      proxy: { listen: "127.0.0.1:0" },
    }),
    token: agentToken,
    dataDir,
    env: { [UPSTREAM_KEY_ENV]: values["upstream-key"] },
    log,
    registry,
  });
  await agent.link.whenState("ready");
}

const needAgent = (): RunningAgent => {
  if (agent === undefined) throw new Error("this process runs no agent");
  return agent;
};

serveCommands(
  {
    memory: async () => process.memoryUsage(),
    session: async (): Promise<SessionGrant> => {
      if (cp === undefined) throw new Error("this process runs no control plane");
      const opened = await cp.sessions.open(
        { kind: "api-key", id: "bench", claims: {} },
        { connection: "claude", ttlSeconds: 3600 },
      );
      return { connectionUrl: opened.proxyUrl, token: opened.token };
    },
    recording: async (): Promise<RecordingState> => {
      const { spool } = needAgent();
      return { pending: spool.pending, ackedSeq: spool.ackedSeq };
    },
    drain: async (): Promise<DrainResult> => {
      const running = needAgent();
      const pendingBefore = running.spool.pending;
      const started = performance.now();
      await running.link.whenDrained();
      return { pendingBefore, ms: performance.now() - started, ackedSeq: running.spool.ackedSeq };
    },
  },
  async () => {
    await agent?.stop(1000);
    await cp?.stop();
    root.flush();
    if (!values["keep-data"]) await rm(dataDir, { recursive: true, force: true });
  },
);

const info: GatewayInfo = {
  pid: process.pid,
  role,
  grpcAddress,
  controlPlaneUrl: cp?.httpUrl ?? "",
  agentToken,
  dataDir,
};
process.stdout.write(`${JSON.stringify(info)}\n`);
