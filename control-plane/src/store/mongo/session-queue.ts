/**
 * Runs work for one session at a time, in call order, while other sessions'
 * work runs alongside. The MongoDB store appends without transactions: two
 * writers that read the same chain tail collide on the next seq and one of
 * them retries. Within one process that collision is avoidable, so appends to
 * a session queue here, and retries are left for writers in other processes
 * (control-plane replicas).
 */
export class SessionQueue {
  readonly #tails = new Map<string, Promise<void>>();

  /** Starts `work` once every earlier call for `sessionId` has settled; resolves or rejects as it does. */
  run<T>(sessionId: string, work: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(sessionId) ?? Promise.resolve();
    const result = previous.then(work);
    const settled = result.then(
      () => undefined,
      () => undefined,
    );
    this.#tails.set(sessionId, settled);
    void settled.then(() => {
      // Only the last call in line removes the entry, so the map holds busy sessions only.
      if (this.#tails.get(sessionId) === settled) this.#tails.delete(sessionId);
    });
    return result;
  }

  /** Sessions with work queued or running. */
  get size(): number {
    return this.#tails.size;
  }
}
