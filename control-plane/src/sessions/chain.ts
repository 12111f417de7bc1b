/**
 * The hash chain over a session's events. Each stored event's hash covers its
 * own content and the previous event's hash, so altering, removing or
 * reordering any event changes every hash after it; the seal signs the last.
 *
 * hash(e) = SHA-256( prevHash "\n" canonicalJSON(header(e)) "\n" SHA-256(body(e)) ), hex
 * where header(e) = {seq, id, sessionId, exchangeId, at, kind, attrs}.
 */
import { createHash } from "node:crypto";
import type { ChainTail, NewEvent, StoredEvent } from "../store/types.js";

/** The previous-hash of a session's first event. */
export const GENESIS_HASH = "0".repeat(64);

export const EMPTY_TAIL: ChainTail = Object.freeze({ count: 0, lastHash: GENESIS_HASH });

const EMPTY_BODY_HASH = createHash("sha256").digest("hex");

/** JSON with object keys sorted at every level, so both stores hash alike. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== "object") return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
}

export function eventHash(prevHash: string, event: NewEvent, seq: number): string {
  const header = canonicalJson({
    seq,
    id: event.id,
    sessionId: event.sessionId,
    exchangeId: event.exchangeId,
    at: event.at,
    kind: event.kind,
    attrs: event.attrs,
  });
  const bodyHash =
    event.body && event.body.byteLength > 0
      ? createHash("sha256").update(event.body).digest("hex")
      : EMPTY_BODY_HASH;
  return createHash("sha256").update(`${prevHash}\n${header}\n${bodyHash}`).digest("hex");
}

/** Extends a chain: gives `events` (all of one session) their seq and hash after `tail`. */
export function chainEvents(tail: ChainTail, events: NewEvent[]): { stored: StoredEvent[]; tail: ChainTail } {
  let { count, lastHash } = tail;
  const stored = events.map((event) => {
    count += 1;
    lastHash = eventHash(lastHash, event, count);
    return { ...event, seq: count, hash: lastHash };
  });
  return { stored, tail: { count, lastHash } };
}

export type ChainBreak = { seq: number; reason: string };

/**
 * Recomputes the chain over events read back in order, one at a time, and
 * stops at the first place where it does not hold (a gap, a reordering, or
 * altered content).
 */
export class ChainCheck {
  tail: ChainTail = EMPTY_TAIL;
  break: ChainBreak | null = null;

  /** Checks the next event; false once the chain is broken (here or before). */
  push(event: StoredEvent): boolean {
    if (this.break) return false;
    const expectedSeq = this.tail.count + 1;
    if (event.seq !== expectedSeq) {
      this.break = { seq: event.seq, reason: `expected event ${expectedSeq}, found ${event.seq}` };
      return false;
    }
    const hash = eventHash(this.tail.lastHash, event, event.seq);
    if (hash !== event.hash) {
      this.break = { seq: event.seq, reason: `event ${event.seq} does not match its hash` };
      return false;
    }
    this.tail = { count: event.seq, lastHash: hash };
    return true;
  }
}

export function verifyChain(events: Iterable<StoredEvent>): { tail: ChainTail; break: ChainBreak | null } {
  const check = new ChainCheck();
  for (const event of events) if (!check.push(event)) break;
  return { tail: check.tail, break: check.break };
}
