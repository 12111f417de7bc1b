/**
 * The agent's end of AgentLink: one bidirectional gRPC stream, dialled by the
 * agent, that carries configuration down and recorded events up.
 *
 * States (a long-lived loop, so listed explicitly):
 *
 *   idle ──start()──▶ connecting ──welcome──▶ ready
 *                        ▲   │                  │
 *                 timer  │   │ stream ended or  │ stream ended or failed
 *                        │   ▼ failed           ▼
 *                      backoff ◀────────────────┘
 *   any ──stop()──▶ stopped
 *
 * In `ready`, events are read from the spool from the first unacknowledged
 * sequence and sent in batches, with a bounded number of batches awaiting
 * acknowledgement. Every (re)connect starts again from the acknowledged point,
 * so anything sent but not acknowledged before a disconnect is sent again; the
 * control plane stores each event once.
 *
 * A batch is at most `maxBatchBytes` (8 MiB) unless it is one event on its own,
 * and no event the proxy records is much larger than 8 MiB (`proxy.maxSseEventBytes`
 * is at most that; bodies are cut into 256 KiB chunks), so every message stays far
 * below the 32 MiB the control plane accepts. How each ending of the stream is
 * retried is set out in {@link RETRY_SOON} and {@link SLOW_RETRY}.
 */
import type {
  AgentConfig__Output,
  AgentMessage,
  ApprovalDecision__Output,
  ControlMessage__Output,
  AgentLinkClient as GrpcAgentLinkClient,
  Hello,
  RevokedSession__Output,
} from "@gatehouse/proto";
import { loadAgentLink } from "@gatehouse/proto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";

export type LinkState = "idle" | "connecting" | "ready" | "backoff" | "stopped";

/** Default {@link LinkOptions.maxBatchBytes}: a quarter of the largest message the control plane accepts. */
export const MAX_BATCH_BYTES = 8 * 1024 * 1024;

/**
 * What a record costs in a batch beyond its payload, as the spool counts it (its
 * 16-byte record header): more than the protobuf framing of a `bytes` element
 * (a tag and a length, at most 6 bytes), so a batch counted this way is never
 * larger on the wire than counted.
 */
const RECORD_OVERHEAD_BYTES = 16;

/**
 * Endings of the stream that retrying soon may cure, with the usual doubling
 * backoff from `initialBackoffMs`:
 *
 * - stream ended with no error (status OK): the control plane shut down cleanly;
 * - UNAVAILABLE: the control plane is restarting or unreachable, or its store is down;
 * - CANCELLED: this side gave up on the stream (no welcome in time, a spool read failed);
 * - DEADLINE_EXCEEDED, ABORTED: a transient condition at the control plane;
 * - UNKNOWN, INTERNAL: a fault at the control plane or in transit, likely to pass.
 */
const RETRY_SOON: ReadonlySet<grpc.status> = new Set([
  grpc.status.OK,
  grpc.status.UNAVAILABLE,
  grpc.status.CANCELLED,
  grpc.status.DEADLINE_EXCEEDED,
  grpc.status.ABORTED,
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
]);

/**
 * Endings that retrying soon cannot cure, since this agent would send the same
 * thing again; they need an operator, so they are logged as errors saying what
 * to do, and retried at the slowest pace (`maxBackoffMs`) in case one acts. Any
 * code in neither set is treated the same way.
 */
const SLOW_RETRY: ReadonlyMap<grpc.status, string> = new Map([
  [
    grpc.status.UNAUTHENTICATED,
    "the control plane refused this agent's token; check controlPlane.tokenFile (or GATEHOUSE_AGENT_TOKEN) holds a token from `gatehouse agents create` that is not revoked",
  ],
  [
    grpc.status.PERMISSION_DENIED,
    "the control plane refused this agent what it asked for; set agent.connections to connections its account may serve, or use the token of an account that may serve them",
  ],
  [
    grpc.status.FAILED_PRECONDITION,
    "the control plane refused recorded events for a connection outside this agent's account scope (an account narrowed while they waited in the spool?); they stay in the spool and block the ones behind them until the account's scope includes that connection again",
  ],
  [
    grpc.status.INVALID_ARGUMENT,
    "the control plane refused a message from this agent as malformed; events stay in the spool and are resent. Agent and control plane versions probably differ: upgrade the older one",
  ],
  [
    grpc.status.RESOURCE_EXHAUSTED,
    "a message between this agent and the control plane was larger than the receiver accepts; events stay in the spool and are resent. Run a control plane at least as new as this agent",
  ],
]);

