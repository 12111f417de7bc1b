/**
 * The AgentLink server: one bidirectional stream per agent. The agent says
 * hello, gets its configuration, then streams session events, which are
 * acknowledged only once they are durable in the store.
 */
import { readFile } from "node:fs/promises";
import type { AgentConfig, AgentMessage__Output, ControlMessage, RevokedSession } from "@gatehouse/proto";
import { loadAgentLink } from "@gatehouse/proto";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AgentRegistry } from "../agents/registry.js";
import { hashToken } from "../identity/tokens.js";
import type { ControlPlaneMetrics } from "../metrics.js";
import type { SessionService } from "../sessions/service.js";
import type { AgentRecord, NewEvent, Store } from "../store/types.js";
import { decodeEvent } from "./events.js";
import { Inbox } from "./inbox.js";

/** Messages an agent link buffers before the stream is paused; with the agent's window of 8 batches in flight, rarely reached. */
const INBOX_HIGH_WATER = 32;

export interface AgentLinkDeps {
  store: Pick<Store, "findAgentByTokenHash" | "touchAgent">;
  sessions: Pick<SessionService, "ingest">;
  registry: AgentRegistry;
  agentConfig: (served: readonly string[]) => Promise<AgentConfig>;
  controlPlaneId: string;
  heartbeatIntervalMs: number;
  /** How long an agent has to say hello after opening the stream. */
  helloTimeoutMs: number;
  metrics: ControlPlaneMetrics;
  logger: Logger;
  now: () => number;
}

type LinkCall = grpc.ServerDuplexStream<AgentMessage__Output, ControlMessage>;

/** Maps an error to the gRPC status the agent sees: once, here. */
export function toGrpcStatus(error: GatehouseError): Partial<grpc.StatusObject> {
  const byHttp: Record<number, grpc.status> = {
    400: grpc.status.INVALID_ARGUMENT,
    401: grpc.status.UNAUTHENTICATED,
    403: grpc.status.PERMISSION_DENIED,
    404: grpc.status.NOT_FOUND,
    413: grpc.status.RESOURCE_EXHAUSTED,
    502: grpc.status.UNAVAILABLE,
    503: grpc.status.UNAVAILABLE,
    504: grpc.status.DEADLINE_EXCEEDED,
  };
  return { code: byHttp[error.status] ?? grpc.status.INTERNAL, details: error.toBody().error.message };
}

export function createAgentLinkServer(deps: AgentLinkDeps): grpc.Server {
  const server = new grpc.Server({
    // Batches carry request and response bodies; the agent keeps each under 8 MiB.
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    // Agents ping to keep NAT and load-balancer paths open; allow it.
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  });
  server.addService(loadAgentLink().AgentLink.service, {
    Connect: (call: LinkCall) => {
      serveLink(deps, call).catch((error: unknown) => {
        const err = asGatehouseError(error);
        if (err.code === "GATE_INTERNAL") deps.logger.error({ err: error }, "agent link failed");
        else deps.logger.warn({ code: err.code, reason: err.message }, "agent link refused");
        if (!call.cancelled) call.emit("error", toGrpcStatus(err));
      });
    },
  });
  return server;
}

export interface GrpcTlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile?: string | undefined;
}

/** Binds `server` to `address` (host:port); resolves with the bound port. */
export async function listenAgentLink(
  server: grpc.Server,
  address: string,
  tls?: GrpcTlsFiles,
): Promise<number> {
  let credentials = grpc.ServerCredentials.createInsecure();
  if (tls) {
    const [cert, key, ca] = await Promise.all([
      readFile(tls.certFile),
      readFile(tls.keyFile),
      tls.clientCaFile ? readFile(tls.clientCaFile) : Promise.resolve(null),
    ]);
    credentials = grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], ca !== null);
  }
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (error, port) => (error ? reject(error) : resolve(port)));
  });
}

async function authenticate(deps: AgentLinkDeps, metadata: grpc.Metadata): Promise<AgentRecord> {
  const header = metadata.get("authorization")[0];
  const token = typeof header === "string" ? /^Bearer\s+(\S+)$/i.exec(header)?.[1] : undefined;
  if (!token) {
    throw new GatehouseError(
      "GATE_UNAUTHENTICATED",
      "missing agent token: send `authorization: Bearer <agent token>` call metadata",
    );
  }
  const agent = await deps.store.findAgentByTokenHash(hashToken(token));
  if (!agent || agent.revokedAt !== null) {
    throw new GatehouseError(
      "GATE_UNAUTHENTICATED",
      "agent token not recognised or revoked; create one with `gatehouse agents create <name>`",
    );
  }
  return agent;
}

