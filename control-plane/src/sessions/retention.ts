/**
 * Retention: closed sessions, with their events, are purged a configured time
 * after they closed. Each batch removed is written to the audit log with the
 * ids of its sessions, so a record that is gone can be told apart from one
 * that was lost.
 */
import type { Logger } from "pino";
import { type AuditLog, SYSTEM_ACTOR } from "../audit/log.js";
import type { Store } from "../store/types.js";

/** Sessions removed per store call; the job calls again until none are left. */
const PURGE_BATCH = 200;

export interface RetentionRun {
  sessions: number;
  events: number;
  closedBefore: number;
}

export class RetentionJob {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | null = null;
  #stopping = false;

  constructor(
    private readonly deps: {
      store: Pick<Store, "purgeClosedSessions">;
      audit: AuditLog;
      /** How long a closed session is kept. */
      keepMs: number;
      intervalMs: number;
      now: () => number;
      logger: Logger;
    },
  ) {}

  /** Purges now, then every interval (skipping a tick while a purge still runs), until stopped. */
  start(): void {
    const tick = () => {
      if (this.#running !== null) return;
      this.#running = this.purge()
        .catch((error: unknown) => {
          this.deps.logger.error(
            { err: error },
            "retention purge failed; it is tried again at the next interval",
          );
        })
        .finally(() => {
          this.#running = null;
        });
    };
    tick();
    this.#timer = setInterval(tick, this.deps.intervalMs);
    this.#timer.unref();
  }

  /** Stops after the batch under way: a backlog need not be worked off before shutdown. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearInterval(this.#timer);
    await this.#running;
  }

  /** Removes every session closed longer ago than the retention period, auditing each batch. */
  async purge(): Promise<RetentionRun> {
    const { store, audit, keepMs, now, logger } = this.deps;
    const closedBefore = now() - keepMs;
    const run: RetentionRun = { sessions: 0, events: 0, closedBefore };
    while (!this.#stopping) {
      const removed = await store.purgeClosedSessions(closedBefore, PURGE_BATCH);
      if (removed.sessions === 0) break;
      const details = {
        reason: `closed more than ${keepMs / 86_400_000} days ago (retention.closedSessionsDays)`,
        closedBefore: new Date(closedBefore).toISOString(),
        sessions: removed.ids,
        events: removed.events,
      };
      try {
        await audit.record(SYSTEM_ACTOR, "sessions.purge", null, details);
      } catch (error) {
        // The sessions are gone already: what went is logged in full, so that it is
        // not lost with the entry, and purging stops until the store takes writes again.
        logger.error({ err: error, ...details }, "purged sessions could not be written to the audit log");
        throw error;
      }
      run.sessions += removed.sessions;
      run.events += removed.events;
    }
    if (run.sessions > 0) logger.info(run, "purged closed sessions past their retention period");
    return run;
  }
}
