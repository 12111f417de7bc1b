/**
 * Time as the agent's timed work sees it (Vault tokens, leases, cached
 * secrets), passed in so that tests can move it forward instead of waiting.
 */

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /**
   * Runs `task` once `ms` have passed; the returned function cancels it. A
   * pending task never keeps the process alive.
   */
  after(ms: number, task: () => void): () => void;
}

/** The system clock, with unref'd timers. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, task) {
    const timer = setTimeout(task, Math.max(0, ms));
    timer.unref();
    return () => clearTimeout(timer);
  },
};
