/**
 * Sessions: opening one (a short-lived token for one connection), closing it
 * (revoked at every agent, record sealed), reading it back, and taking in the
 * events agents record for it.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import { v7 as uuidv7 } from "uuid";
import type { AgentRegistry } from "../agents/registry.js";
import type { AuditLog } from "../audit/log.js";
import type { ConnectionConfig } from "../config.js";
import type { SigningKeys } from "../identity/signing-keys.js";
import type {
  AppendResult,
  NewEvent,
  Page,
  SessionFilter,
  SessionRecord,
  SessionStatus,
  Store,
  StoredEvent,
  Subject,
} from "../store/types.js";
import type { SessionFeed } from "./feed.js";
import { SEAL_TYPE } from "./verify.js";

export interface OpenSessionRequest {
  connection: string;
  ttlSeconds?: number | undefined;
  labels?: Record<string, string> | undefined;
}

export interface OpenedSession {
  session: SessionRecord;
  token: string;
  proxyUrl: string;
}

export interface SessionLimits {
  defaultTtlSeconds: number;
  maxTtlSeconds: number;
}

export function sessionStatus(session: SessionRecord, now: number): SessionStatus {
  if (session.closedAt !== null) return "closed";
  return session.expiresAt <= now ? "expired" : "open";
}

export class SessionService {
  private readonly connections: ReadonlyMap<string, ConnectionConfig>;

  constructor(
    private readonly deps: {
      store: Store;
      keys: SigningKeys;
      agents: AgentRegistry;
      feed: SessionFeed;
      audit: AuditLog;
      connections: readonly ConnectionConfig[];
      limits: SessionLimits;
      now: () => number;
    },
  ) {
    this.connections = new Map(deps.connections.map((c) => [c.name, c]));
  }

  /**
   * Opens a session for `subject`. `scope` narrows it further (what the runner
   * rule that admitted the subject allows): a shorter longest lifetime, and labels
   * that the caller's own labels cannot override.
   */
  async open(
    subject: Subject,
    request: OpenSessionRequest,
    scope: { maxTtlSeconds?: number | undefined; labels?: Readonly<Record<string, string>> } = {},
  ): Promise<OpenedSession> {
    const { store, keys, agents, limits, now } = this.deps;
    if (!this.connections.has(request.connection)) {
      throw new GatehouseError(
        "GATE_CONNECTION_NOT_FOUND",
        `connection '${request.connection}' not found; known: ${[...this.connections.keys()].join(", ")}`,
      );
    }
    const proxyUrl = agents.proxyUrlFor(request.connection);
    if (proxyUrl === null) {
      throw new GatehouseError(
        "GATE_NO_AGENT",
        `no connected agent serves connection '${request.connection}'; start one with \`gatehouse agent\` or check its link to the control plane`,
      );
    }
    const maxTtlSeconds = Math.min(scope.maxTtlSeconds ?? limits.maxTtlSeconds, limits.maxTtlSeconds);
    const ttlSeconds = Math.min(request.ttlSeconds ?? limits.defaultTtlSeconds, maxTtlSeconds);
    const createdAt = now();
    const session: SessionRecord = {
      id: uuidv7({ msecs: createdAt }),
      connection: request.connection,
      subject,
      labels: { ...request.labels, ...scope.labels },
      createdAt,
      expiresAt: createdAt + ttlSeconds * 1000,
      closedAt: null,
      seal: null,
    };
    await store.insertSession(session);
    const token = await keys.issueSessionToken(
      { sid: session.id, cnx: session.connection, sub: subject.id, expiresAt: session.expiresAt },
      createdAt,
    );
    return { session, token, proxyUrl };
  }

  async get(id: string): Promise<SessionRecord> {
    const session = await this.deps.store.getSession(id);
    if (!session) throw new GatehouseError("GATE_NOT_FOUND", `session '${id}' not found`);
    return session;
  }

  list(filter: Omit<SessionFilter, "now">): Promise<Page<SessionRecord>> {
    return this.deps.store.listSessions({ ...filter, now: this.deps.now() });
  }

  /**
   * Closes a session: its token is refused at every connected agent from now on
   * (agents that connect later learn it in their welcome), and its record is sealed.
   * Closing a closed session changes nothing.
   */
  /** Closes a session (revoking its token at every agent) and seals it; `actor` is who asked. */
  async close(actor: string, id: string): Promise<SessionRecord> {
    const { store, agents, now } = this.deps;
    const before = await this.get(id);
    // Closing again completes a seal that an earlier close or ingest could not write.
    if (before.closedAt !== null) return this.sealIfBehind(before);
    await this.deps.audit.record(actor, "session.close", id, { connection: before.connection });
    const closed = await store.closeSession(id, now());
    if (!closed) throw new GatehouseError("GATE_NOT_FOUND", `session '${id}' not found`);
    if (closed.expiresAt > (closed.closedAt ?? 0)) {
      agents.broadcast({
        revocation: { sessions: [{ sessionId: closed.id, expiresAtUnixMs: closed.expiresAt }] },
      });
    }
    const sealed = await this.seal(closed);
    // Live tails of the session see it is over now, not at their next re-read.
    this.deps.feed.publish(id);
    return sealed;
  }

  /** Events of a session in order, after `afterSeq`. */
  async events(id: string, afterSeq: number, limit: number): Promise<StoredEvent[]> {
    return this.deps.store.readEvents(id, afterSeq, limit);
  }

  /**
   * Stores events reported by an agent. Events for a closed session extend the
   * record, so it is sealed again: an agent may deliver what it recorded before
   * the close (it was offline, or the exchange was ending when the close reached
   * it) after the close. The seal says how many events it covers.
   */
  async ingest(events: NewEvent[]): Promise<AppendResult> {
    const result = await this.deps.store.appendEvents(events);
    for (const sessionId of result.tails.keys()) {
      this.deps.feed.publish(sessionId);
      const session = await this.deps.store.getSession(sessionId);
      if (session?.closedAt != null) await this.seal(session);
    }
    return result;
  }

  private async sealIfBehind(session: SessionRecord): Promise<SessionRecord> {
    const tail = await this.deps.store.chainTail(session.id);
    return session.seal && session.seal.count >= tail.count ? session : this.seal(session);
  }

  private async seal(session: SessionRecord): Promise<SessionRecord> {
    const { store, keys, now } = this.deps;
    const tail = await store.chainTail(session.id);
    const sealedAt = now();
    const jws = await keys.sign(
      { sid: session.id, count: tail.count, lastHash: tail.lastHash, sealedAt },
      SEAL_TYPE,
    );
    // Seals only move forward: a concurrent seal covering more events wins.
    const seal = await store.setSeal(session.id, {
      count: tail.count,
      lastHash: tail.lastHash,
      sealedAt,
      jws,
    });
    return { ...session, seal };
  }
}
