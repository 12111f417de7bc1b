/** Translation of AgentLink session events into the store's event records. */
import { type SessionEvent__Output, sessionEventCodec } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { NewEvent } from "../store/types.js";

const OUTCOMES: Record<string, string> = {
  OUTCOME_COMPLETED: "completed",
  OUTCOME_CANCELLED: "cancelled",
  OUTCOME_FAILED: "failed",
  OUTCOME_REFUSED: "refused",
};

const headerPairs = (headers: ReadonlyArray<{ name: string; value: string }>) =>
  headers.map((h) => [h.name, h.value]);

export function toNewEvent(e: SessionEvent__Output): NewEvent {
  const base = { id: e.id, sessionId: e.sessionId, exchangeId: e.exchangeId, at: e.timeUnixMicros };
  if (!e.id || !e.sessionId || !e.exchangeId) {
    throw new GatehouseError("GATE_INVALID_REQUEST", "session event without id, session id or exchange id");
  }
  switch (e.payload) {
    case "requestHead": {
      const h = e.requestHead;
      if (!h) break;
      return {
        ...base,
        kind: "request.head",
        attrs: {
          connection: h.connection,
          kind: h.kind,
          method: h.method,
          path: h.path,
          headers: headerPairs(h.headers),
        },
        body: null,
      };
    }
    case "requestBody":
      return { ...base, kind: "request.body", attrs: {}, body: e.requestBody?.data ?? Buffer.alloc(0) };
    case "responseHead": {
      const h = e.responseHead;
      if (!h) break;
      return {
        ...base,
        kind: "response.head",
        attrs: { status: h.status, headers: headerPairs(h.headers) },
        body: null,
      };
    }
    case "responseBody":
      return { ...base, kind: "response.body", attrs: {}, body: e.responseBody?.data ?? Buffer.alloc(0) };
    case "sse": {
      const s = e.sse;
      if (!s) break;
      return { ...base, kind: "response.sse", attrs: { event: s.event, data: s.data }, body: null };
    }
    case "exchangeEnd": {
      const end = e.exchangeEnd;
      if (!end) break;
      return {
        ...base,
        kind: "exchange.end",
        attrs: {
          outcome: OUTCOMES[end.outcome] ?? "unknown",
          status: end.status,
          errorCode: end.errorCode,
          errorMessage: end.errorMessage,
          requestBytes: end.requestBytes,
          responseBytes: end.responseBytes,
        },
        body: null,
      };
    }
    default:
      break;
  }
  throw new GatehouseError(
    "GATE_INVALID_REQUEST",
    `session event ${e.id} has no payload this control plane understands`,
  );
}

/** An encoded SessionEvent from an EventBatch, as a store event record. */
export function decodeEvent(bytes: Uint8Array): NewEvent {
  let event: SessionEvent__Output;
  try {
    event = sessionEventCodec.decode(bytes);
  } catch (cause) {
    throw new GatehouseError("GATE_INVALID_REQUEST", "an event in the batch is not an encoded SessionEvent", {
      cause,
    });
  }
  return toNewEvent(event);
}
