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

/** Fields that carry a credential or a session token: never recorded, never relayed as they are. */
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
