/**
 * Header handling shared by every proxied protocol.
 * @see https://www.rfc-editor.org/rfc/rfc9110#section-7.6.1 (hop-by-hop fields)
 */
import type { IncomingHttpHeaders } from "node:http";
import type { Header } from "@gatehouse/proto";

/** Fields that describe one hop, never the message, so a proxy drops them. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Fields that carry a credential, a session token or a cookie: never recorded (the
 * record shows a marker). Upstream-bound, {@link upstreamRequestHeaders} drops the
 * client's: its session token is replaced by the connection's credential, and cookies
 * from the runner are none of the upstream API's business. Response fields
 * (`set-cookie`) reach the client unchanged.
 */
const CREDENTIAL_HEADERS = new Set([
  "authorization",
  "x-api-key",
  "cookie",
  "set-cookie",
  "proxy-authorization",
]);

export const REDACTED = "[REDACTED]";

export type HeaderMap = Record<string, string | string[] | undefined>;

/** Headers minus hop-by-hop fields, including any the Connection field names. */
export function endToEnd(headers: HeaderMap | IncomingHttpHeaders): Record<string, string | string[]> {
  const named = String(headers.connection ?? "")
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(name) || named.includes(name)) continue;
    out[name] = value;
  }
  return out;
}

/** Headers as recorded: end-to-end fields, credentials replaced by a marker. */
export function recordable(headers: Record<string, string | string[]>): Header[] {
  const out: Header[] = [];
  for (const [name, value] of Object.entries(headers)) {
    for (const v of Array.isArray(value) ? value : [value]) {
      out.push({ name, value: CREDENTIAL_HEADERS.has(name) ? REDACTED : v });
    }
  }
  return out;
}

/**
 * Fields of a client's request, from {@link endToEnd}, that must not go upstream: the
 * session token, the client's cookies, and framing the upstream request sets itself.
 */
const NOT_UPSTREAM = new Set(["authorization", "x-api-key", "cookie", "host", "content-length", "expect"]);

/** A client's end-to-end request headers as they may be sent upstream (before the credential is added). */
export function upstreamRequestHeaders(
  headers: Record<string, string | string[]>,
): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (!NOT_UPSTREAM.has(name)) out[name] = value;
  return out;
}