async function serveLink(deps: AgentLinkDeps, call: LinkCall): Promise<void> {
  const agent = await authenticate(deps, call.metadata);
  const inbox = new Inbox<AgentMessage__Output>(call, INBOX_HIGH_WATER);
  const [first, ...carried] =
    (await inbox.take(INBOX_HIGH_WATER, {
      ms: deps.helloTimeoutMs,
      error: () =>
        new GatehouseError("GATE_INVALID_REQUEST", `no hello within ${deps.helloTimeoutMs} ms of connecting`),
    })) ?? [];
  const hello = first?.msg === "hello" ? first.hello : null;
  if (!hello) {
    throw new GatehouseError("GATE_INVALID_REQUEST", "the first message on an agent link must be hello");
  }
  const log = deps.logger.child({ agentId: hello.agentId, agent: agent.name });

  // The agent is registered before its configuration is read, so a session closed
  // meanwhile is either in the welcome's revocation list or in a broadcast it receives.
  // Broadcasts wait for the welcome: revocations are folded into it (the agent applies
  // them before it reports ready), anything else follows it.
  let welcomed = false;
  const earlyRevoked: RevokedSession[] = [];
  const early: ControlMessage[] = [];
  /** Why this replica ended the link itself, e.g. a revoked token; its status is already sent. */
  let endedBecause: string | null = null;
  const unregister = deps.registry.add({
    accountId: agent.id,
    agentId: hello.agentId,
    name: agent.name,
    version: hello.version,
    connections: hello.connections,
    proxyUrl: hello.proxyUrl,
    connectedAt: deps.now(),
    send: (message) => {
      if (!welcomed) {
        if (message.revocation) earlyRevoked.push(...(message.revocation.sessions ?? []));
        else early.push(message);
      } else if (!call.cancelled && call.writable) {
        call.write(message);
      }
    },
    disconnect: (reason) => {
      if (call.cancelled || endedBecause !== null) return;
      endedBecause = reason;
      call.emit("error", { code: grpc.status.UNAUTHENTICATED, details: reason });
    },
  });
  try {
    const config = await deps.agentConfig(hello.connections);
    if (call.cancelled || endedBecause !== null) return;
    call.write({
      welcome: {
        controlPlaneId: deps.controlPlaneId,
        heartbeatIntervalMs: deps.heartbeatIntervalMs,
        config: { ...config, revoked: [...(config.revoked ?? []), ...earlyRevoked] },
      },
    });
    welcomed = true;
    for (const message of early) call.write(message);
    log.info({ proxyUrl: hello.proxyUrl, connections: hello.connections }, "agent connected");
    await deps.store.touchAgent(agent.id, deps.now());
    for (let group: AgentMessage__Output[] | null = carried; group !== null; group = await inbox.take()) {
      await handleMessages(deps, call, agent, group);
    }
  } catch (error) {
    // The agent going away mid-stream is routine; it reconnects and resends.
    if (call.cancelled) return;
    // Ending the stream on purpose surfaces here as the stream's own error; not a failure.
    if (endedBecause !== null) {
      log.info({ reason: endedBecause }, "agent link ended by the control plane");
      return;
    }
    throw error;
  } finally {
    unregister();
    log.info("agent disconnected");
  }
  if (!call.cancelled) call.end();
}

/**
 * Handles the messages that arrived together: all their event batches are
 * stored in one transaction, then acknowledged up to the last one.
 */
async function handleMessages(
  deps: AgentLinkDeps,
  call: LinkCall,
  agent: AgentRecord,
  messages: AgentMessage__Output[],
): Promise<void> {
  const events: NewEvent[] = [];
  let ackUpTo = -1;
  let heartbeat = false;
  for (const message of messages) {
    switch (message.msg) {
      case "events": {
        const batch = message.events;
        if (!batch || batch.events.length === 0) break;
        for (const bytes of batch.events) events.push(decodeEvent(bytes));
        ackUpTo = batch.firstSeq + batch.events.length - 1;
        break;
      }
      case "heartbeat":
        heartbeat = true;
        break;
      case "hello":
        throw new GatehouseError("GATE_INVALID_REQUEST", "hello may be sent only once per link");
      default:
        // A newer agent may send messages this control plane does not know; ignoring them is safe.
        break;
    }
  }
  if (events.length > 0) {
    const stopTimer = deps.metrics.ingestSeconds.startTimer();
    const result = await deps.sessions.ingest(events);
    stopTimer();
    deps.metrics.eventsIngested.inc(result.appended);
    deps.metrics.eventDuplicates.inc(result.duplicates);
    // A link ended meanwhile (a revoked token) already carries its status; the agent resends.
    if (call.writable) call.write({ ack: { upToSeq: ackUpTo } });
  }
  if (heartbeat) await deps.store.touchAgent(agent.id, deps.now());
}
