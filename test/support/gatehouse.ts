/**
 * Starts a whole Gatehouse in-process for a test: a control plane with its
 * store, one agent linked to it over real gRPC, and a fake Anthropic upstream
 * behind the agent. Everything listens on port 0 in a temp dir.
 *
 * The store is the embedded SQLite one, or, with `GATEHOUSE_TEST_STORE=mongodb`
 * (test/run.mjs runs the harness tests a second time so), a database of its
 * own on a MongoDB server shared by the test file (see mongo-server.ts).
 */
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import Anthropic from "@anthropic-ai/sdk";
import { agentConfigSchema, type RunningAgent, startAgent } from "@gatehouse/agent";
import type { FinishedExchange } from "@gatehouse/agent/proxy/recorder.js";
import {
  controlPlaneConfigSchema,
  type RunningControlPlane,
  startControlPlane,
} from "@gatehouse/control-plane";
import { GatehouseClient, type OpenedSession, type SessionView } from "@gatehouse/sdk";
import { type Logger, pino } from "pino";
import { Registry } from "prom-client";
import { type FakeAnthropic, type FakeAnthropicOptions, startFakeAnthropic } from "./fake-anthropic.js";
import { type MongoServer, startMongoServer } from "./mongo-server.js";

/** Environment variable the test agent reads the upstream key from. */
export const UPSTREAM_KEY_ENV = "GATEHOUSE_TEST_UPSTREAM_KEY";

/** One parsed log line. */
export type LogEntry = Record<string, unknown> & { msg?: string; component?: string };

/** Everything logged during a test, as JSON lines; printed to stderr too when GATEHOUSE_TEST_LOG is set. */
export class LogCapture {
  readonly lines: string[] = [];
  private readonly appended = new EventEmitter<{ line: [] }>();
  readonly stream = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      const text = chunk.toString();
      this.lines.push(text);
      if (process.env.GATEHOUSE_TEST_LOG) process.stderr.write(text);
      this.appended.emit("line");
      done();
    },
  });
  readonly root: Logger;
  readonly log = (component: string) => this.root.child({ component });

  /** `level`: the least level kept (default `GATEHOUSE_TEST_LOG`, else debug). */
  constructor(level?: string) {
    this.root = pino({ level: level ?? process.env.GATEHOUSE_TEST_LOG ?? "debug" }, this.stream);
  }

  /**
   * The first entry at index `from` or later (take `lines.length` before an action to see
   * only what the action logged) that matches `predicate`, as soon as it is logged.
   */
  waitFor(predicate: (entry: LogEntry) => boolean, from = 0): Promise<LogEntry> {
    let next = from;
    const scan = (): LogEntry | undefined => {
      for (; next < this.lines.length; next++) {
        for (const line of (this.lines[next] ?? "").split("\n")) {
          if (line.trim() === "") continue;
          const entry = JSON.parse(line) as LogEntry;
          if (predicate(entry)) {
            next += 1;
            return entry;
          }
        }
      }
      return undefined;
    };
    const found = scan();
    if (found) return Promise.resolve(found);
    return new Promise((resolve) => {
      const onLine = () => {
        const entry = scan();
        if (!entry) return;
        this.appended.off("line", onLine);
        resolve(entry);
      };
      this.appended.on("line", onLine);
    });
  }
}

