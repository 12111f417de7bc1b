/**
 * An agent account's connection scope: the connections its agents may serve
 * and record for. A scope of null is every connection. An agent's hello names
 * the connections it asks to serve (none: all it may); they must lie within
 * its account's scope.
 */

/** Whether `connection` lies within `scope`. */
export function inScope(scope: readonly string[] | null, connection: string): boolean {
  return scope === null || scope.includes(connection);
}

/** The connections of `asked` that lie outside `scope`, in the order asked. */
export function outsideScope(scope: readonly string[] | null, asked: readonly string[]): string[] {
  return asked.filter((connection) => !inScope(scope, connection));
}

/**
 * The connections a link serves, given what its hello asked for (already
 * checked against the scope): what it asked, or else its whole scope. Empty
 * means every connection, as in a hello.
 */
export function servedConnections(scope: readonly string[] | null, asked: readonly string[]): string[] {
  if (asked.length > 0) return [...asked];
  return scope === null ? [] : [...scope];
}

/** The connections a link serves (empty: every one, as in a hello) as a scope. */
export function servedScope(served: readonly string[]): readonly string[] | null {
  return served.length === 0 ? null : served;
}

/** The scope as a person reads it in a message. */
export function describeScope(scope: readonly string[] | null): string {
  return scope === null ? "every connection" : scope.map((c) => `'${c}'`).join(", ");
}
