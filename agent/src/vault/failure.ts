/**
 * Vault's failures, described for messages and log lines. A described failure
 * carries Vault's status and its `errors` text, or the network error, and
 * nothing else: the errors node-vault and axios raise hold the request, whose
 * headers carry the Vault token, so they are never logged or wrapped as they are.
 *
 * @see https://developer.hashicorp.com/vault/api-docs#error-response
 */

/** What went wrong in one Vault request, safe to log and to show. */
export interface VaultFailure {
  /** The HTTP status Vault answered with; undefined when no answer came (network, TLS, timeout). */
  readonly status: number | undefined;
  /** E.g. `403: permission denied`, `ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:8200`. */
  readonly text: string;
  /**
   * Vault could not be reached or could not answer (no answer, 5xx, 429): the
   * failure says nothing about the secret, so a cached one may go on serving.
   */
  readonly unreachable: boolean;
}

/** Vault's messages are short; a proxy in front of it may answer with a whole page. */
const MAX_TEXT = 300;

function clip(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT)}…` : text;
}

/**
 * One of Vault's error texts on one line. Vault 1.x wraps several (and often one) in a
 * multierror: "1 error occurred:\n\t* permission denied\n\n"; only the items are kept.
 */
function oneLine(text: string): string {
  const items = /^\d+ errors? occurred:/.test(text)
    ? [...text.matchAll(/^\s*\* (.+)$/gm)].map((match) => match[1] ?? "")
    : [text];
  return items.map((item) => item.replace(/\s+/g, " ").trim()).join("; ");
}

function field(value: unknown, name: string): unknown {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>)[name] : undefined;
}

/** A failure of the agent's own (a file, an answer without the expected fields): never "unreachable". */
export function localFailure(text: string): VaultFailure {
  return { status: undefined, text: clip(text), unreachable: false };
}

/** Describes an error thrown by a node-vault call. */
export function describeVaultError(error: unknown): VaultFailure {
  // node-vault's ApiResponseError: Vault answered, with a status other than 200/204.
  const response = field(error, "response");
  const status = field(response, "statusCode");
  if (typeof status === "number") {
    const errors = field(field(response, "body"), "errors");
    const said =
      Array.isArray(errors) && errors.length > 0
        ? errors.map((e) => oneLine(String(e))).join("; ")
        : "no error text";
    return { status, text: clip(`${status}: ${said}`), unreachable: status >= 500 || status === 429 };
  }
  // No answer: axios's network, TLS and timeout errors have a code such as ECONNREFUSED.
  const code = field(error, "code");
  const message = field(error, "message");
  const said = typeof message === "string" ? message : "";
  if (typeof code === "string") {
    return {
      status: undefined,
      text: clip(said.includes(code) ? said : said ? `${code}: ${said}` : code),
      unreachable: true,
    };
  }
  return localFailure(said || String(error));
}