/** The control plane's AgentLink TLS (`grpc.tls`). */
export interface GrpcTlsOptions {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

/** An agent's TLS towards the control plane (`controlPlane.tls`). */
export interface LinkTlsOptions {
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  serverName?: string;
}

/** How to start an agent; each field defaults to what the harness's own agent uses. */
export interface AgentStartOptions {
  /** The agent token to present (default: the harness's agent account). */
  token?: string;
  /** The control plane's gRPC address as the agent dials it, e.g. through a relay. */
  address?: string;
  /** TLS towards the control plane; null for a plaintext link even when {@link GatehouseOptions.linkTls} is set. */
  tls?: LinkTlsOptions | null;
  /** Wait until the link is ready (default true). */
  waitForLink?: boolean;
}

export interface GatehouseOptions {
  /** The least log level kept in {@link TestGatehouse.logs} (default debug). */
  logLevel?: string;
  fake?: FakeAnthropicOptions;
  /** Extra agent config (merged over the defaults). */
  agent?: Record<string, unknown>;
  /** Extra control-plane config (merged over the defaults). */
  controlPlane?: Record<string, unknown>;
  /** Agent environment; the upstream key is added. */
  env?: Record<string, string>;
  /** Connections besides `claude` (which points at the fake). */
  connections?: Array<Record<string, unknown>>;
  /** Serve the AgentLink over TLS (kept across control-plane restarts). */
  grpcTls?: GrpcTlsOptions;
  /** TLS settings of agents by default (see {@link AgentStartOptions.tls}). */
  linkTls?: LinkTlsOptions;
}

/** The `store` config of harness control planes: SQLite, or a new database on the shared MongoDB server. */
async function testStore(): Promise<{ config: Record<string, unknown>; drop: () => Promise<void> }> {
  const kind = process.env.GATEHOUSE_TEST_STORE ?? "sqlite";
  if (kind === "sqlite") return { config: { type: "sqlite" }, drop: async () => {} };
  if (kind !== "mongodb") throw new Error(`GATEHOUSE_TEST_STORE is ${kind}; use sqlite or mongodb`);
  mongoServer ??= startMongoServer();
  const server = await mongoServer;
  const database = server.uniqueDatabase();
  return {
    config: { type: "mongodb", uri: server.uri, database },
    drop: () => server.dropDatabase(database),
  };
}
/** Started by the first harness of a test file that needs it; it ends with the file's process. */
let mongoServer: Promise<MongoServer> | undefined;

export class TestGatehouse {
  readonly logs: LogCapture;
  readonly adminToken = `adm_${randomBytes(16).toString("hex")}`;
  cp!: RunningControlPlane;
  agent!: RunningAgent;
  admin!: GatehouseClient;
  /** Added to the control plane's clock, e.g. to issue tokens that are already expired. */
  clockOffsetMs = 0;
  agentToken = "";
  private grpcListen = "127.0.0.1:0";
  private httpListen = "127.0.0.1:0";
  private readonly extraAgents: RunningAgent[] = [];

  /** The control plane's `store` config, for another replica over the same store. */
  get storeConfig(): Record<string, unknown> {
    return this.store.config;
  }

  private constructor(
    readonly dir: string,
    readonly fake: FakeAnthropic,
    private readonly store: Awaited<ReturnType<typeof testStore>>,
    private readonly options: GatehouseOptions,
  ) {
    this.logs = new LogCapture(options.logLevel);
  }

  static async start(options: GatehouseOptions = {}): Promise<TestGatehouse> {
    const store = await testStore();
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-test-"));
    const fake = await startFakeAnthropic(options.fake);
    const gh = new TestGatehouse(dir, fake, store, options);
    try {
      await gh.startControlPlane();
      gh.agentToken = (await gh.cp.accounts.create("test", "test-agent")).token;
      await gh.startAgent();
    } catch (error) {
      // A failed start must not leave servers holding the test process open.
      await gh.stop();
      throw error;
    }
    return gh;
  }

