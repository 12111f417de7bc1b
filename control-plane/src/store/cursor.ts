import { GatehouseError } from "@gatehouse/proto/errors";
import type { Page } from "./types.js";

/**
 * Where a newest-first listing stopped: the sort key of the last item it
 * returned (a session's, API key's or approval's `createdAt`, an audit entry's `at`, and
 * the id that breaks ties). Both stores use this one encoding, so a cursor
 * means the same whichever backend issued it.
 */
export interface KeysetCursor {
  time: number;
  id: string;
}

/**
 * Encodes the sort key of a page's last item. Callers treat the result as
 * opaque; it is base64url so it travels in a query string unescaped.
 *
 * @see https://www.rfc-editor.org/rfc/rfc4648#section-5
 */
export function encodeKeysetCursor(cursor: KeysetCursor): string {
  return Buffer.from(JSON.stringify([cursor.time, cursor.id]), "utf8").toString("base64url");
}

/**
 * Reads a cursor made by {@link encodeKeysetCursor}; anything else is the
 * caller's mistake. `listing` names what was being paged, for the message.
 */
export function decodeKeysetCursor(
  text: string,
  listing: "session list" | "audit log" | "API key list" | "approval list",
): KeysetCursor {
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
    return { time: value[0] as number, id: value[1] };
  }
  throw new GatehouseError(
    "GATE_INVALID_REQUEST",
    `the ${listing} cursor is not one this server issued; pass the nextCursor of the previous page unchanged, or omit it to start from the newest entry`,
  );
}

/** The largest page a listing returns, whatever limit the caller asks for. */
export const MAX_PAGE = 1000;

/**
 * Checks a caller's page size and caps it at {@link MAX_PAGE}; a limit that is
 * not a positive whole number is the caller's mistake.
 */
export function pageLimit(limit: number): number {
  return Math.min(
    positiveLimit(limit, `limit must be a positive whole number (a page holds at most ${MAX_PAGE})`),
    MAX_PAGE,
  );
}

/** How many sessions one purge call may delete: a positive whole number, or the caller erred. */
export function purgeLimit(limit: number): number {
  return positiveLimit(limit, "a purge deletes a positive whole number of sessions per call");
}

function positiveLimit(limit: number, rule: string): number {
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new GatehouseError("GATE_INVALID_REQUEST", `${rule}; got ${String(limit)}`);
  }
  return limit;
}

/**
 * A page from `items`, read with `limit + 1` so that whether more follow is
 * known without another query; the cursor is the key of the page's last item.
 */
export function keysetPage<T>(items: T[], limit: number, keyOf: (item: T) => KeysetCursor): Page<T> {
  const page = items.slice(0, limit);
  const last = page.at(-1);
  return {
    items: page,
    nextCursor: items.length > limit && last !== undefined ? encodeKeysetCursor(keyOf(last)) : null,
  };
}

/** The key sessions, API keys and approvals are listed by. */
export const sessionKey = (s: { createdAt: number; id: string }): KeysetCursor => ({
  time: s.createdAt,
  id: s.id,
});
/** The key audit entries are listed by. */
export const auditKey = (e: { at: number; id: string }): KeysetCursor => ({ time: e.at, id: e.id });
