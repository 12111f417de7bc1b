/**
 * Turns driver and server failures into Gatehouse errors, split by blame:
 * the database cannot be reached or refuses us (GATE_STORE_UNAVAILABLE, the
 * caller may retry and the agent keeps its spool), the request itself was
 * wrong (GATE_INVALID_REQUEST), or something we did not expect
 * (GATE_INTERNAL). Messages name the redacted connection string and never
 * carry a credential.
 *
 * @see https://www.mongodb.com/docs/manual/reference/error-codes/
 * @see https://github.com/mongodb/specifications/blob/master/source/retryable-writes/retryable-writes.md
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import {
  MongoAPIError,
  MongoBulkWriteError,
  MongoError,
  MongoErrorLabel,
  MongoNetworkError,
  MongoServerError,
  MongoServerSelectionError,
  MongoTopologyClosedError,
} from "mongodb";
import { scrubSecrets } from "./uri.js";

/** E11000: a unique index refused a document. */
export const DUPLICATE_KEY = 11000;

/**
 * Server error codes that mean the server (or the replica set) cannot serve
 * us right now, not that the request was wrong: retrying later can succeed.
 */
const UNAVAILABLE_SERVER_CODES = new Set([
  6, // HostUnreachable
  7, // HostNotFound
  13, // Unauthorized: the account lacks a role; an operator must grant it
  18, // AuthenticationFailed
  89, // NetworkTimeout
  91, // ShutdownInProgress
  189, // PrimarySteppedDown
  262, // ExceededTimeLimit
  9001, // SocketException
  10107, // NotWritablePrimary
  11600, // InterruptedAtShutdown
  11602, // InterruptedDueToReplStateChange
  13435, // NotPrimaryNoSecondaryOk
  13436, // NotPrimaryOrSecondary
  64, // WriteConcernFailed (wtimeout): not known to be replicated
  100, // UnsatisfiableWriteConcern
  24, // LockTimeout
  46, // LockBusy
  112, // WriteConflict
  14031, // OutOfDiskSpace
]);

/** True when `error` is a duplicate-key refusal, as a single write or as the first failure of a bulk write. */
export function isDuplicateKey(error: unknown): boolean {
  if (error instanceof MongoBulkWriteError) {
    return writeErrorsOf(error).some((e) => e.code === DUPLICATE_KEY);
  }
  return error instanceof MongoServerError && error.code === DUPLICATE_KEY;
}

/** The write errors of a bulk write, however many the driver reported. */
export function writeErrorsOf(error: MongoBulkWriteError): Array<{ code: number; index: number }> {
  const list = Array.isArray(error.writeErrors) ? error.writeErrors : [error.writeErrors];
  return list.filter((e) => e !== undefined).map((e) => ({ code: e.code, index: e.index }));
}

/** True for failures where the database, not the request, is the problem. */
export function isUnavailable(error: unknown): boolean {
  if (
    error instanceof MongoNetworkError ||
    error instanceof MongoServerSelectionError ||
    error instanceof MongoTopologyClosedError
  ) {
    return true;
  }
  if (error instanceof MongoError) {
    if (
      error.hasErrorLabel(MongoErrorLabel.RetryableWriteError) ||
      error.hasErrorLabel(MongoErrorLabel.ResetPool) ||
      error.hasErrorLabel(MongoErrorLabel.SystemOverloadedError)
    ) {
      return true;
    }
    if (typeof error.code === "number" && UNAVAILABLE_SERVER_CODES.has(error.code)) return true;
  }
  return false;
}

/**
 * A Gatehouse error for a failure while `doing` something against the
 * database at `uri` (the connection string as configured; only its redacted
 * form is shown). The driver's error is not kept as the cause, only its text
 * with secrets removed: bulk write errors carry the documents that failed,
 * bodies included, and no driver message is trusted to leave passwords out.
 */
export function storeError(uri: string, doing: string, cause: unknown): GatehouseError {
  if (cause instanceof GatehouseError) return cause;
  const reason = scrubSecrets(describe(cause), uri);
  const where = scrubSecrets(uri, uri);
  // Only the scrubbed text is kept: loggers print a cause's own message too.
  const kept = new Error(reason);
  if (isUnavailable(cause)) {
    return new GatehouseError(
      "GATE_STORE_UNAVAILABLE",
      `the MongoDB session store at ${where} failed while ${doing} (${reason}); check that the server is running and reachable from this host, and that the account in the connection string may read and write the database`,
      { cause: kept },
    );
  }
  if (cause instanceof MongoAPIError && /larger than the maximum size/i.test(describe(cause))) {
    return new GatehouseError(
      "GATE_BODY_TOO_LARGE",
      `the MongoDB session store at ${where} cannot hold a document this large while ${doing}; send bodies in smaller chunks`,
      { cause: kept },
    );
  }
  return new GatehouseError(
    "GATE_INTERNAL",
    `the MongoDB session store at ${where} failed while ${doing}: ${reason}`,
    { cause: kept },
  );
}

/** The driver's message, with the server's error code when it has one. */
export function describe(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof MongoError && error.code !== undefined && !message.includes(String(error.code))) {
    return `${error.code}: ${message}`;
  }
  return message;
}