  /** Resolves once `agent` is linked; fails after 10 s with what its link last logged. */
  private async linked(agent: RunningAgent): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        agent.link.whenState("ready"),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            const last = this.logs.lines.filter((l) => l.includes('"agent.link"')).slice(-3);
            reject(new Error(`the agent did not link in 10 s; its last link log lines:\n${last.join("")}`));
          }, 10_000);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Starts (or restarts) the control plane on the same data dir and ports. */
  async startControlPlane(): Promise<void> {
    this.cp = await startControlPlane({
      config: controlPlaneConfigSchema.parse({
        connections: [
          {
            name: "claude",
            type: "anthropic",
            upstream: this.fake.url,
            credential: { env: UPSTREAM_KEY_ENV },
          },
          ...(this.options.connections ?? []),
        ],
        store: this.store.config,
        http: { listen: this.httpListen },
        grpc: { listen: this.grpcListen, ...(this.options.grpcTls ? { tls: this.options.grpcTls } : {}) },
        ...this.options.controlPlane,
      }),
      dataDir: this.dir,
      adminToken: this.adminToken,
      log: this.logs.log,
      registry: new Registry(),
      now: () => Date.now() + this.clockOffsetMs,
    });
    // A restart must come back where agents and clients expect it.
    this.grpcListen = this.cp.grpcAddress;
    this.httpListen = this.cp.httpUrl.replace("http://", "");
    this.admin = new GatehouseClient({ url: this.cp.httpUrl, token: this.adminToken });
  }

  /**
   * Starts (or restarts) the harness's agent on the same spool dir; unless told
   * otherwise, resolves once it is linked.
   */
  async startAgent(options: AgentStartOptions = {}): Promise<RunningAgent> {
    this.agent = await this.launchAgent(options, this.dir, this.logs.log);
    if (options.waitForLink !== false) await this.linked(this.agent);
    return this.agent;
  }

  /**
   * Starts another agent, with its own spool under the harness dir and its log
   * lines tagged `agent: name`; the harness stops it in {@link stop}.
   */
  async startExtraAgent(name: string, options: AgentStartOptions = {}): Promise<RunningAgent> {
    const dataDir = join(this.dir, "agents", name);
    await mkdir(dataDir, { recursive: true });
    const agent = await this.launchAgent(options, dataDir, (component) =>
      this.logs.root.child({ component, agent: name }),
    );
    this.extraAgents.push(agent);
    if (options.waitForLink !== false) await this.linked(agent);
    return agent;
  }

  private async launchAgent(
    options: AgentStartOptions,
    dataDir: string,
    log: (component: string) => Logger,
  ): Promise<RunningAgent> {
    const tls = options.tls === undefined ? this.options.linkTls : (options.tls ?? undefined);
    const agent = await startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: options.address ?? this.cp.grpcAddress, ...(tls ? { tls } : {}) },
        proxy: { listen: "127.0.0.1:0" },
        ...this.options.agent,
      }),
      token: options.token ?? this.agentToken,
      dataDir,
      env: { [UPSTREAM_KEY_ENV]: this.fake.apiKey, ...this.options.env },
      log,
      registry: new Registry(),
    });
    // Tests stop agents themselves too; stopping one twice must not fail the harness's own stop.
    let stopping: Promise<void> | undefined;
    return { ...agent, stop: (graceMs) => (stopping ??= agent.stop(graceMs)) };
  }

  openSession(connection = "claude", ttlSeconds?: number): Promise<OpenedSession> {
    return this.admin.openSession({ connection, ...(ttlSeconds ? { ttlSeconds } : {}) });
  }

  /** The real Anthropic SDK, pointed at the agent with a session token, as a CI runner would use it. */
  anthropic(session: OpenedSession, options: { useApiKey?: boolean } = {}): Anthropic {
    return new Anthropic({
      baseURL: session.proxyUrl,
      ...(options.useApiKey ? { apiKey: session.token } : { apiKey: null, authToken: session.token }),
      maxRetries: 0,
    });
  }

  /** Resolves when the agent has recorded the end of an exchange of `sessionId` (call before causing it). */
  exchangeFinished(sessionId: string): Promise<FinishedExchange> {
    return new Promise((resolve) => {
      const listener = (exchange: FinishedExchange) => {
        if (exchange.sessionId !== sessionId) return;
        this.agent.exchanges.off("finished", listener);
        resolve(exchange);
      };
      this.agent.exchanges.on("finished", listener);
    });
  }

  /** The session as the REST API shows it, once every recorded event is durable in the store. */
  async record(sessionId: string): Promise<SessionView> {
    await this.agent.link.whenDrained();
    return this.admin.getSession(sessionId);
  }

  async stop(): Promise<void> {
    for (const agent of this.extraAgents) await agent.stop(1000);
    await this.agent?.stop(1000);
    try {
      await this.cp?.stop();
    } finally {
      await this.store.drop();
      await this.fake.close();
      await rm(this.dir, { recursive: true, force: true });
    }
  }
}
