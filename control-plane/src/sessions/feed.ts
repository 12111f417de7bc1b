/**
 * In-process notification that a session received events, so that live tails
 * (`/events?follow=1`) wake at once instead of polling. Events ingested by
 * another replica are found by the tail's periodic re-read.
 */
export class SessionFeed {
  private readonly waiters = new Map<string, Set<() => void>>();

  publish(sessionId: string): void {
    const set = this.waiters.get(sessionId);
    if (!set) return;
    this.waiters.delete(sessionId);
    for (const wake of set) wake();
  }

  /** Resolves at the next publish for the session, after `timeoutMs`, or on abort. */
  wait(sessionId: string, timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.waiters.get(sessionId)?.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener("abort", done, { once: true });
      let set = this.waiters.get(sessionId);
      if (!set) {
        set = new Set();
        this.waiters.set(sessionId, set);
      }
      set.add(done);
    });
  }
}
