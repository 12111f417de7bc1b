/**
 * Composition root of an agent: wires the spool, the link to the control
 * plane, token verification, credentials and the proxy listener. The process
 * entry (cli/) reads the environment and configuration and passes them in.
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import type { Connection__Output, MaskingPattern__Output, Policy__Output } from "@gatehouse/proto";
import { splitHostPort } from "@gatehouse/proto/address";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { ApprovalDesk } from "./approvals/desk.js";
import { type Clock, systemClock } from "./clock.js";
import type { AgentConfig } from "./config.js";
import { CredentialSources, Credentials, EnvCredentialSource } from "./credentials/source.js";
import { AgentLinkClient, type LinkTls } from "./link/link.js";
import { type CustomPattern, Masker, usableMasker } from "./masking/masker.js";
import { createAgentMetrics } from "./metrics.js";
import { PolicySet } from "./policy/policy.js";
import type { FinishedExchange } from "./proxy/recorder.js";
import { createProxyServer } from "./proxy/server.js";
import { UpstreamPool } from "./proxy/upstream.js";
import { Spool } from "./spool/spool.js";
import { TokenVerifier } from "./tokens/verifier.js";
import { VaultCredentialSource } from "./vault/credentials.js";

export type { AgentConfig } from "./config.js";
export { agentConfigSchema, proxyConfigSchema } from "./config.js";

export const AGENT_VERSION = "0.1.0";

export interface AgentDeps {
  config: AgentConfig;
  /** The agent token the control plane knows this agent by. */
  token: string;
  /** Where the spool lives unless `spool.dir` says otherwise. */
  dataDir: string;
  /** The process environment: credentials with `{env: NAME}` are read from it. */
  env: Readonly<Record<string, string | undefined>>;
  /** A logger per component (levels are set per component by the caller). */
  log: (component: string) => Logger;
  registry: Registry;
  /** Time for Vault's token, lease and secret-cache timing (default: the system clock). */
  clock?: Clock;
}

export interface RunningAgent {
  /** Base URL of the proxy, as advertised to the control plane. */
  proxyUrl: string;
  port: number;
  link: AgentLinkClient;
  spool: Spool;
  verifier: TokenVerifier;
  /** `finished` for every exchange once its last event is in the spool. */
  exchanges: EventEmitter<{ finished: [FinishedExchange] }>;
  /** Stops accepting requests, lets running ones finish (up to `graceMs`), then closes the link and spool. */
  stop(graceMs?: number): Promise<void>;
}

async function readTls(tls: AgentConfig["controlPlane"]["tls"]): Promise<LinkTls | undefined> {
  if (!tls) return undefined;
  const read = (file: string | undefined) => (file ? readFile(file) : Promise.resolve(undefined));
  const [ca, cert, key] = await Promise.all([read(tls.caFile), read(tls.certFile), read(tls.keyFile)]);
  return { ca, cert, key, serverName: tls.serverName };
}

/** The agent's id: configured, or generated once and kept beside the spool. */
async function agentId(config: AgentConfig, spoolDir: string): Promise<string> {
  if (config.agent.id) return config.agent.id;
  const file = join(spoolDir, "agent-id");
  try {
    return (await readFile(file, "utf8")).trim();
  } catch {
    const id = `agent-${randomUUID()}`;
    await writeFile(file, `${id}\n`, { mode: 0o600 });
    return id;
  }
}

/** Waits for `promise`, but no longer than `ms`. */
async function within(promise: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    promise,
    new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, ms)))),
  ]);
  clearTimeout(timer);
}

/**
 * Narrows `dir` to its owner (0700). A directory that does not exist is left alone (with
 * spool.dir elsewhere, the data dir may hold nothing); one the agent may not change (a
 * mounted volume owned by another user) is logged rather than fatal: the files the agent
 * writes in it are 0600 regardless.
 */
async function makePrivate(dir: string, log: Logger): Promise<void> {
  try {
    await chmod(dir, 0o700);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    log.warn({ dir, code }, "could not make a directory private (0700); make it the agent user's alone");
  }
}

/** A pushed pattern as the masker takes it; 0 on the wire leaves the length to the masker's default. */
function customPattern(p: MaskingPattern__Output): CustomPattern {
  return { name: p.name, pattern: p.pattern, ...(p.maxLength > 0 ? { maxLength: p.maxLength } : {}) };
}

/** The names of pushed connections whose credential is in Vault. */
function vaultConnections(connections: readonly Connection__Output[]): string[] {
  return connections.filter((c) => c.credential?.vault).map((c) => c.name);
}

