/**
 * Passes sessions closed at any replica on to the agents linked to this one.
 * The replica that closes a session tells its own agents at once; agents
 * linked to other replicas learn it here, within one poll of the store.
 */
import type { Logger } from "pino";
import type { RevokedSessionRecord, Store } from "../store/types.js";
import type { AgentRegistry } from "./registry.js";

/** How often the store is asked for sessions closed since the last look. */
export const REVOCATION_POLL_MS = 500;

/**
 * How far back each poll looks again before the latest close it has seen.
 * `closedAt` comes from the clock of whichever replica closed the session and
 * is taken before its write commits, so a close can become visible after one
 * with a later `closedAt`. Looking back this far catches it, provided replica
 * clocks agree (and a close commits) within this margin; what was already
 * passed on is not sent again.
 */
export const REVOCATION_LOOKBACK_MS = 10_000;

export interface RevocationRelayDeps {
  store: Pick<Store, "listRevokedSessions">;
  registry: AgentRegistry;
  now: () => number;
  logger: Logger;
  pollMs?: number;
  lookbackMs?: number;
}

/**
 * Polls the store for sessions closed before they expired, since the latest
 * close it has seen, and broadcasts them to this replica's agents. Duplicates
 * of what the closing replica already sent are harmless: agents refuse a
 * revoked session's token however often they are told.
 */
export class RevocationRelay {
  private readonly pollMs: number;
  private readonly lookbackMs: number;
  /** The latest `closedAt` seen, from the store's records (not this replica's clock). */
  private latestClose = 0;
  /** Sessions passed on whose `closedAt` is within the look-back window: id → closedAt. */
  private readonly passedOn = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | null = null;
  private stopped = false;
  /** Whether the last poll failed, so a store outage is logged once, not every poll. */
  private failing = false;

  constructor(private readonly deps: RevocationRelayDeps) {
    this.pollMs = deps.pollMs ?? REVOCATION_POLL_MS;
    this.lookbackMs = deps.lookbackMs ?? REVOCATION_LOOKBACK_MS;
  }

  /**
   * Polls once now, then every `pollMs`. Start it before agents can link: the
   * first poll passes on every revoked session, which agents that link later
   * get in their welcome instead.
   */
  async start(): Promise<void> {
    await this.tick();
  }

  /** Stops polling; resolves once a poll under way has finished (so the store can be closed). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    this.running = this.poll();
    await this.running;
    this.running = null;
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), this.pollMs);
    this.timer.unref();
  }

  /**
   * Closes at or after this time are looked for. A close stamped in the future by a
   * replica whose clock runs fast must not move the window past closes stamped by
   * the others, so the window never starts later than this replica's own clock allows.
   */
  private horizon(): number {
    return Math.min(this.latestClose, this.deps.now()) - this.lookbackMs;
  }

  /** One look at the store; the sessions newly passed on. */
  async poll(): Promise<RevokedSessionRecord[]> {
    const { store, registry, now, logger } = this.deps;
    let closed: RevokedSessionRecord[];
    try {
      closed = await store.listRevokedSessions(now(), this.horizon());
    } catch (error) {
      if (!this.failing) {
        logger.warn(
          { err: error },
          "cannot read closed sessions from the store; agents of this replica learn of closes made elsewhere once it is back",
        );
      }
      this.failing = true;
      return [];
    }
    if (this.failing) logger.info("reading closed sessions from the store again");
    this.failing = false;
    const fresh = closed.filter((s) => !this.passedOn.has(s.id));
    for (const s of fresh) {
      this.passedOn.set(s.id, s.closedAt);
      this.latestClose = Math.max(this.latestClose, s.closedAt);
    }
    const horizon = this.horizon();
    for (const [id, closedAt] of this.passedOn) if (closedAt <= horizon) this.passedOn.delete(id);
    if (fresh.length > 0) {
      registry.broadcast({
        revocation: { sessions: fresh.map((s) => ({ sessionId: s.id, expiresAtUnixMs: s.expiresAt })) },
      });
      logger.debug({ sessions: fresh.map((s) => s.id) }, "closed sessions passed on to linked agents");
    }
    return fresh;
  }
}
