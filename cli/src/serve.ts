/**
 * The long-running commands: `up` (control plane + one agent + embedded store
 * in one process), `control-plane` and `agent` (the split deployment).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { agentConfigSchema, proxyConfigSchema, type RunningAgent, startAgent } from "@gatehouse/agent";
import { controlPlaneConfigSchema, startControlPlane } from "@gatehouse/control-plane";
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

const upConfigSchema = controlPlaneConfigSchema.extend({
  proxy: proxyConfigSchema.default(proxyConfigSchema.parse({})),
  spool: agentConfigSchema.shape.spool,
  log: logSchema,
});

const controlPlaneFileSchema = controlPlaneConfigSchema.extend({ log: logSchema });
const agentFileSchema = agentConfigSchema.extend({ log: logSchema });

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

export async function up(flags: ServeFlags, env: Env): Promise<void> {
  const file = await loadConfig(upConfigSchema, flags.config);
  const log = logging(file.log, env);
  await mkdir(flags.data, { recursive: true, mode: 0o700 });
  const admin = await adminToken(flags.data, env);
  const registry = new Registry();
  const cp = await startControlPlane({
    config: {
      connections: file.connections,
      store: file.store,
      sessions: file.sessions,
      http: { listen: flags.http ?? file.http.listen },
      grpc: { listen: flags.grpc ?? file.grpc.listen, tls: file.grpc.tls },
    },
    dataDir: flags.data,
    adminToken: admin.token,
    log,
    registry,
    readyNeedsAgent: true,
  });
  let agent: RunningAgent | undefined;
  try {
    for (const old of await cp.accounts.list()) {
      if (old.name === LOCAL_AGENT && old.revokedAt === null) await cp.accounts.revoke(old.id);
    }
    const { token } = await cp.accounts.create(LOCAL_AGENT);
    agent = await startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: cp.grpcAddress },
        proxy: { ...file.proxy, listen: flags.proxy ?? file.proxy.listen },
        spool: file.spool,
      }),
      token,
      dataDir: flags.data,
      env,
      log,
      registry,
    });
    await withTimeout(
      agent.link.whenState("ready"),
      10_000,
      "the agent did not link to the control plane in 10 s",
    );
  } catch (error) {
    await agent?.stop(0);
    await cp.stop();
    throw error;
  }
  const proxies = file.connections.map(
    (c) => `    ${c.name.padEnd(14)} ${agent.proxyUrl}/c/${c.name}  →  ${c.upstream}`,
  );
  process.stderr.write(
    [
      "Gatehouse is up.",
      `  REST API       ${cp.httpUrl}`,
      `  AgentLink      ${cp.grpcAddress}`,
      `  Agent proxy    ${agent.proxyUrl}`,
      ...proxies,
      `  Data           ${flags.data}`,
      `  Admin token    ${admin.source === "GATEHOUSE_ADMIN_TOKEN" ? "from GATEHOUSE_ADMIN_TOKEN" : `in ${admin.source}`}`,
      "",
      `Try: gatehouse exec --connection ${file.connections[0]?.name ?? "claude"} -- claude -p "hello"`,
      "",
    ].join("\n"),
  );
  await untilSignal();
  process.stderr.write("Stopping: letting running requests finish and recorded events reach the store…\n");
  await agent.stop(10_000);
  await cp.stop();
}

export async function controlPlane(flags: ServeFlags, env: Env): Promise<void> {
  const file = await loadConfig(controlPlaneFileSchema, flags.config);
  const { log: logSettings, ...config } = file;
  const log = logging(logSettings, env);
  if (!env.GATEHOUSE_ADMIN_TOKEN) {
    log("cp").warn("GATEHOUSE_ADMIN_TOKEN is not set: no API key can use the REST API");
  }
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
  await untilSignal();
  await running.stop(10_000);
}
