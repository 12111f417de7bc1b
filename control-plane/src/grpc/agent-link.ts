/**
 * The AgentLink server: one bidirectional stream per agent. The agent says
 * hello, gets its configuration, then streams session events, which are
 * acknowledged only once they are durable in the store. A link serves only
 * connections within its account's scope, records only for sessions of those
 * connections, and ends when the agent falls silent.
 */
import { readFile } from "node:fs/promises";
import type { AgentConfig, AgentMessage__Output, ControlMessage, RevokedSession } from "@gatehouse/proto";
import { loadAgentLink } from "@gatehouse/proto";
import { bearerToken } from "@gatehouse/proto/bearer";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { AgentRegistry } from "../agents/registry.js";
import { describeScope, inScope, outsideScope, servedConnections } from "../agents/scope.js";
import type { ApprovalLink, Approvals } from "../approvals/service.js";
import { hashToken } from "../identity/tokens.js";
import type { ControlPlaneMetrics } from "../metrics.js";
import type { SessionService } from "../sessions/service.js";
import type { AgentRecord, NewEvent, Store } from "../store/types.js";
import { decodeEvent } from "./events.js";
import { Inbox } from "./inbox.js";

/** Messages an agent link buffers before the stream is paused; with the agent's window of 8 batches in flight, rarely reached. */
const INBOX_HIGH_WATER = 32;

/**
 * The largest message an agent may send. Agents cap a batch at 8 MiB unless it
 * is one event on its own, and no event they record is larger than 8 MiB plus
 * its ids (agent `proxy.maxSseEventBytes` is at most 8 MiB; bodies are cut into
 * 256 KiB chunks). The margin takes in events spooled by older agents, which
 * allowed server-sent events of up to 16 MiB. A larger message ends the link
 * with RESOURCE_EXHAUSTED.
 */
export const MAX_AGENT_MESSAGE_BYTES = 32 * 1024 * 1024;

/**
 * Transport keepalive towards agents: an HTTP/2 ping after this long without
 * traffic, and the connection dropped if the ping is not answered in
 * {@link KEEPALIVE_TIMEOUT_MS}. It finds a dead network path (a peer that
 * vanished without a FIN or RST) even when no call is left to time out.
 */
const KEEPALIVE_TIME_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;

/** Sessions a link remembers the connection of, so a busy link does not read each session per batch. */
const SESSION_CACHE_SIZE = 4096;

export interface AgentLinkDeps {
  store: Pick<Store, "findAgentByTokenHash" | "touchAgent" | "getSession">;
  sessions: Pick<SessionService, "ingest">;
  approvals: Pick<Approvals, "ask" | "cancel" | "forget">;
  registry: AgentRegistry;
  agentConfig: (served: readonly string[]) => Promise<AgentConfig>;
  controlPlaneId: string;
  /** How often agents heartbeat; each heartbeat also re-checks the agent's account. */
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
  // Events for a connection outside the agent's scope: distinct from a refused token or hello,
  // so the agent keeps serving and holds the batch instead of dropping its configuration.
  if (error.code === "GATE_WRONG_CONNECTION") {
    return { code: grpc.status.FAILED_PRECONDITION, details: error.toBody().error.message };
  }
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
    "grpc.max_receive_message_length": MAX_AGENT_MESSAGE_BYTES,
    "grpc.keepalive_time_ms": KEEPALIVE_TIME_MS,
    "grpc.keepalive_timeout_ms": KEEPALIVE_TIMEOUT_MS,
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
  const token = bearerToken(metadata.get("authorization")[0]);
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
  const outside = outsideScope(agent.connections, hello.connections);
  if (outside.length > 0) {
    throw new GatehouseError(
      "GATE_FORBIDDEN",
      `agent account '${agent.name}' may serve ${describeScope(agent.connections)}, not ${outside.map((c) => `'${c}'`).join(", ")}; remove ${outside.length === 1 ? "it" : "them"} from the agent's agent.connections, or give it the token of an account created for ${outside.length === 1 ? "it" : "them"} (gatehouse agents create NAME --connection C)`,
    );
  }
  const served = servedConnections(agent.connections, hello.connections);
  const log = deps.logger.child({ agentId: hello.agentId, agent: agent.name });
  const approvalLink: ApprovalLink = {
    accountId: agent.id,
    connections: agent.connections,
    send: (approvalDecision) => {
      if (!call.cancelled && call.writable) call.write({ approvalDecision });
    },
  };

