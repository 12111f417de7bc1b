/**
 * Every error Gatehouse reports carries one of these stable codes. Callers match
 * on the code, never on the message. docs/errors.md lists them for users.
 *
 * `blame` says whose move it is: the caller fixes its request (4xx, message
 * shown), an operator fixes configuration, upstream or the network failed
 * (502/503/504), or Gatehouse has a bug (500, details logged, not shown).
 */
export const ERROR_CODES = {
  GATE_INVALID_REQUEST: { status: 400, blame: "caller" },
  GATE_INVALID_JSON: { status: 400, blame: "caller" },
  GATE_UNAUTHENTICATED: { status: 401, blame: "caller" },
  GATE_TOKEN_INVALID: { status: 401, blame: "caller" },
  GATE_TOKEN_EXPIRED: { status: 401, blame: "caller" },
  GATE_TOKEN_REVOKED: { status: 401, blame: "caller" },
  GATE_FORBIDDEN: { status: 403, blame: "caller" },
  GATE_WRONG_CONNECTION: { status: 403, blame: "caller" },
  GATE_POLICY_DENIED: { status: 403, blame: "caller" },
  GATE_APPROVAL_DENIED: { status: 403, blame: "caller" },
  GATE_APPROVAL_EXPIRED: { status: 403, blame: "caller" },
  GATE_NOT_FOUND: { status: 404, blame: "caller" },
  GATE_CONFLICT: { status: 409, blame: "caller" },
  GATE_CONNECTION_NOT_FOUND: { status: 404, blame: "caller" },
  GATE_BODY_TOO_LARGE: { status: 413, blame: "caller" },
  GATE_RECORD_TOO_LARGE: { status: 413, blame: "caller" },
  /** Not sent to anyone: records that the client left before its response was complete. */
  GATE_CLIENT_GONE: { status: 499, blame: "caller" },
  GATE_CONFIG_INVALID: { status: 500, blame: "operator" },
  GATE_NOT_READY: { status: 503, blame: "operator" },
  GATE_NO_AGENT: { status: 503, blame: "operator" },
  GATE_CREDENTIAL_UNAVAILABLE: { status: 503, blame: "operator" },
  GATE_APPROVAL_UNAVAILABLE: { status: 503, blame: "operator" },
  GATE_STORE_UNAVAILABLE: { status: 503, blame: "upstream" },
  GATE_IDENTITY_UNAVAILABLE: { status: 503, blame: "upstream" },
  GATE_UPSTREAM_UNREACHABLE: { status: 502, blame: "upstream" },
  GATE_UPSTREAM_PROTOCOL: { status: 502, blame: "upstream" },
  GATE_UPSTREAM_TIMEOUT: { status: 504, blame: "upstream" },
  GATE_INTERNAL: { status: 500, blame: "internal" },
} as const satisfies Record<
  string,
  { status: number; blame: "caller" | "operator" | "upstream" | "internal" }
>;

export type ErrorCode = keyof typeof ERROR_CODES;

/** The JSON body of every error the REST API returns. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

/**
 * The one error class of Gatehouse. The message says what was wrong and what to
 * do about it; it must never contain a credential or token.
 */
export class GatehouseError extends Error {
  override readonly name = "GatehouseError";
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }

  /** HTTP status for this error. */
  get status(): number {
    return ERROR_CODES[this.code].status;
  }

  /** Internal errors are logged, and callers see a generic message instead. */
  get expose(): boolean {
    return ERROR_CODES[this.code].blame !== "internal";
  }

  /** The body to send to an HTTP caller. */
  toBody(): ErrorBody {
    return {
      error: {
        code: this.code,
        message: this.expose ? this.message : "internal error; the details are in the server log",
      },
    };
  }
}

export function isGatehouseError(value: unknown): value is GatehouseError {
  return value instanceof GatehouseError;
}

/** Wraps anything thrown into a GatehouseError, keeping known ones as they are. */
export function asGatehouseError(value: unknown): GatehouseError {
  if (value instanceof GatehouseError) return value;
  return new GatehouseError("GATE_INTERNAL", value instanceof Error ? value.message : String(value), {
    cause: value,
  });
}
