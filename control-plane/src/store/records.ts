/**
 * Checks both stores make on what callers hand them, so a record one backend
 * accepts the other accepts too, with the same message.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import type { AuditRecord, NewEvent } from "./types.js";

/**
 * An event's attrs as the JSON text a store keeps. Both stores chain what they
 * will read back, attrs as they survive JSON, so a value JSON alters (a Date,
 * say) cannot break the chain later.
 */
export function eventAttrsJson(event: NewEvent): string {
  return objectJson(event.attrs, `the attrs of event ${event.id}`);
}

/** An audit entry's details as the JSON text a store keeps. */
export function auditDetailsJson(entry: AuditRecord): string {
  return objectJson(entry.details, `the details of audit entry ${entry.id}`);
}

function objectJson(value: Record<string, unknown> | undefined, what: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value ?? {});
  } catch (cause) {
    throw new GatehouseError(
      "GATE_INVALID_REQUEST",
      `${what} are not plain JSON (${cause instanceof Error ? cause.message : String(cause)}); send only JSON values`,
      { cause },
    );
  }
  if (text === undefined || !text.startsWith("{")) {
    throw new GatehouseError("GATE_INVALID_REQUEST", `${what} must be a JSON object`);
  }
  return text;
}