  // The agent is registered before its configuration is read, so a session closed
  // meanwhile is either in the welcome's revocation list or in a broadcast it receives.
  // Broadcasts wait for the welcome: revocations are folded into it (the agent applies
  // them before it reports ready), anything else follows it.
  let welcomed = false;
  const earlyRevoked: RevokedSession[] = [];
  const early: ControlMessage[] = [];
  /** Why this replica ended the link itself, e.g. a revoked token; its status is already sent. */
  let endedBecause: string | null = null;
  const end = (code: grpc.status, reason: string) => {
    if (call.cancelled || endedBecause !== null) return;
    endedBecause = reason;
    call.emit("error", { code, details: reason });
  };
  const unregister = deps.registry.add({
    accountId: agent.id,
    agentId: hello.agentId,
    name: agent.name,
    version: hello.version,
    connections: served,
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
    disconnect: (reason) => end(grpc.status.UNAUTHENTICATED, reason),
  });
  try {
    // A revocation that landed after authenticate() read the account and before the
    // registry knew this link disconnected nothing; reading the account again now
    // catches it (a later one finds the link in the registry).
    await authenticate(deps, call.metadata);
    const config = await deps.agentConfig(served);
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
    log.info({ proxyUrl: hello.proxyUrl, connections: served }, "agent connected");

    await deps.store.touchAgent(agent.id, deps.now());
    const sessions = new Map<string, string>();
    for (let group: AgentMessage__Output[] | null = carried; group !== null; group = await inbox.take()) {
      await handleMessages(deps, call, agent, group, sessions, log, end, approvalLink);
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
    deps.approvals.forget(approvalLink);
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
  sessions: Map<string, string>,
  log: Logger,
  end: (code: grpc.status, reason: string) => void,
  approvalLink: ApprovalLink,
): Promise<void> {
  const events: NewEvent[] = [];
  let ackUpTo = -1;
  let heartbeat = false;
  for (const message of messages) {
    switch (message.msg) {
      case "events": {
        const batch = message.events;
        if (!batch || batch.events.length === 0) break;
        batch.events.forEach((bytes, i) => {
          events.push(
            decodeEvent(
              bytes,
              `event ${i} of the batch from spool seq ${batch.firstSeq} (seq ${batch.firstSeq + i})`,
            ),
          );
        });
        ackUpTo = batch.firstSeq + batch.events.length - 1;
        break;
      }
      case "heartbeat":
        heartbeat = true;
        break;
      case "approvalRequest":
        if (message.approvalRequest) await deps.approvals.ask(approvalLink, message.approvalRequest);
        break;
      case "approvalCancel":
        if (message.approvalCancel) await deps.approvals.cancel(approvalLink, message.approvalCancel.id);
        break;
      case "hello":
        throw new GatehouseError("GATE_INVALID_REQUEST", "hello may be sent only once per link");
      default:
        // A newer agent may send messages this control plane does not know; ignoring them is safe.
        break;
    }
  }
  if (events.length > 0) {
    const unknown = await checkSessions(deps, agent, events, sessions);
    const stopTimer = deps.metrics.ingestSeconds.startTimer();
    const result = await deps.sessions.ingest(events);
    stopTimer();
    deps.metrics.eventsIngested.inc(result.appended);
    deps.metrics.eventDuplicates.inc(result.duplicates);
    for (const [sessionId, count] of unknown) {
      deps.metrics.eventsForUnknownSessions.inc(count);
      log.warn(
        { sessionId, events: count },
        "events for a session the store does not know; stored unattached. Check that every control-plane replica uses the same store",
      );
    }
    // A link ended meanwhile (a revoked token) already carries its status; the agent resends.
    if (call.writable) call.write({ ack: { upToSeq: ackUpTo } });
  }
  if (heartbeat) {
    await deps.store.touchAgent(agent.id, deps.now());
    // An account revoked at another replica is found here, within a heartbeat interval.
    const account = await deps.store.findAgentByTokenHash(agent.tokenHash);
    if (!account || account.revokedAt !== null) end(grpc.status.UNAUTHENTICATED, "agent token revoked");
  }
}

/**
 * Refuses events for sessions of connections outside the account's scope: a
 * legitimate agent never records them (it serves only connections it was
 * configured with, and checks each token's connection), so they mean a token
 * or an agent that is not what it claims. Events for a session the store does
 * not know are stored anyway (losing events is worse); they are returned, as
 * event counts by session id, for the caller to count and log.
 */
async function checkSessions(
  deps: AgentLinkDeps,
  agent: AgentRecord,
  events: readonly NewEvent[],
  sessions: Map<string, string>,
): Promise<Map<string, number>> {
  const unknown = new Map<string, number>();
  for (const event of events) {
    const id = event.sessionId;
    let connection = sessions.get(id);
    if (connection === undefined) {
      const seen = unknown.get(id);
      if (seen !== undefined) {
        unknown.set(id, seen + 1);
        continue;
      }
      const session = await deps.store.getSession(id);
      if (session === null) {
        unknown.set(id, 1);
        continue;
      }
      connection = session.connection;
      // A session's connection never changes, so remembering it is safe; forgetting all at once bounds memory.
      if (sessions.size >= SESSION_CACHE_SIZE) sessions.clear();
      sessions.set(id, connection);
    }
    if (!inScope(agent.connections, connection)) {
      throw new GatehouseError(
        "GATE_WRONG_CONNECTION",
        `event ${event.id} is for session ${id} of connection '${connection}', outside what agent account '${agent.name}' may serve (${describeScope(agent.connections)}); the batch is refused`,
      );
    }
  }
  return unknown;
}
