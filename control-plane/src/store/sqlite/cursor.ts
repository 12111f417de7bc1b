import { GatehouseError } from "@gatehouse/proto/errors";

/** Where a session listing stopped: the sort key of the last session it returned. */
export interface SessionCursor {
  createdAt: number;
  id: string;
}

/**
 * Encodes the sort key of a page's last session. Callers treat the result as
 * opaque; it is base64url so it travels in a query string unescaped.
 *
 * @see https://www.rfc-editor.org/rfc/rfc4648#section-5
 */
export function encodeSessionCursor(cursor: SessionCursor): string {
  return Buffer.from(JSON.stringify([cursor.createdAt, cursor.id]), "utf8").toString("base64url");
}

/** Reads a cursor made by {@link encodeSessionCursor}; anything else is the caller's mistake. */
export function decodeSessionCursor(text: string): SessionCursor {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, "base64url").toString("utf8"));
  } catch {
    value = undefined;
  }
  if (
    Array.isArray(value) &&
    value.length === 2 &&
    Number.isSafeInteger(value[0]) &&
    typeof value[1] === "string"
  ) {
    return { createdAt: value[0] as number, id: value[1] };
  }
  throw new GatehouseError(
    "GATE_INVALID_REQUEST",
    "the session list cursor is not one this server issued; pass the nextCursor of the previous page unchanged, or omit it to start from the newest session",
  );
}
