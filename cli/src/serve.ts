/**
 * The long-running commands: `up` (control plane + one agent + embedded store
 * in one process), `control-plane` and `agent` (the split deployment).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { AGENT_NODE_OPTIONS, agentConfigSchema, proxyConfigSchema } from "@gatehouse/agent/config.js";
import { SYSTEM_ACTOR } from "@gatehouse/control-plane/audit/log.js";
import { controlPlaneConfigObject, ruleConnectionsExist } from "@gatehouse/control-plane/config.js";
import { Registry } from "prom-client";
import type { z } from "zod";
import { ConfigError, loadConfig, logSchema } from "./config.js";
import { createLogging } from "./logging.js";

export interface ServeFlags {
  config: string;
  data: string;
  http?: string | undefined;
  grpc?: string | undefined;
  proxy?: string | undefined;
}

type Env = Readonly<Record<string, string | undefined>>;

const upConfigSchema = controlPlaneConfigObject
  .extend({
    proxy: proxyConfigSchema.default(proxyConfigSchema.parse({})),
    spool: agentConfigSchema.shape.spool,
    /** The agent's Vault, for connections whose credential is `{vault: …}`. */
    vault: agentConfigSchema.shape.vault,
    log: logSchema,
  })
  .superRefine(ruleConnectionsExist);

const controlPlaneFileSchema = controlPlaneConfigObject
  .extend({ log: logSchema })
  .superRefine(ruleConnectionsExist);
const agentFileSchema = agentConfigSchema.extend({ log: logSchema });

// Each process loads only the half it runs: an agent has no use for the store's native
// library or the REST stack (some 14 MB), a control plane none for the proxy.
const loadAgent = () => import("@gatehouse/agent");
const loadControlPlane = () => import("@gatehouse/control-plane");

/** This command's entry point, which `up` runs again as its agent. */
const CLI_MAIN = fileURLToPath(new URL("./main.js", import.meta.url));

/** Name of the agent account `up` creates for its own agent on each start. */
const LOCAL_AGENT = "local-agent";

function logging(settings: z.infer<typeof logSchema>, env: Env) {
  const level = env.GATEHOUSE_LOG_LEVEL;
  const parsed = logSchema.unwrap().shape.level.safeParse(level);
  return createLogging({
    level: parsed.success && level ? parsed.data : settings.level,
    components: settings.components,
  });
}

/** The admin token: GATEHOUSE_ADMIN_TOKEN, or one generated once and kept in the data dir. */
async function adminToken(dataDir: string, env: Env): Promise<{ token: string; source: string }> {
  if (env.GATEHOUSE_ADMIN_TOKEN) return { token: env.GATEHOUSE_ADMIN_TOKEN, source: "GATEHOUSE_ADMIN_TOKEN" };
  const file = join(dataDir, "admin-token");
  try {
    return { token: (await readFile(file, "utf8")).trim(), source: file };
  } catch {
    const token = `gak_${randomBytes(32).toString("base64url")}`;
    await writeFile(file, `${token}\n`, { mode: 0o600 });
    return { token, source: file };
  }
}

/** Resolves on SIGINT or SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
}

async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(message)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `gatehouse up`: the control plane and its embedded store in this process,
 * one agent in a child process (so the proxy's event loop never waits on the
 * store's commits). The child is the `gatehouse agent` command with a
 * generated configuration; it reports over IPC once it is linked.
 */
export async function up(flags: ServeFlags, env: Env): Promise<void> {
  const file = await loadConfig(upConfigSchema, flags.config);
  const log = logging(file.log, env);
  await mkdir(flags.data, { recursive: true, mode: 0o700 });
  const admin = await adminToken(flags.data, env);
  const { startControlPlane } = await loadControlPlane();
  const cp = await startControlPlane({
    config: {
      connections: file.connections,
      identity: file.identity,
      store: file.store,
      sessions: file.sessions,
      signing: file.signing,
      retention: file.retention,
      masking: file.masking,
      policies: file.policies,
      approvals: file.approvals,
      http: { listen: flags.http ?? file.http.listen },
      grpc: { listen: flags.grpc ?? file.grpc.listen, tls: file.grpc.tls },
    },
    dataDir: flags.data,
    adminToken: admin.token,
    log,
    registry: new Registry(),
    readyNeedsAgent: true,
  });
  let agent: AgentChild | undefined;
  try {
    for (const old of await cp.accounts.list()) {
      if (old.name === LOCAL_AGENT && old.revokedAt === null) await cp.accounts.revoke(SYSTEM_ACTOR, old.id);
    }
    const { token } = await cp.accounts.create(SYSTEM_ACTOR, LOCAL_AGENT);
    const agentConfig = join(flags.data, "up-agent.json");
    await writeFile(
      agentConfig,
      JSON.stringify({
        controlPlane: { address: cp.grpcAddress },
        proxy: { ...file.proxy, listen: flags.proxy ?? file.proxy.listen },
        spool: file.spool,
        vault: file.vault,
        log: file.log,
      }),
      { mode: 0o600 },
    );
    agent = await AgentChild.start(agentConfig, flags.data, { ...env, GATEHOUSE_AGENT_TOKEN: token });
  } catch (error) {
    await agent?.stop();
    await cp.stop();
    throw error;
  }
  const proxyUrl = agent.proxyUrl;
  const proxies = file.connections.map(
    (c) => `    ${c.name.padEnd(14)} ${proxyUrl}/c/${c.name}  →  ${c.upstream}`,
  );
  process.stderr.write(
    [
      "Gatehouse is up.",
      `  REST API       ${cp.httpUrl}`,
      `  AgentLink      ${cp.grpcAddress}`,
      `  Agent proxy    ${proxyUrl}  (pid ${agent.pid})`,
      ...proxies,
      `  Data           ${flags.data}`,
      `  Admin token    ${admin.source === "GATEHOUSE_ADMIN_TOKEN" ? "from GATEHOUSE_ADMIN_TOKEN" : `in ${admin.source}`}`,
      "",
      `Try: gatehouse exec --connection ${file.connections[0]?.name ?? "claude"} -- claude -p "hello"`,
      "",
    ].join("\n"),
  );
  const ended = await Promise.race([untilSignal(), agent.exited.then((code) => ({ agentExited: code }))]);
  if (typeof ended === "object") {
    await cp.stop();
    throw new Error(`the agent (pid ${agent.pid}) exited unexpectedly with ${ended.agentExited}; stopping`);
  }
  process.stderr.write("Stopping: letting running requests finish and recorded events reach the store…\n");
  // The agent drains its spool into the store before the control plane goes.
  await agent.stop();
  await cp.stop();
}