/** The spool as the link uses it. */
export interface LinkSpool {
  readonly ackedSeq: number;
  readonly lastWrittenSeq: number;
  readonly pending: number;
  /** Records from `fromSeq` on, each an encoded SessionEvent. */
  read(
    fromSeq: number,
    maxRecords: number,
    maxBytes: number,
  ): Promise<Array<{ seq: number; payload: Uint8Array }>>;
  ack(upToSeq: number): Promise<void>;
  /** `written` is emitted whenever more records can be read. */
  on(event: "written", listener: (lastWrittenSeq: number) => void): unknown;
}

export interface LinkTls {
  ca?: Buffer | undefined;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
  serverName?: string | undefined;
}

export interface LinkOptions {
  address: string;
  token: string;
  tls?: LinkTls | undefined;
  hello: Hello;
  spool: LinkSpool;
  logger: Logger;
  /** First retry delay; doubles per failed attempt, with full jitter, up to `maxBackoffMs`. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long to wait for the welcome after opening the stream. */
  welcomeTimeoutMs?: number;
  /** Batches sent and not yet acknowledged, at most. */
  maxBatchesInFlight?: number;
  maxBatchEvents?: number;
  /**
   * Encoded bytes a batch holds at most, unless it is a single event (default
   * {@link MAX_BATCH_BYTES}): an event too big to share a batch leaves alone
   * rather than hold back those behind it.
   */
  maxBatchBytes?: number;
  /** How long newly written records may wait for more to share their batch (default 2 ms). */
  lingerMs?: number;
  onConfig: (config: AgentConfig__Output) => void;
  onRevocation: (sessions: RevokedSession__Output[]) => void;
  /** The decision on an approval this agent asked for (see {@link AgentLinkClient.sendNow}). */
  onApprovalDecision?: (decision: ApprovalDecision__Output) => void;
  /** The control plane refused this agent: its token (revoked, or never valid), or the connections it asked for. */
  onRefused: (reason: string) => void;
}

type LinkCall = grpc.ClientDuplexStream<AgentMessage, ControlMessage__Output>;

export class AgentLinkClient {
  private state_: LinkState = "idle";
  private client: GrpcAgentLinkClient | null = null;
  private call: LinkCall | null = null;
  private attempt = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  private welcomeTimer: NodeJS.Timeout | undefined;
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private nextSeq = 1;
  /** Last spool sequence of each batch awaiting acknowledgement, oldest first. */
  private inFlight: number[] = [];
  private pumping = false;
  private lingerTimer: NodeJS.Timeout | undefined;
  /** pump() was called while a pump was running: run again when it ends. */
  private pumpAgain = false;
  private readonly stateListeners = new Set<(state: LinkState) => void>();
  private drainWaiters: Array<() => void> = [];
  private readonly opts: Required<Omit<LinkOptions, "tls" | "onApprovalDecision">> &
    Pick<LinkOptions, "tls" | "onApprovalDecision">;

  constructor(options: LinkOptions) {
    this.opts = {
      initialBackoffMs: 200,
      maxBackoffMs: 15_000,
      welcomeTimeoutMs: 10_000,
      maxBatchesInFlight: 8,
      maxBatchEvents: 1000,
      maxBatchBytes: MAX_BATCH_BYTES,
      lingerMs: 2,
      ...options,
    };
    options.spool.on("written", () => this.pumpSoon());
  }

  get state(): LinkState {
    return this.state_;
  }

  /** Calls `listener` on every state change. */
  onState(listener: (state: LinkState) => void): () => void {
    this.stateListeners.add(listener);
    return () => this.stateListeners.delete(listener);
  }

  /** Resolves once the link is in `state` (at once if it already is). */
  whenState(state: LinkState): Promise<void> {
    if (this.state_ === state) return Promise.resolve();
    return new Promise((resolve) => {
      const off = this.onState((s) => {
        if (s === state) {
          off();
          resolve();
        }
      });
    });
  }

  /**
   * Sends a message that needs no spool (an approval request or cancel) on the
   * live stream. False when the link is not ready: nothing was sent.
   */
  sendNow(message: AgentMessage): boolean {
    const call = this.call;
    if (this.state_ !== "ready" || call === null) return false;
    call.write(message);
    return true;
  }

