/**
 * MongoDB connection strings carry credentials. Everything the store says
 * about one (error messages, and through them logs) uses the redacted form,
 * and any text that came from the driver is scrubbed of the secrets first.
 *
 * @see https://www.mongodb.com/docs/manual/reference/connection-string/
 */

/** Query options whose values are secrets, by lower-case name. */
const SECRET_OPTIONS = new Set([
  "password",
  "proxypassword",
  "tlscertificatekeyfilepassword",
  "sslpemkeypassword",
  // May hold AWS_SESSION_TOKEN, or other mechanism secrets.
  "authmechanismproperties",
]);

const MASK = "***";

interface UriParts {
  /** Scheme and `://`, or "" when the text has none. */
  scheme: string;
  /** What stands before the last `@` (user and password), or null when there is no `@`. */
  userinfo: string | null;
  /** Everything after the user information. */
  rest: string;
}

/**
 * Splits at the last `@` before the query, so a password with an unescaped
 * `@` or `/` (which the driver refuses, and so gets reported) is still hidden
 * whole, while an `@` in an option value (a key-file password, say) is left to
 * the option rules.
 */
function split(uri: string): UriParts {
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(uri)?.[0] ?? "";
  const body = uri.slice(scheme.length);
  const query = body.indexOf("?");
  const at = body.lastIndexOf("@", query < 0 ? body.length : query);
  return at < 0
    ? { scheme, userinfo: null, rest: body }
    : { scheme, userinfo: body.slice(0, at), rest: body.slice(at + 1) };
}

/**
 * The connection string with its password, and the values of options that hold
 * secrets, replaced by `***`; the user name, hosts, database and other options
 * stay, so an operator can tell which server and account were meant.
 */
export function redactMongoUri(uri: string): string {
  const { scheme, userinfo, rest } = split(uri);
  let user = "";
  if (userinfo !== null) {
    const colon = userinfo.indexOf(":");
    user = `${colon < 0 ? userinfo : `${userinfo.slice(0, colon)}:${MASK}`}@`;
  }
  return scheme + user + redactOptions(rest);
}

function redactOptions(rest: string): string {
  const question = rest.indexOf("?");
  if (question < 0) return rest;
  const options = rest
    .slice(question + 1)
    .split("&")
    .map((pair) => {
      const equals = pair.indexOf("=");
      if (equals < 0) return pair;
      const name = pair.slice(0, equals);
      return SECRET_OPTIONS.has(name.toLowerCase()) ? `${name}=${MASK}` : pair;
    });
  return `${rest.slice(0, question + 1)}${options.join("&")}`;
}

/** The value of a query option of the connection string (names compare case-insensitively), if given. */
export function uriOption(uri: string, name: string): string | undefined {
  const { rest } = split(uri);
  const question = rest.indexOf("?");
  if (question < 0) return undefined;
  for (const pair of rest.slice(question + 1).split("&")) {
    const equals = pair.indexOf("=");
    if (equals >= 0 && pair.slice(0, equals).toLowerCase() === name.toLowerCase())
      return pair.slice(equals + 1);
  }
  return undefined;
}

/** The secret parts of a connection string, as written and percent-decoded. */
function secretsOf(uri: string): string[] {
  const { userinfo, rest } = split(uri);
  const secrets: string[] = [];
  if (userinfo !== null) {
    const colon = userinfo.indexOf(":");
    if (colon >= 0) secrets.push(userinfo.slice(colon + 1));
  }
  const question = rest.indexOf("?");
  if (question >= 0) {
    for (const pair of rest.slice(question + 1).split("&")) {
      const equals = pair.indexOf("=");
      if (equals >= 0 && SECRET_OPTIONS.has(pair.slice(0, equals).toLowerCase())) {
        const value = pair.slice(equals + 1);
        secrets.push(value);
        // authMechanismProperties is `KEY:value,KEY:value`: each value may be quoted alone.
        for (const property of value.split(/,|%2C/i)) {
          const colon = property.search(/:|%3A/i);
          if (colon >= 0) secrets.push(property.slice(colon).replace(/^(:|%3A)/i, ""));
        }
      }
    }
  }
  const all = new Set<string>();
  for (const secret of secrets) {
    if (secret === "") continue;
    all.add(secret);
    try {
      all.add(decodeURIComponent(secret));
    } catch {
      // Not valid percent-encoding: only the text as written can appear.
    }
  }
  // Longest first, so a secret that contains another is hidden whole.
  return [...all].sort((a, b) => b.length - a.length);
}

/**
 * `text` (a driver's message, say) with the connection string replaced by its
 * redacted form and every secret of it replaced by `***`.
 */
export function scrubSecrets(text: string, uri: string): string {
  let scrubbed = uri === "" ? text : text.split(uri).join(redactMongoUri(uri));
  for (const secret of secretsOf(uri)) scrubbed = scrubbed.split(secret).join(MASK);
  return scrubbed;
}
