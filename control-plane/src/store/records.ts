/**
 * Checks both stores make on what callers hand them, so a record one backend
 * accepts the other accepts too, with the same message.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import type { ApiKeyRecord, AuditRecord, NewEvent, StoredPolicyRecord } from "./types.js";

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

/** A stored policy's body as the JSON text a store keeps. */
export function policyBodyJson(policy: StoredPolicyRecord): string {
  return objectJson(policy.body, `the body of policy ${policy.name}`, "is");
}

/**
 * The refusal of an API key whose id or key hash is stored already, naming the
 * stored key it clashes with; `clashId` null when a store only knows that one
 * of the two was taken. The message names ids only, never a key or its hash.
 */
export function apiKeyClash(key: ApiKeyRecord, clashId: string | null): GatehouseError {
  return new GatehouseError(
    "GATE_INVALID_REQUEST",
    clashId === key.id
      ? `API key ${key.id} already exists; API key ids must be unique`
      : clashId === null
        ? `API key ${key.id} has the same id or key as a stored API key; use a new id and make a new key`
        : `API key ${key.id} has the same key as API key ${clashId}; make a new key`,
  );
}

function objectJson(
  value: Record<string, unknown> | undefined,
  what: string,
  verb: "is" | "are" = "are",
): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value ?? {});
  } catch (cause) {
    throw new GatehouseError(
      "GATE_INVALID_REQUEST",
      `${what} ${verb} not plain JSON (${cause instanceof Error ? cause.message : String(cause)}); send only JSON values`,
      { cause },
    );
  }
  if (text === undefined || !text.startsWith("{")) {
    throw new GatehouseError("GATE_INVALID_REQUEST", `${what} must be a JSON object`);
  }
  return text;
}
