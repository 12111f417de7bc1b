/**
 * Times as the REST API shows them. Records keep milliseconds (events,
 * microseconds) since the Unix epoch; people and clients read ISO 8601 in UTC.
 */

/** Milliseconds since the epoch as ISO 8601, e.g. `2025-01-31T12:00:00.000Z`. */
export const iso = (ms: number): string => new Date(ms).toISOString();

/** As {@link iso}, keeping null (a time not reached yet: not closed, never seen). */
export const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

/** Microseconds since the epoch (event times) as ISO 8601, to the millisecond. */
export const isoMicros = (us: number): string => iso(Math.floor(us / 1000));
