/**
 * Composition root of the control plane: opens the store, loads the signing
 * keys and wires the domain services to the REST API and the AgentLink server.
 * The process entry (cli/) reads the environment and configuration and passes
 * them in.
 */
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { joinHostPort, splitHostPort } from "@gatehouse/proto/address";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { AgentAccounts } from "./agents/accounts.js";
import { buildAgentConfig } from "./agents/config.js";
import { AgentRegistry } from "./agents/registry.js";
import { RevocationRelay } from "./agents/revocations.js";
import { createApi } from "./api/app.js";
import type { SignInRouteDeps } from "./api/login.js";
import { Approvals } from "./approvals/service.js";
import { ApprovalWebhooks } from "./approvals/webhooks.js";
import { AuditLog, SYSTEM_ACTOR } from "./audit/log.js";
import type { AdminLoginConfig, ControlPlaneConfig } from "./config.js";
import { privateDataDir } from "./data-dir.js";
import { createAgentLinkServer, listenAgentLink } from "./grpc/agent-link.js";
import { AdminSignIn } from "./identity/admin-login.js";
import { ApiKeys } from "./identity/api-keys.js";
import { RunnerIdentities } from "./identity/runner-identity.js";
import { SigningKeys } from "./identity/signing-keys.js";
import { createControlPlaneMetrics } from "./metrics.js";
import { Policies } from "./policy/policies.js";
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
  keys: SigningKeys;
  policies: Policies;
  approvals: Approvals;
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
  const audit = new AuditLog({ store, now });
  const { rotationDays } = config.signing;
  const keys = await SigningKeys.load(
    config.signing.keyFile ?? join(deps.dataDir, "signing-key.jwk"),
    deps.log("cp.keys"),
    {
      everyMs: rotationDays === 0 ? null : rotationDays * 86_400_000,
      now,
      announce: async (kid) => {
        await audit.record(SYSTEM_ACTOR, "signing.rotate", kid, {
          reason: `the newest key was ${rotationDays} days old`,
        });
      },
    },
  );
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

  const policies = new Policies({
    fromConfig: config.policies,
    connections: config.connections.map((c) => c.name),
    store,
    audit,
    now,
    logger: deps.log("cp.policies"),
  });
  await policies.start();
  undo.push(() => policies.stop());
  const approvals = new Approvals({
    store,
    audit,
    announcer: new ApprovalWebhooks(config.approvals.webhooks, { logger: deps.log("cp.webhooks") }),
    timeoutSeconds: config.approvals.timeoutSeconds,
    now,
    logger: deps.log("cp.approvals"),
  });
  approvals.start();
  undo.push(() => approvals.stop());

  const agentConfig = (served: readonly string[]) =>
    buildAgentConfig(
      {
        connections: config.connections,
        maskingPatterns: config.masking.custom,
        policies: policies.effective(),
        approvalTimeoutSeconds: config.approvals.timeoutSeconds,
        keys,
        store,
      },
      served,
      now(),
    );
  /** Pushes the whole configuration again to every linked agent. */
  const pushConfig = (what: string) => {
    for (const agent of agents.list()) {
      agentConfig(agent.connections).then(
        (pushed) => agent.send({ config: pushed }),
        (error: unknown) => deps.log("cp.link").error({ err: error }, `could not push ${what} to an agent`),
      );
    }
  };
  // A rotated key reaches every linked agent before it signs anything.
  keys.on("changed", () => pushConfig("new token keys"));
  policies.on("changed", () => pushConfig("changed policies"));
  keys.start();
  undo.push(() => keys.stop());

  const grpcServer = createAgentLinkServer({
    store,
    sessions,
    approvals,
    registry: agents,
    agentConfig,
    controlPlaneId: randomUUID(),
    heartbeatIntervalMs: 10_000,
    helloTimeoutMs: 10_000,
    metrics,
    logger: deps.log("cp.link"),
    now,
  });
  undo.push(() => grpcServer.forceShutdown());
  const grpcPort = await listenAgentLink(grpcServer, config.grpc.listen, config.grpc.tls);

  const apiKeys = new ApiKeys({
    store,
    audit,
    bootstrapAdminToken: deps.adminToken,
    logger: deps.log("cp.api"),
    now,
  });
  const api = createApi({
    sessions,
    accounts,
    audit,
    keys,
    apiKeys,
    signIn: await adminSignIn(config.identity.admin, apiKeys, deps.log("cp.sign-in")),
    runners: new RunnerIdentities(config.identity.providers, { now, logger: deps.log("cp.identity") }),
    policies,
    approvals,
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
    keys,
    policies,
    approvals,
    async stop() {
      const httpClosed = new Promise<void>((resolve) => http.close(() => resolve()));
      http.closeAllConnections();
      grpcServer.forceShutdown();
      await httpClosed;
      await retention?.stop();
      await approvals.stop();
      await policies.stop();
      await keys.stop();
      await revocations.stop();
      await store.close();
    },
  };
}

/** People's sign-in through OIDC, when `identity.admin` is configured: each gets a login key. */
async function adminSignIn(
  config: AdminLoginConfig | undefined,
  apiKeys: ApiKeys,
  logger: Logger,
): Promise<SignInRouteDeps | undefined> {
  if (!config) return undefined;
  const { clientSecretFile } = config;
  const clientSecret =
    clientSecretFile === undefined
      ? undefined
      : await readFile(clientSecretFile, "utf8").catch((error: NodeJS.ErrnoException) => {
          throw new GatehouseError(
            "GATE_CONFIG_INVALID",
            `cannot read identity.admin.clientSecretFile ${clientSecretFile} (${error.code}); check the path and its permissions`,
          );
        });
  return {
    signIn: new AdminSignIn(config, { clientSecret, logger }),
    issueLoginKey: (identity) => apiKeys.issueLogin(identity, config.loginTtlSeconds),
  };
}
