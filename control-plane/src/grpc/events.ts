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

/**
 * A decoded SessionEvent as a store event record. A payload this control plane
 * does not translate (a newer agent's) is kept as an `unrecognized` event
 * holding `raw`, the event as it was encoded, so nothing the agent recorded is
 * lost and a later version can still read it.
 *
 * @param where names the event in an error, e.g. "event 3 of the batch from spool seq 17".
 */
export function toNewEvent(e: SessionEvent__Output, raw: Uint8Array, where: string): NewEvent {
  if (!e.id || !e.sessionId || !e.exchangeId) {
    throw new GatehouseError(
      "GATE_INVALID_REQUEST",
      `${where} has no id, session id or exchange id; every SessionEvent carries all three`,
    );
  }
  const base = { id: e.id, sessionId: e.sessionId, exchangeId: e.exchangeId, at: e.timeUnixMicros };
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
          masked: end.masked ?? {},
        },
        body: null,
      };
    }
    case "decision": {
      const d = e.decision;
      if (!d) break;
      return {
        ...base,
        kind: "policy.decision",
        attrs: {
          policy: d.policy,
          rule: d.rule,
          action: d.action,
          stage: d.stage,
          message: d.message,
          matched: [...d.matched],
          approvalId: d.approvalId,
          approvalStatus: d.approvalStatus,
          decidedBy: d.decidedBy,
          reason: d.reason,
          toolUseId: d.toolUseId,
          toolName: d.toolName,
          preview: d.preview,
        },
        body: null,
      };
    }
    default:
      break;
  }
  // A payload field this version's contract lacks decodes as no payload at all, so its name is unknown.
  return {
    ...base,
    kind: "unrecognized",
    attrs: e.payload ? { payload: e.payload } : {},
    body: raw,
  };
}

/**
 * An encoded SessionEvent from an EventBatch, as a store event record. Bytes
 * that are no SessionEvent at all are a protocol error (GATE_INVALID_REQUEST
 * naming `where`): storing them would record nothing anyone can read.
 */
export function decodeEvent(bytes: Uint8Array, where: string): NewEvent {
  let event: SessionEvent__Output;
  try {
    event = sessionEventCodec.decode(bytes);
  } catch (cause) {
    throw new GatehouseError(
      "GATE_INVALID_REQUEST",
      `${where} is not an encoded SessionEvent (${cause instanceof Error ? cause.message : String(cause)}); the batch is refused`,
      { cause },
    );
  }
  return toNewEvent(event, bytes, where);
}