  /**
   * Resolves when every event written to the spool so far is acknowledged as
   * durable, or when the link is lost (the events then wait in the spool).
   */
  whenDrained(): Promise<void> {
    if (this.opts.spool.pending === 0 || this.state_ !== "ready") return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  start(): void {
    if (this.state_ !== "idle") return;
    const { address, tls } = this.opts;
    const credentials = tls
      ? grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null)
      : grpc.credentials.createInsecure();
    const AgentLink = loadAgentLink().AgentLink;
    this.client = new AgentLink(address, credentials, {
      // Detects a control plane that vanished without closing the connection.
      "grpc.keepalive_time_ms": 20_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.keepalive_permit_without_calls": 1,
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
      // The channel has a reconnect backoff of its own (1 s growing to 120 s) during which
      // every call fails at once; bounded by this link's, maxBackoffMs stays the longest
      // an agent waits to relink after the control plane comes back.
      "grpc.initial_reconnect_backoff_ms": this.opts.initialBackoffMs,
      "grpc.max_reconnect_backoff_ms": this.opts.maxBackoffMs,
      ...(tls?.serverName ? { "grpc.ssl_target_name_override": tls.serverName } : {}),
    });
    this.connect();
  }

  /** Ends the link for good. Unacknowledged events stay in the spool for the next start. */
  async stop(): Promise<void> {
    this.setState("stopped");
    clearTimeout(this.retryTimer);
    this.teardown();
    this.client?.close();
    this.client = null;
  }

  private setState(state: LinkState): void {
    if (this.state_ === state || this.state_ === "stopped") return;
    this.state_ = state;
    if (state !== "ready") this.releaseDrainWaiters();
    for (const listener of this.stateListeners) listener(state);
  }

  private releaseDrainWaiters(): void {
    const waiters = this.drainWaiters;
    this.drainWaiters = [];
    for (const resolve of waiters) resolve();
  }

  private connect(): void {
    if (this.state_ === "stopped" || !this.client) return;
    this.setState("connecting");
    const metadata = new grpc.Metadata();
    metadata.set("authorization", `Bearer ${this.opts.token}`);
    const call = this.client.Connect(metadata);
    this.call = call;
    call.on("data", (message: ControlMessage__Output) => this.onMessage(call, message));
    call.on("error", (error: grpc.ServiceError) => this.onEnd(call, error));
    call.on("end", () => this.onEnd(call, null));
    call.write({ hello: this.opts.hello });
    this.welcomeTimer = setTimeout(() => {
      this.opts.logger.warn(
        { address: this.opts.address },
        "no welcome from the control plane in time; reconnecting",
      );
      call.cancel();
    }, this.opts.welcomeTimeoutMs);
  }

  private onMessage(call: LinkCall, message: ControlMessage__Output): void {
    if (call !== this.call) return;
    switch (message.msg) {
      case "welcome": {
        clearTimeout(this.welcomeTimer);
        const welcome = message.welcome;
        if (!welcome?.config) {
          // Without a configuration the agent cannot serve; waiting on this stream would wait for ever.
          this.opts.logger.error(
            { address: this.opts.address, controlPlaneId: welcome?.controlPlaneId },
            "the control plane's welcome carried no configuration (a protocol error); reconnecting",
          );
          call.cancel();
          return;
        }
        this.attempt = 0;
        this.nextSeq = this.opts.spool.ackedSeq + 1;
        this.inFlight = [];
        this.opts.onConfig(welcome.config);
        this.setState("ready");
        this.opts.logger.info(
          {
            address: this.opts.address,
            controlPlaneId: welcome.controlPlaneId,
            pending: this.opts.spool.pending,
          },
          "linked to the control plane",
        );
        this.startHeartbeat(call, welcome.heartbeatIntervalMs || 10_000);
        this.pump();
        return;
      }
      case "config":
        if (message.config) this.opts.onConfig(message.config);
        return;
      case "revocation":
        if (message.revocation) this.opts.onRevocation(message.revocation.sessions);
        return;
      case "ack":
        if (message.ack) this.acknowledged(message.ack.upToSeq);
        return;
      case "approvalDecision":
        if (message.approvalDecision) this.opts.onApprovalDecision?.(message.approvalDecision);
        return;
      default:
        return;
    }
  }

  private acknowledged(upToSeq: number): void {
    while (this.inFlight.length > 0 && (this.inFlight[0] ?? 0) <= upToSeq) this.inFlight.shift();
    // The spool takes the acknowledgement at once and persists it later; sending goes on meanwhile.
    this.opts.spool.ack(upToSeq).catch((error: unknown) => {
      this.opts.logger.error({ err: error }, "could not record an acknowledgement in the spool");
    });
    if (this.opts.spool.pending === 0) this.releaseDrainWaiters();
    this.pump();
  }

