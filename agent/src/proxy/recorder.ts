/**
 * Turns one exchange (a request and its response) into ordered session events
 * and hands them to the spool. Bodies are cut into bounded chunks so no event
 * outgrows a link message or a store document.
 */

import { randomUUID } from "node:crypto";
import type { Header, Outcome, PolicyDecision, SessionEvent } from "@gatehouse/proto";

/** Largest body slice in one event. */
export const MAX_CHUNK_BYTES = 256 * 1024;

export interface EventSink {
  append(event: SessionEvent): number;
}

/** What is known of an exchange once it is over. */
export interface FinishedExchange {
  sessionId: string;
  exchangeId: string;
  connection: string;
  kind: string;
  outcome: Outcome;
  status: number;
  /** Secrets masked in the response, per type (counts only, never values). */
  masked: Record<string, number>;
}

/** Told of every exchange once its last event is recorded (metrics, tests). */
export type ExchangeListener = (exchange: FinishedExchange) => void;

export interface ExchangeEnd {
  outcome: Outcome;
  status: number;
  errorCode?: string;
  errorMessage?: string;
}

/** Microseconds since the epoch, with sub-millisecond resolution. */
export function nowMicros(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

export class ExchangeRecorder {
  readonly exchangeId = randomUUID();
  private index = 0;
  private requestBytes = 0;
  private responseBytes = 0;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;
  private readonly maskedCounts: Record<string, number> = {};

  private connection = "";
  private kind = "";

  constructor(
    private readonly sink: EventSink,
    readonly sessionId: string,
    private readonly onFinished: ExchangeListener,
  ) {}

  requestHead(head: {
    connection: string;
    kind: string;
    method: string;
    path: string;
    headers: Header[];
  }): void {
    // The finished exchange carries these to metrics and listeners.
    this.connection = head.connection;
    this.kind = head.kind;
    this.emit({ requestHead: head });
  }

  requestBody(body: Buffer): void {
    this.requestBytes += body.length;
    for (let at = 0; at < body.length; at += MAX_CHUNK_BYTES) {
      this.emit({ requestBody: { data: body.subarray(at, at + MAX_CHUNK_BYTES) } });
    }
  }

  responseHead(status: number, headers: Header[]): void {
    this.emit({ responseHead: { status, headers } });
  }

  /** A slice of a non-streamed response body; slices are coalesced up to the chunk size. */
  responseBody(chunk: Buffer): void {
    this.responseBytes += chunk.length;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= MAX_CHUNK_BYTES) this.flushBody();
  }

  /** One server-sent event of a streamed response; `bytes` is the size of its block as relayed. */
  sse(event: string, data: string, bytes: number): void {
    this.responseBytes += bytes;
    this.emit({ sse: { event, data } });
  }

  /** A policy rule matched, or an approval it asked for was answered. */
  decision(decision: PolicyDecision): void {
    this.emit({ decision });
  }

  /** Notes that `count` secrets of `type` were masked in the response. */
  masked(type: string, count: number): void {
    this.maskedCounts[type] = (this.maskedCounts[type] ?? 0) + count;
  }

  /**
   * Response bytes the client was sent that make no event of their own: event-stream blocks
   * without data (comments, keep-alives, `retry`) and Gatehouse's own error bodies. Counted so
   * that `responseBytes` is what the client received.
   */
  sentBytes(bytes: number): void {
    this.responseBytes += bytes;
  }

  /**
   * Records how the exchange ended. Only the first call counts. Never throws: when the sink
   * refuses the event (a failed spool), the sink reports its own failure, and the listener is
   * told of the end regardless.
   */
  end(end: ExchangeEnd): void {
    if (this.ended) return;
    this.ended = true;
    try {
      this.flushBody();
      this.emit({
        exchangeEnd: {
          outcome: end.outcome,
          status: end.status,
          errorCode: end.errorCode ?? "",
          errorMessage: end.errorMessage ?? "",
          requestBytes: this.requestBytes,
          responseBytes: this.responseBytes,
          masked: { ...this.maskedCounts },
        },
      });
    } catch {
      // See above: the spool has already said why it stopped accepting events.
    } finally {
      this.onFinished({
        sessionId: this.sessionId,
        exchangeId: this.exchangeId,
        connection: this.connection,
        kind: this.kind,
        outcome: end.outcome,
        status: end.status,
        masked: { ...this.maskedCounts },
      });
    }
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private flushBody(): void {
    if (this.pendingBytes === 0) return;
    const body = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    for (let at = 0; at < body.length; at += MAX_CHUNK_BYTES) {
      this.emit({ responseBody: { data: body.subarray(at, at + MAX_CHUNK_BYTES) } });
    }
  }

  private emit(payload: Omit<SessionEvent, "id" | "sessionId" | "exchangeId" | "timeUnixMicros">): void {
    this.sink.append({
      id: `${this.exchangeId}:${this.index++}`,
      sessionId: this.sessionId,
      exchangeId: this.exchangeId,
      timeUnixMicros: nowMicros(),
      ...payload,
    });
  }
}