/** The agent process of `gatehouse up`. */
class AgentChild {
  private constructor(
    private readonly child: ChildProcess,
    readonly proxyUrl: string,
    readonly exited: Promise<string>,
  ) {}

  get pid(): number | undefined {
    return this.child.pid;
  }

  static async start(configFile: string, dataDir: string, env: Env): Promise<AgentChild> {
    const child = spawn(
      process.execPath,
      [
        ...process.execArgv,
        ...AGENT_NODE_OPTIONS,
        CLI_MAIN,
        "agent",
        "--config",
        configFile,
        "--data",
        dataDir,
      ],
      {
        env,
        stdio: ["ignore", "inherit", "inherit", "ipc"],
      },
    );
    const exited = new Promise<string>((resolve) => {
      child.once("exit", (code, signal) => resolve(signal ? `signal ${signal}` : `status ${code}`));
    });
    const ready = new Promise<string>((resolve, reject) => {
      child.once("message", (message: { proxyUrl?: string }) => resolve(String(message.proxyUrl)));
      void exited.then((how) =>
        reject(new Error(`the agent exited (${how}) before it linked to the control plane`)),
      );
    });
    try {
      const proxyUrl = await withTimeout(
        ready,
        15_000,
        "the agent did not link to the control plane in 15 s",
      );
      return new AgentChild(child, proxyUrl, exited);
    } catch (error) {
      child.kill("SIGKILL");
      throw error;
    }
  }

  /** Asks the agent to stop (it drains its spool first) and waits until it has. */
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGTERM");
    await this.exited;
  }
}

export async function controlPlane(flags: ServeFlags, env: Env): Promise<void> {
  const file = await loadConfig(controlPlaneFileSchema, flags.config);
  const { log: logSettings, ...config } = file;
  const log = logging(logSettings, env);
  if (!env.GATEHOUSE_ADMIN_TOKEN) {
    log("cp").warn(
      "GATEHOUSE_ADMIN_TOKEN is not set: only API keys made earlier, people's sign-ins (identity.admin) and runner tokens can use the REST API",
    );
  }
  const { startControlPlane } = await loadControlPlane();
  const cp = await startControlPlane({
    config: {
      ...config,
      http: { listen: flags.http ?? config.http.listen },
      grpc: { ...config.grpc, listen: flags.grpc ?? config.grpc.listen },
    },
    dataDir: flags.data,
    adminToken: env.GATEHOUSE_ADMIN_TOKEN,
    log,
    registry: new Registry(),
  });
  log("cp").info({ rest: cp.httpUrl, agentLink: cp.grpcAddress }, "control plane listening");
  await untilSignal();
  await cp.stop();
}

export async function agent(flags: ServeFlags, env: Env): Promise<void> {
  const file = await loadConfig(agentFileSchema, flags.config);
  const { log: logSettings, ...config } = file;
  const log = logging(logSettings, env);
  let token = env.GATEHOUSE_AGENT_TOKEN;
  if (!token && config.controlPlane.tokenFile) {
    try {
      token = (await readFile(config.controlPlane.tokenFile, "utf8")).trim();
    } catch (error) {
      throw new ConfigError(
        `cannot read controlPlane.tokenFile ${config.controlPlane.tokenFile}: ${(error as NodeJS.ErrnoException).code}`,
      );
    }
  }
  if (!token) {
    throw new ConfigError(
      "no agent token: set controlPlane.tokenFile in the agent config or GATEHOUSE_AGENT_TOKEN (create one with `gatehouse agents create <name>`)",
    );
  }
  const { startAgent } = await loadAgent();
  const running = await startAgent({
    config: { ...config, proxy: { ...config.proxy, listen: flags.proxy ?? config.proxy.listen } },
    token,
    dataDir: flags.data,
    env,
    log,
    registry: new Registry(),
  });
  log("agent").info(
    { proxy: running.proxyUrl, controlPlane: config.controlPlane.address },
    "agent listening",
  );
  // Started by `gatehouse up`: report once linked, so that it can say where the proxy is,
  // and stop when `up` goes away (its IPC channel closes).
  const parentGone = new Promise<string>((resolve) =>
    process.once("disconnect", () => resolve("gatehouse up went away")),
  );
  if (process.send) {
    await withTimeout(
      running.link.whenState("ready"),
      15_000,
      "the agent did not link to the control plane in 15 s",
    );
    process.send({ proxyUrl: running.proxyUrl });
  }
  const why = await Promise.race([untilSignal(), parentGone]);
  log("agent").info({ why }, "agent stopping");
  await running.stop(10_000);
  // The channel to `up` would keep this process alive.
  if (process.connected) process.disconnect();
}
