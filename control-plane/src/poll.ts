/**
 * A job that reads the store on a fixed interval (one run at a time), for what other replicas
 * changed. A failing store is logged once when it starts failing and once when it is back, not
 * on every run.
 */
import type { Logger } from "pino";

export interface PollOptions {
  everyMs: number;
  run: () => Promise<unknown>;
  logger: Logger;
  /** Logged (warn) when runs start failing: what waits meanwhile. */
  failing: string;
  /** Logged (info) when a run succeeds again. */
  recovered: string;
}

export class Poll {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | null = null;
  private stopped = false;
  private failed = false;

  constructor(private readonly options: PollOptions) {}

  /** The first run is one interval from now. */
  start(): void {
    this.schedule();
  }

  /** Stops; resolves once a run under way has finished (so the store can be closed). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.running = this.runOnce().then(() => {
        this.running = null;
        this.schedule();
      });
    }, this.options.everyMs);
    this.timer.unref();
  }

  private async runOnce(): Promise<void> {
    const { run, logger } = this.options;
    try {
      await run();
      if (this.failed) logger.info(this.options.recovered);
      this.failed = false;
    } catch (error) {
      if (!this.failed) logger.warn({ err: error }, this.options.failing);
      this.failed = true;
    }
  }
}