export async function startAgent(deps: AgentDeps): Promise<RunningAgent> {
  // Before anything else: a Vault the agent cannot log in to is a configuration to fix now,
  // not a failure of the first request.
  const vault = deps.config.vault
    ? await VaultCredentialSource.start(deps.config.vault, {
        logger: deps.log("agent.vault"),
        clock: deps.clock ?? systemClock,
      })
    : null;
  try {
    return await startServing(deps, vault);
  } catch (error) {
    // The session would go on renewing its token for an agent that never ran.
    await vault?.stop();
    throw error;
  }
}

async function startServing(deps: AgentDeps, vault: VaultCredentialSource | null): Promise<RunningAgent> {
  const { config } = deps;
  const spoolDir = config.spool.dir ?? join(deps.dataDir, "spool");
  // Spooled events hold prompts and responses: the spool and the data dir around it are the
  // agent user's alone, also when they were made earlier with looser modes (mkdir sets none then).
  await mkdir(spoolDir, { recursive: true, mode: 0o700 });
  const startLog = deps.log("agent");
  await makePrivate(spoolDir, startLog);
  await makePrivate(deps.dataDir, startLog);
  const spool = await Spool.open({ dir: spoolDir, fsyncIntervalMs: config.spool.fsyncIntervalMs });
  const spoolLog = deps.log("agent.spool");
  if (spool.recovery.truncated)
    spoolLog.warn({ truncated: spool.recovery.truncated }, "repaired a torn spool tail");
  if (spool.recovery.pendingRecords > 0) {
    spoolLog.info(
      { pending: spool.recovery.pendingRecords },
      "unacknowledged events found; they will be resent",
    );
  }
  /** Why the spool stopped accepting events, once it has: the agent can record nothing more. */
  let spoolFailure: string | null = null;
  spool.on("error", (error) => {
    spoolFailure = error.message;
    spoolLog.error({ err: error }, "the spool stopped accepting events");
  });

  const verifier = new TokenVerifier();
  let connections: ReadonlyMap<string, Connection__Output> | null = null;
  /** Why the control plane refused this agent, while it does. */
  let refused: string | null = null;
  const upstreams = new UpstreamPool();
  /** Built once per change of the pushed patterns; each exchange keeps the one it started with. */
  let masker = new Masker();
  let maskingPushed = "[]";
  let policies: PolicySet | GatehouseError = PolicySet.empty;
  let policiesPushed = "[]";
  let approvalTimeoutSeconds = 0;
  let link: AgentLinkClient | null = null;
  const approvals = new ApprovalDesk({
    channel: { sendNow: (message) => link?.sendNow(message) ?? false },
    timeoutSeconds: () => approvalTimeoutSeconds,
  });
  const metrics = createAgentMetrics(deps.registry, {
    spoolPending: () => spool.pending,
    linkReady: () => link?.state === "ready",
  });
  const exchanges = new EventEmitter<{ finished: [FinishedExchange] }>();
  const server = createProxyServer({
    verifier,
    credentials: new Credentials(new CredentialSources({ env: new EnvCredentialSource(deps.env), vault })),
    spool,
    onExchangeFinished: (exchange) => {
      metrics.exchanges.inc({
        connection: exchange.connection,
        kind: exchange.kind,
        outcome: String(exchange.outcome).replace("OUTCOME_", "").toLowerCase(),
      });
      exchanges.emit("finished", exchange);
    },
    upstreams,
    limits: config.proxy,
    logger: deps.log("agent.proxy"),
    masker: () => masker,
    policies: () => policies,
    approvals,
    connections: () => connections,
    notReadyReason: () => {
      if (spoolFailure) return `the spool failed, so exchanges cannot be recorded: ${spoolFailure}`;
      if (policies instanceof GatehouseError) return policies.message;
      if (refused) return `the control plane refused this agent's token: ${refused}`;
      return connections
        ? null
        : `no configuration from the control plane at ${config.controlPlane.address} yet`;
    },
    metrics,
    registry: deps.registry,
  });
  const listen = splitHostPort(config.proxy.listen);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const host = listen.host.includes(":") ? `[${listen.host}]` : listen.host;
  const proxyUrl = config.proxy.publicUrl ?? `http://${host === "0.0.0.0" ? "127.0.0.1" : host}:${port}`;

  const linkLog = deps.log("agent.link");
  /**
   * The control plane checked the patterns, but this agent's engine may differ (another Node
   * version): one it cannot compile is logged and skipped, never the end of the link handler.
   */
  const applyMasking = (patterns: readonly MaskingPattern__Output[]) => {
    const pushed = JSON.stringify(patterns);
    // Key rotations push the same patterns again: nothing to rebuild, nothing to log again.
    if (pushed === maskingPushed) return;
    try {
      const built = usableMasker(patterns.map(customPattern));
      for (const { name, reason } of built.rejected) {
        linkLog.error({ pattern: name, reason }, "skipped a masking pattern this agent cannot use");
      }
      masker = built.masker;
      maskingPushed = pushed;
    } catch (error) {
      linkLog.error({ err: error }, "could not apply the pushed masking patterns; keeping the previous ones");
    }
  };
  /**
   * Unlike masking patterns, policies fail closed: a set this agent cannot compile (the control
   * plane's Node accepts a pattern this one does not) refuses every exchange until a set it can
   * compile arrives, rather than serve with rules missing.
   */
  const applyPolicies = (pushed: readonly Policy__Output[]) => {
    const text = JSON.stringify(pushed);
    if (text === policiesPushed) return;
    policiesPushed = text;
    try {
      policies = PolicySet.compile(pushed);
      linkLog.info({ policies: pushed.map((p) => p.name) }, "policies applied");
    } catch (error) {
      const err = asGatehouseError(error);
      policies = new GatehouseError(
        "GATE_CONFIG_INVALID",
        `this agent cannot use the policies the control plane pushed (${err.message}); it refuses every request until they are fixed`,
      );
      linkLog.error(
        { code: err.code, reason: err.message },
        "cannot use the pushed policies; refusing every request until they are fixed",
      );
    }
  };
  link = new AgentLinkClient({
    address: config.controlPlane.address,
    token: deps.token,
    tls: await readTls(config.controlPlane.tls),
    hello: {
      agentId: await agentId(config, spoolDir),
      version: AGENT_VERSION,
      capabilities: ["proxy.anthropic", "spool.v1"],
      connections: [...config.agent.connections],
      proxyUrl,
    },
    spool,
    logger: linkLog,
    onConfig: (pushed) => {
      try {
        verifier.configure(pushed);
      } catch (error) {
        // A key set the agent cannot read must neither end the process (this runs in the link's
        // message handler) nor replace a working configuration: the last good one stays.
        linkLog.error(
          { err: error, code: asGatehouseError(error).code },
          "refused a configuration from the control plane: its token keys cannot be read; keeping the previous one",
        );
        return;
      }
      refused = null;
      // Before the connections: no exchange may start on this configuration without its patterns.
      applyMasking(pushed.maskingPatterns);
      applyPolicies(pushed.policies);
      approvalTimeoutSeconds = pushed.approvalTimeoutSeconds;
      connections = new Map(pushed.connections.map((c) => [c.name, c]));
      const inVault = config.vault ? [] : vaultConnections(pushed.connections);
      if (inVault.length > 0) {
        linkLog.warn(
          { connections: inVault },
          "these connections take their credential from Vault, but this agent has no `vault` configuration: their requests fail until one is added",
        );
      }
      linkLog.info({ connections: [...connections.keys()] }, "configuration received");
    },
    onRevocation: (sessions) => verifier.revoke(sessions),
    onApprovalDecision: (decision) => approvals.decided(decision),
    // A revoked agent must not go on spending the connection's credential on cached configuration.
    onRefused: (reason) => {
      refused = reason;
      connections = null;
    },
  });
  link.onState((state) => {
    if (state === "ready") approvals.relinked();
  });
  link.start();

  const running = link;
  let stopping: Promise<void> | undefined;
  return {
    proxyUrl,
    port,
    link: running,
    spool,
    verifier,
    exchanges,
    stop(graceMs = 10_000) {
      stopping ??= (async () => {
        try {
          const deadline = Date.now() + graceMs;
          const closed = new Promise<void>((resolve) => server.close(() => resolve()));
          server.closeIdleConnections();
          const grace = setTimeout(() => server.closeAllConnections(), graceMs);
          await closed;
          clearTimeout(grace);
          // What was recorded should reach the store now rather than at the next start.
          await within(running.whenDrained(), deadline - Date.now());
          await running.stop();
          try {
            // Rejects with the spool's write failure, if it had one; the pool is closed regardless.
            await spool.close();
          } finally {
            await upstreams.close();
          }
        } finally {
          // After the last request, whatever failed before: revokes the dynamic secrets' leases.
          await vault?.stop();
        }
      })();
      return stopping;
    },
  };
}