  /**
   * Sends soon rather than at once: records written within `lingerMs` of each
   * other leave in one batch, so one exchange's events (request, then response a
   * moment later) make one message and one commit at the control plane instead of
   * several. A full batch leaves at once.
   */
  private pumpSoon(): void {
    if (this.state_ !== "ready" || this.lingerTimer !== undefined) return;
    const unsent = this.opts.spool.lastWrittenSeq - this.nextSeq + 1;
    if (unsent >= this.opts.maxBatchEvents || this.opts.lingerMs === 0) {
      this.pump();
      return;
    }
    this.lingerTimer = setTimeout(() => {
      this.lingerTimer = undefined;
      this.pump();
    }, this.opts.lingerMs);
  }

  /** Sends written, unsent spool records while the window allows. */
  private pump(): void {
    if (this.state_ !== "ready") return;
    if (this.pumping) {
      // New records, an ack or a relink (which restarts from the acknowledged point)
      // while a read is under way: that read may be for a stream that is gone.
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    this.pumpAgain = false;
    this.sendBatches()
      .catch((error: unknown) => {
        this.opts.logger.error({ err: error }, "could not read the spool; reconnecting");
        this.call?.cancel();
      })
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) this.pump();
      });
  }

  private async sendBatches(): Promise<void> {
    const { spool, maxBatchesInFlight, maxBatchEvents, maxBatchBytes } = this.opts;
    while (
      this.state_ === "ready" &&
      this.inFlight.length < maxBatchesInFlight &&
      this.nextSeq <= spool.lastWrittenSeq
    ) {
      const call = this.call;
      const read = await spool.read(this.nextSeq, maxBatchEvents, maxBatchBytes);
      const first = read[0]?.seq;
      if (first === undefined || call !== this.call || this.state_ !== "ready") return;
      // A batch covers consecutive seqs; after a crash the spool may skip some, so a batch ends at a gap.
      // It also ends before the record that would take it past maxBatchBytes, whatever the spool returned.
      let count = 1;
      let bytes = (read[0]?.payload.length ?? 0) + RECORD_OVERHEAD_BYTES;
      for (; count < read.length; count++) {
        const next = read[count];
        if (next?.seq !== first + count) break;
        bytes += next.payload.length + RECORD_OVERHEAD_BYTES;
        if (bytes > maxBatchBytes) break;
      }
      const last = first + count - 1;
      call?.write({ events: { firstSeq: first, events: read.slice(0, count).map((r) => r.payload) } });
      this.inFlight.push(last);
      this.nextSeq = last + 1;
    }
  }

  private startHeartbeat(call: LinkCall, intervalMs: number): void {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = setInterval(() => {
      if (call !== this.call) return;
      call.write({ heartbeat: { sentAtUnixMs: Date.now(), spoolPending: this.opts.spool.pending } });
    }, intervalMs);
    this.heartbeatTimer.unref();
  }

  private onEnd(call: LinkCall, error: grpc.ServiceError | null): void {
    if (call !== this.call) return;
    this.teardown();
    if (this.state_ === "stopped") return;
    const code = error?.code ?? grpc.status.OK;
    const soon = RETRY_SOON.has(code);
    const delay = this.backoffDelay(soon);
    const log = this.opts.logger;
    const context = {
      address: this.opts.address,
      retryInMs: delay,
      code: error?.code,
      reason: error?.details,
    };
    if (soon) {
      log.warn(context, "link to the control plane lost; events are kept in the spool until it is back");
    } else {
      log.error(
        context,
        SLOW_RETRY.get(code) ??
          "the control plane ended the link with an unexpected status; retrying slowly. Check that agent and control plane versions match",
      );
    }
    if (code === grpc.status.UNAUTHENTICATED || code === grpc.status.PERMISSION_DENIED) {
      this.opts.onRefused(error?.details ?? "agent refused");
    }
    this.setState("backoff");
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /**
   * Doubling delays with full jitter for endings that may pass soon (see
   * {@link RETRY_SOON}); for the rest, about `maxBackoffMs` every time, since
   * retrying sooner cannot help.
   */
  private backoffDelay(soon: boolean): number {
    const { initialBackoffMs, maxBackoffMs } = this.opts;
    if (!soon) return Math.round(maxBackoffMs * (0.5 + Math.random() / 2));
    const ceiling = Math.min(maxBackoffMs, initialBackoffMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return Math.round(Math.random() * ceiling);
  }

  private teardown(): void {
    clearTimeout(this.welcomeTimer);
    clearTimeout(this.lingerTimer);
    this.lingerTimer = undefined;
    clearInterval(this.heartbeatTimer);
    const call = this.call;
    this.call = null;
    this.inFlight = [];
    if (call) {
      call.removeAllListeners("data");
      // Late errors of a call we have given up on are expected; keep them from being unhandled.
      call.on("error", () => {});
      call.cancel();
    }
  }
}
