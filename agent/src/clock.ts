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

/**
 * setTimeout's longest delay (2^31−1 ms, about 24.8 days): Node runs a longer one after 1 ms,
 * which, for a token or lease renewed at 2/3 of a long TTL, would renew it again and again.
 * @see https://nodejs.org/api/timers.html#settimeoutcallback-delay-args
 */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The system clock, with unref'd timers; a delay beyond {@link MAX_TIMER_MS} is waited out in steps. */
export const systemClock: Clock = {
  now: () => Date.now(),
  after(ms, task) {
    const due = Date.now() + Math.max(0, ms);
    let timer: NodeJS.Timeout;
    const arm = (): void => {
      const left = due - Date.now();
      timer = setTimeout(left > MAX_TIMER_MS ? arm : task, Math.min(Math.max(0, left), MAX_TIMER_MS));
      timer.unref();
    };
    arm();
    return () => clearTimeout(timer);
  },
};
