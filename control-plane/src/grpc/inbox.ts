/**
 * The messages of a stream, taken in groups: everything that arrived while the
 * previous group was being handled. Handling a group at once lets the AgentLink
 * store several event batches in one transaction (one commit, one fsync) when
 * an agent sends faster than single commits would keep up with. The stream is
 * paused while `highWater` messages wait, so a slow store slows the agent down
 * (gRPC flow control) instead of filling memory.
 */
import type { Readable } from "node:stream";

export class Inbox<T> {
  private queue: T[] = [];
  private ended = false;
  private failure: { error: unknown } | null = null;
  private wake: (() => void) | null = null;

  constructor(
    private readonly stream: Readable,
    private readonly highWater: number,
  ) {
    stream.on("data", (message: T) => {
      this.queue.push(message);
      if (this.queue.length >= highWater) stream.pause();
      this.notify();
    });
    // A cancelled gRPC call ('cancelled') or a destroyed stream ('close') ends without 'end'.
    for (const ending of ["end", "close", "cancelled"]) {
      stream.on(ending, () => {
        this.ended = true;
        this.notify();
      });
    }
    stream.on("error", (error: unknown) => {
      this.failure = { error };
      this.notify();
    });
  }

  /**
   * Up to `max` waiting messages (at least one), or null once the stream has
   * ended; rejects with the stream's error; rejects after `timeoutMs` with
   * `onTimeout()` when one is given and nothing arrived.
   */
  async take(max = this.highWater, timeout?: { ms: number; error: () => Error }): Promise<T[] | null> {
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (timeout) {
      timer = setTimeout(() => {
        timedOut = true;
        this.notify();
      }, timeout.ms);
    }
    try {
      while (this.queue.length === 0) {
        if (this.failure) throw this.failure.error;
        if (this.ended) return null;
        if (timedOut && timeout) throw timeout.error();
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      clearTimeout(timer);
    }
    const taken = this.queue.splice(0, max);
    if (this.queue.length < this.highWater) this.stream.resume();
    return taken;
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }
}
