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
import { joinHostPort, splitHostPort } from "@gatehouse/proto/address";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { AgentAccounts } from "./agents/accounts.js";
import { buildAgentConfig } from "./agents/config.js";
import { AgentRegistry } from "./agents/registry.js";
import { RevocationRelay } from "./agents/revocations.js";
import { createApi } from "./api/app.js";
import { AuditLog } from "./audit/log.js";
import type { ControlPlaneConfig } from "./config.js";
import { privateDataDir } from "./data-dir.js";
import { createAgentLinkServer, listenAgentLink } from "./grpc/agent-link.js";
import { ApiKeyAuthenticator } from "./identity/principals.js";
import { SigningKeys } from "./identity/signing-keys.js";
import { createControlPlaneMetrics } from "./metrics.js";
import { SessionFeed } from "./sessions/feed.js";
import { RetentionJob } from "./sessions/retention.js";
import { SessionService } from "./sessions/service.js";
import { openStore } from "./store/open.js";
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

export async function startControlPlane(deps: ControlPlaneDeps): Promise<RunningControlPlane> {
  const store = await openStore(deps.config.store, deps.dataDir);
  // What has started so far, to be stopped in reverse if a later step fails (a bad key
  // file, a port in use): nothing may be left holding the process open.
  const undo: Array<() => unknown> = [() => store.close()];
  try {
    return await startOn(store, deps, undo);
  } catch (error) {
    for (const step of undo.reverse()) {
      try {
        await step();
      } catch {
        // The start-up error is the one to report.
      }
    }
    throw error;
  }
}

async function startOn(
  store: Store,
  deps: ControlPlaneDeps,
  undo: Array<() => unknown>,
): Promise<RunningControlPlane> {
  const { config } = deps;
  const now = deps.now ?? Date.now;
  await privateDataDir(deps.dataDir, deps.log("cp"));
  const keys = await SigningKeys.load(
    config.signing.keyFile ?? join(deps.dataDir, "signing-key.jwk"),
    deps.log("cp.keys"),
  );
  const audit = new AuditLog({ store, now });
  const agents = new AgentRegistry();
  const feed = new SessionFeed();
  const metrics = createControlPlaneMetrics(deps.registry, agents);
  const sessions = new SessionService({
    store,
    keys,
    agents,
    feed,
    audit,
    connections: config.connections,
    limits: config.sessions,
    now,
  });
  const accounts = new AgentAccounts({
    store,
    registry: agents,
    audit,
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
  undo.push(() => revocations.stop());
  const { closedSessionsDays, checkIntervalMinutes } = config.retention;
  const retention =
    closedSessionsDays === undefined
      ? null
      : new RetentionJob({
          store,
          audit,
          keepMs: closedSessionsDays * 86_400_000,
          intervalMs: checkIntervalMinutes * 60_000,
          now,
          logger: deps.log("cp.retention"),
        });

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
  undo.push(() => grpcServer.forceShutdown());
  const grpcPort = await listenAgentLink(grpcServer, config.grpc.listen, config.grpc.tls);

  const api = createApi({
    sessions,
    accounts,
    audit,
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
        // /readyz answers anyone: the store's address and error go to the log only.
        deps.log("cp.api").warn({ err: error }, "not ready: the store is unreachable");
        reasons.push("store unreachable (the control plane's log says why)");
      }
      if (deps.readyNeedsAgent && agents.size === 0) reasons.push("no agent is linked yet");
      return reasons;
    },
    logger: deps.log("cp.api"),
    now,
    followPollMs: 1000,
  });
  const http: Server = createServer(api.callback());
  const httpListen = splitHostPort(config.http.listen);
  await new Promise<void>((resolve, reject) => {
    http.once("error", reject);
    http.listen(httpListen.port, httpListen.host, () => resolve());
  });
  const boundHttp = (http.address() as AddressInfo).port;
  retention?.start();

  return {
    httpUrl: `http://${joinHostPort(httpListen.host, boundHttp)}`,
    grpcAddress: joinHostPort(splitHostPort(config.grpc.listen).host, grpcPort),
    store,
    accounts,
    sessions,
    agents,
    async stop() {
      const httpClosed = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      grpcServer.forceShutdown();
      await httpClosed;
      await retention?.stop();
      await revocations.stop();
      await store.close();
    },
  };
}
