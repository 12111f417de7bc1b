/**
 * Composition root of the control plane: opens the store, loads the signing
 * keys and wires the domain services to the REST API and the AgentLink server.
 * The process entry (cli/) reads the environment and configuration and passes
 * them in.
 */
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { AgentAccounts } from "./agents/accounts.js";
import { buildAgentConfig } from "./agents/config.js";
import { AgentRegistry } from "./agents/registry.js";
import { RevocationRelay } from "./agents/revocations.js";
import { createApi } from "./api/app.js";
import type { ControlPlaneConfig } from "./config.js";
import { createAgentLinkServer, listenAgentLink } from "./grpc/agent-link.js";
import { ApiKeyAuthenticator } from "./identity/principals.js";
import { SigningKeys } from "./identity/signing-keys.js";
import { createControlPlaneMetrics } from "./metrics.js";
import { SessionFeed } from "./sessions/feed.js";
import { SessionService } from "./sessions/service.js";
import { SqliteStore } from "./store/sqlite/store.js";
import type { Store } from "./store/types.js";

export type { ControlPlaneConfig } from "./config.js";
export { controlPlaneConfigSchema } from "./config.js";

export interface ControlPlaneDeps {
  config: ControlPlaneConfig;
  /** Where the embedded store lives unless `store.path` says otherwise. */
  dataDir: string;
  /** `GATEHOUSE_ADMIN_TOKEN`: accepted as an admin API key. */
  adminToken?: string | undefined;
  /** A logger per component (levels are set per component by the caller). */
  log: (component: string) => Logger;
  registry: Registry;
  /** Report not-ready until at least one agent is linked (`gatehouse up`). */
  readyNeedsAgent?: boolean;
  now?: () => number;
}

export interface RunningControlPlane {
  httpUrl: string;
  grpcAddress: string;
  store: Store;
  accounts: AgentAccounts;
  sessions: SessionService;
  agents: AgentRegistry;
  /** Stops the listeners (ending agent links) and closes the store. */
  stop(): Promise<void>;
}

function hostOf(address: string): string {
  return address.slice(0, address.lastIndexOf(":"));
}

export async function startControlPlane(deps: ControlPlaneDeps): Promise<RunningControlPlane> {
  const { config } = deps;
  const now = deps.now ?? Date.now;
  const store = await SqliteStore.open({
    path:
      (config.store.type === "sqlite" ? config.store.path : undefined) ?? join(deps.dataDir, "gatehouse.db"),
  });
  const keys = await SigningKeys.load(config.signing.keyFile ?? join(deps.dataDir, "signing-key.jwk"));
  const agents = new AgentRegistry();
  const feed = new SessionFeed();
  const metrics = createControlPlaneMetrics(deps.registry, agents);
  const sessions = new SessionService({
    store,
    keys,
    agents,
    feed,
    connections: config.connections,
    limits: config.sessions,
    now,
  });
  const accounts = new AgentAccounts({
    store,
    registry: agents,
    connections: config.connections.map((c) => c.name),
    now,
  });
  // Started before agents can link; passes closes made at other replicas on to this one's agents.
  const revocations = new RevocationRelay({
    store,
    registry: agents,
    now,
    logger: deps.log("cp.revocations"),
  });
  await revocations.start();

  const grpcServer = createAgentLinkServer({
    store,
    sessions,
    registry: agents,
    agentConfig: (served) =>
      buildAgentConfig({ connections: config.connections, keys, store }, served, now()),
    controlPlaneId: randomUUID(),
    heartbeatIntervalMs: 10_000,
    helloTimeoutMs: 10_000,
    metrics,
    logger: deps.log("cp.link"),
    now,
  });
  const grpcPort = await listenAgentLink(grpcServer, config.grpc.listen, config.grpc.tls);

  const api = createApi({
    sessions,
    accounts,
    keys,
    auth: new ApiKeyAuthenticator(deps.adminToken),
    feed,
    registry: deps.registry,
    metrics,
    notReadyReasons: async () => {
      const reasons: string[] = [];
      try {
        await store.ping();
      } catch (error) {
        reasons.push(`store unreachable: ${(error as Error).message}`);
      }
      if (deps.readyNeedsAgent && agents.size === 0) reasons.push("no agent is linked yet");
      return reasons;
    },
    logger: deps.log("cp.api"),
    now,
    followPollMs: 1000,
  });
  const http: Server = createServer(api.callback());
  const [httpHost, httpPort] = [hostOf(config.http.listen), Number(config.http.listen.split(":").pop())];
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(httpPort, httpHost.replace(/^\[|\]$/g, ""), () => resolve());
  });
  const boundHttp = (http.address() as AddressInfo).port;

  return {
    httpUrl: `http://${httpHost}:${boundHttp}`,
    grpcAddress: `${hostOf(config.grpc.listen)}:${grpcPort}`,
    store,
    accounts,
    sessions,
    agents,
    async stop() {
      const httpClosed = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      grpcServer.forceShutdown();
      await httpClosed;
      await revocations.stop();
      await store.close();
    },
  };
}
