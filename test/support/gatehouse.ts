/**
 * Starts a whole Gatehouse in-process for a test: a control plane with its
 * embedded store, one agent linked to it over real gRPC, and a fake Anthropic
 * upstream behind the agent. Everything listens on port 0 in a temp dir.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import Anthropic from "@anthropic-ai/sdk";
import { agentConfigSchema, type RunningAgent, startAgent } from "@gatehouse/agent";
import {
  controlPlaneConfigSchema,
  type RunningControlPlane,
  startControlPlane,
} from "@gatehouse/control-plane";
import { GatehouseClient, type OpenedSession, type SessionView } from "@gatehouse/sdk";
import { pino } from "pino";
import { Registry } from "prom-client";
import { type FakeAnthropic, type FakeAnthropicOptions, startFakeAnthropic } from "./fake-anthropic.js";

/** Environment variable the test agent reads the upstream key from. */
export const UPSTREAM_KEY_ENV = "GATEHOUSE_TEST_UPSTREAM_KEY";

/** Everything logged during a test, as JSON lines; printed to stderr too when GATEHOUSE_TEST_LOG is set. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _encoding, done) => {
      const text = chunk.toString();
      this.lines.push(text);
      if (process.env.GATEHOUSE_TEST_LOG) process.stderr.write(text);
      done();
    },
  });
  readonly root = pino({ level: process.env.GATEHOUSE_TEST_LOG ?? "debug" }, this.stream);
  readonly log = (component: string) => this.root.child({ component });
}

export interface GatehouseOptions {
  fake?: FakeAnthropicOptions;
  /** Extra agent config (merged over the defaults). */
  agent?: Record<string, unknown>;
  /** Extra control-plane config (merged over the defaults). */
  controlPlane?: Record<string, unknown>;
  /** Agent environment; the upstream key is added. */
  env?: Record<string, string>;
  /** Connections besides `claude` (which points at the fake). */
  connections?: Array<Record<string, unknown>>;
}

export class TestGatehouse {
  readonly logs = new LogCapture();
  readonly adminToken = `adm_${randomBytes(16).toString("hex")}`;
  cp!: RunningControlPlane;
  agent!: RunningAgent;
  admin!: GatehouseClient;
  /** Added to the control plane's clock, e.g. to issue tokens that are already expired. */
  clockOffsetMs = 0;
  agentToken = "";
  private grpcListen = "127.0.0.1:0";
  private httpListen = "127.0.0.1:0";

  private constructor(
    readonly dir: string,
    readonly fake: FakeAnthropic,
    private readonly options: GatehouseOptions,
  ) {}

  static async start(options: GatehouseOptions = {}): Promise<TestGatehouse> {
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-test-"));
    const fake = await startFakeAnthropic(options.fake);
    const gh = new TestGatehouse(dir, fake, options);
    await gh.startControlPlane();
    gh.agentToken = (await gh.cp.accounts.create("test-agent")).token;
    await gh.startAgent();
    return gh;
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
        http: { listen: this.httpListen },
        grpc: { listen: this.grpcListen },
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

  /** Starts (or restarts) the agent on the same spool dir; resolves once it is linked. */
  async startAgent(): Promise<void> {
    this.agent = await startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: this.cp.grpcAddress },
        proxy: { listen: "127.0.0.1:0" },
        ...this.options.agent,
      }),
      token: this.agentToken,
      dataDir: this.dir,
      env: { [UPSTREAM_KEY_ENV]: this.fake.apiKey, ...this.options.env },
      log: this.logs.log,
      registry: new Registry(),
    });
    await this.agent.link.whenState("ready");
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

  /** The session as the REST API shows it, once every recorded event is durable in the store. */
  async record(sessionId: string): Promise<SessionView> {
    await this.agent.link.whenDrained();
    return this.admin.getSession(sessionId);
  }

  async stop(): Promise<void> {
    await this.agent?.stop(1000);
    await this.cp?.stop();
    await this.fake.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}
