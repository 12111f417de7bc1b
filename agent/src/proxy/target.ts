/**
 * Where a client's request goes upstream. The agent sends the connection's
 * real credential with every request, so the URL it requests must be provably
 * inside the connection: same origin, below the connection's base path.
 *
 * The path a client sends is checked twice. First its text: it must be a plain
 * absolute path, since the WHATWG URL parser reads `//host` and `/\host` as
 * another authority, resolves `.`/`..` segments (also percent-encoded, any
 * case), treats `\` as `/` and drops tabs and newlines. Servers behind the
 * upstream may read more into a path than the URL parser does: servlet
 * containers drop `;params` from a segment (`..;x` is `..` to them), and a
 * server or gateway that decodes twice turns `%252e` into `.`; those are refused
 * too. Then the resolved URL: its origin must be the upstream's and its path
 * must start with the base path.
 *
 * @see https://url.spec.whatwg.org/#concept-basic-url-parser
 * @see https://www.rfc-editor.org/rfc/rfc3986#section-5.2.4 (remove_dot_segments)
 */
import { GatehouseError } from "@gatehouse/proto/errors";

/** A request's place upstream, and the path as recorded (below the connection prefix). */
export interface UpstreamTarget {
  /** The URL requested upstream; only its path and query are sent with the origin's pool. */
  url: URL;
  /** The path and query actually requested, relative to the connection's base path. */
  path: string;
}

/** `.` or `..`, where each dot may be written `%2e` or `%2E`. */
const DOT_SEGMENT = /^(?:\.|%2e){1,2}$/i;
/** Where a segment's path parameters begin (`;`, or `%3B` for a server that decodes first). */
const SEGMENT_PARAMS = /;|%3b/i;
/**
 * Encoded `/` or `\`: a server that decodes before routing would see a separator the
 * checks here did not, so `..%2f` could climb out of the base path over there.
 */
const ENCODED_SEPARATOR = /%(?:2f|5c)/i;
/**
 * `.`, `/` or `\` encoded twice or more (`%252e`, `%25252e`): to a server that decodes once
 * more than the URL parser does, it is a dot or a separator.
 */
const DOUBLE_ENCODED = /%25(?:25)*(?:2e|2f|5c)/i;
/** Controls and spaces: the URL parser drops tabs and newlines, which could make `.\t.` a `..`. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what this matches
const CONTROL = /[\u0000-\u0020\u007f]/;

function invalid(reason: string): GatehouseError {
  return new GatehouseError(
    "GATE_INVALID_REQUEST",
    `request path ${reason}; use the path below the proxy URL the session gave you, e.g. /v1/messages`,
  );
}

/**
 * The upstream URL for `path` (below the connection prefix, with query) on the
 * connection whose upstream is `upstream`.
 *
 * @throws GatehouseError GATE_INVALID_REQUEST when the path is not a plain absolute
 *   path, or would resolve outside the upstream's origin or base path.
 */
export function upstreamTarget(upstream: URL, path: string): UpstreamTarget {
  const basePath = upstream.pathname.replace(/\/+$/, "");
  const queryAt = path.search(/[?#]/);
  const pathname = queryAt === -1 ? path : path.slice(0, queryAt);
  if (!pathname.startsWith("/")) throw invalid("must start with /");
  if (pathname.startsWith("//")) throw invalid("must not start with //");
  if (pathname.includes("\\")) throw invalid("must not contain a backslash");
  if (CONTROL.test(pathname)) throw invalid("must not contain spaces or control characters");
  if (ENCODED_SEPARATOR.test(pathname)) throw invalid("must not contain an encoded / or \\ (%2F, %5C)");
  if (DOUBLE_ENCODED.test(pathname)) {
    throw invalid("must not contain a twice-encoded . / or \\ (%252E, %252F, %255C)");
  }
  // A segment is judged without its parameters: `..;x` is a `..` to a servlet container.
  if (pathname.split("/").some((segment) => DOT_SEGMENT.test(segment.split(SEGMENT_PARAMS, 1)[0] ?? ""))) {
    throw invalid("must not contain . or .. segments");
  }

  const url = new URL(basePath + path, upstream.origin);
  // What the text checks above should make impossible, checked on what is actually requested.
  if (url.origin !== upstream.origin) throw invalid("resolves to another host");
  if (!url.pathname.startsWith(`${basePath}/`)) {
    throw invalid("resolves outside the connection's upstream path");
  }
  url.hash = "";
  return { url, path: url.pathname.slice(basePath.length) + url.search };
}
