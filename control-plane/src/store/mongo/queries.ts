/**
 * The queries behind session listings, built apart from the store so their
 * shape can be checked against the indexes (and against a server's `explain`)
 * without going through a listing.
 *
 * @see https://www.mongodb.com/docs/manual/tutorial/equality-sort-range-guideline/
 */
import type { Filter } from "mongodb";
import type { KeysetCursor } from "../cursor.js";
import type { SessionFilter } from "../types.js";
import { INDEX, type SessionDocument } from "./schema.js";

export interface SessionListQuery {
  filter: Filter<SessionDocument>;
  sort: { createdAt: -1; _id: -1 };
  /** The index the query is shaped for; see schema.ts. */
  hint: string;
}

/**
 * The query for one page of sessions after `after`, newest first. It follows
 * the equality, sort, range rule: the fields a filter pins (connection,
 * subjectId, closed) lead the hinted index, `(createdAt, _id)` follow in sort
 * order, and ranges (expiresAt, the createdAt bounds) are checked on index keys.
 * The cursor becomes `createdAt <= t` plus a tie-break on `_id`, so the walk
 * starts at the cursor rather than skipping to it.
 *
 * `maxTtlMs` is the longest lifetime any session has had: an open session was
 * created less than that long before `now`, which bounds how far back a listing
 * of open sessions must look.
 */
export function sessionListQuery(
  filter: Omit<SessionFilter, "limit" | "cursor">,
  after: KeysetCursor | null,
  maxTtlMs: number,
): SessionListQuery {
  const query: Filter<SessionDocument> = {};
  const createdAt: { $lte?: number; $gt?: number } = {};
  const status = filter.status;
  let hint: string;
  if (filter.connection !== undefined) {
    query.connection = filter.connection;
    hint = status === undefined ? INDEX.sessionsByConnection : INDEX.sessionsByConnectionState;
  } else if (filter.subjectId !== undefined) {
    hint = INDEX.sessionsBySubject;
  } else {
    hint = status === undefined ? INDEX.sessionsByTime : INDEX.sessionsByState;
  }
  if (filter.subjectId !== undefined) query.subjectId = filter.subjectId;
  if (status === "closed") {
    query.closed = true;
  } else if (status === "open") {
    query.closed = false;
    query.expiresAt = { $gt: filter.now };
    createdAt.$gt = filter.now - maxTtlMs;
  } else if (status === "expired") {
    query.closed = false;
    query.expiresAt = { $lte: filter.now };
  }
  if (after !== null) {
    createdAt.$lte = after.time;
    query.$or = [{ createdAt: { $lt: after.time } }, { _id: { $lt: after.id } }];
  }
  if (createdAt.$gt !== undefined || createdAt.$lte !== undefined) query.createdAt = createdAt;
  return { filter: query, sort: { createdAt: -1, _id: -1 }, hint };
}

/**
 * The filter of a newest-first page of `(field, _id)` after `after`; all
 * documents when it is null. As in {@link sessionListQuery}, `field <= t`
 * starts the walk at the cursor and `_id` breaks ties.
 */
export function keysetAfter<T extends { _id: string }>(
  field: "at" | "createdAt",
  after: KeysetCursor | null,
): Filter<T> {
  if (after === null) return {};
  return {
    [field]: { $lte: after.time },
    $or: [{ [field]: { $lt: after.time } }, { _id: { $lt: after.id } }],
  } as Filter<T>;
}
