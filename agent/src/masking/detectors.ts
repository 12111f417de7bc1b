/**
 * The secrets Gatehouse masks in responses: one detector per secret with a known shape.
 *
 * The table is written here rather than taken from a rule library: secretlint's rules
 * (@secretlint/secretlint-rule-preset-recommend) are modules that report through secretlint's
 * own lint context over whole files, with no reusable regular expressions and no bound on a
 * match's length, which a stream masker needs to know how much text to hold back.
 *
 * Every detector's match is bounded (`maxLength`), so a stream masker holds back a bounded tail.
 * Detectors whose match may contain whitespace (a PEM block, a `key = value` assignment) say so
 * with `pendingFrom`, which finds an incomplete match at the end of text; every other detector's
 * regular expression must not match whitespace, and looks at most one character behind its match.
 *
 * Token formats, as their issuers document them:
 * @see https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/ (ghp_, gho_, ghu_, ghs_, ghr_)
 * @see https://github.blog/changelog/2022-10-18-introducing-fine-grained-personal-access-tokens-for-github/ (github_pat_)
 * @see https://docs.gitlab.com/ee/security/tokens/#token-prefixes (glpat-, gldt-, glrt-…)
 * @see https://github.blog/changelog/2021-09-23-npm-has-a-new-access-token-format/ (npm_)
 * @see https://api.slack.com/authentication/token-types (xoxb-, xoxp-, xoxa-, xoxr-, xoxs-)
 * @see https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids (AKIA, ASIA)
 * @see https://learn.microsoft.com/azure/storage/common/storage-configure-connection-string (AccountKey=)
 * @see https://learn.microsoft.com/purview/sit-defn-azure-ad-client-secret (Entra client secret, `Q~`)
 * @see https://cloud.google.com/docs/authentication/api-keys (AIza)
 * @see https://docs.stripe.com/keys (sk_live_, rk_live_, sk_test_)
 * @see https://datatracker.ietf.org/doc/html/rfc7468 (PEM)
 * @see https://datatracker.ietf.org/doc/html/rfc7519 (JWT)
 * @see https://datatracker.ietf.org/doc/html/rfc3986#section-3.2.1 (userinfo in URLs)
 */

/** One kind of secret. */
export interface Detector {
  /** The type named in the marker, `[MASKED:<name>]`. */
  readonly name: string;
  /**
   * A global (`g`) expression. With a group named `secret` (and the `d` flag), only that group is
   * masked and the rest of the match (a key name, a URL's user and host) stays readable; the group
   * must lie inside the match (not in a look-around).
   */
  readonly pattern: RegExp;
  /** The longest text a match can span, and how far the expression reads from where it starts. */
  readonly maxLength: number;
  /**
   * Found in every match (a literal prefix, mostly), at most `TRIGGER_MAX_LENGTH` characters long:
   * the expression runs only where this is found, which keeps ordinary text fast. Absent: the
   * expression runs over all text. The source of a case-sensitive expression without capturing
   * groups (letters of either case are spelled as classes, `[Kk]`): every trigger is searched for
   * in one expression, and a case-sensitive one skips ahead much faster than a caseless one.
   */
  readonly trigger?: string;
  /**
   * How many characters before its trigger a match may start (a key name, a URL scheme); 0, the
   * default, when the trigger starts the match.
   */
  readonly lead?: number;
  /**
   * For detectors whose match may contain whitespace: where in `text[from..]` an incomplete match
   * may begin that more text could complete, or -1.
   */
  readonly pendingFrom?: (text: string, from: number) => number;
}

/** The longest text any trigger matches: a stream looks this far back for one cut by a piece boundary. */
export const TRIGGER_MAX_LENGTH = 24;

/** `word` in either case, letter by letter: triggers are case-sensitive. */
function anyCase(word: string): string {
  return word.replace(/[a-z]/gi, (letter) => `[${letter.toUpperCase()}${letter.toLowerCase()}]`);
}

/** Characters of URL-safe tokens; a token must not start or end inside a longer run of them. */
const B = "(?<![A-Za-z0-9_+/=-])";
const E = "(?![A-Za-z0-9_+/=-])";

const PEM_LABEL = "(?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?";
/** PEM blocks are bounded: 8 KiB of body covers an RSA 8192-bit key with room to spare. */
const PEM_MAX_BODY = 8192;
const PEM_HEADER = new RegExp(`-----BEGIN ${PEM_LABEL}-----`, "y");
const PEM_MAX = 2 * 60 + PEM_MAX_BODY;

/**
 * Whether the block whose header has `label` and whose body starts at `body` is complete, as the
 * detector's pattern would find it: its body ends at the first end line with the same label (a
 * label holds no "-", so the header fixes it) 16 to PEM_MAX_BODY characters on. Plain searches
 * for that line cost far less than the pattern's lazy body.
 */
function pemEnds(text: string, label: string, body: number): boolean {
  for (let end = text.indexOf("-----END ", body + 16); end !== -1; end = text.indexOf("-----END ", end + 1)) {
    if (end - body > PEM_MAX_BODY) return false;
    if (text.startsWith(label, end + 9) && text.startsWith("-----", end + 9 + label.length)) return true;
  }
  return false;
}

/** A PEM header (or the start of one) with no complete block after it yet. */
function pendingPem(text: string, from: number): number {
  for (let at = text.indexOf("-----BEGIN", from); at !== -1; at = text.indexOf("-----BEGIN", at + 1)) {
    if (text.length - at > PEM_MAX) continue;
    PEM_HEADER.lastIndex = at;
    if (PEM_HEADER.test(text)) {
      const body = PEM_HEADER.lastIndex;
      if (!pemEnds(text, text.slice(at + 11, body - 5), body)) return at;
      continue;
    }
    // A header still arriving: it closes with "-----" within a few dozen characters.
    const rest = text.slice(at + 10, at + 60);
    if (/^[ A-Z0-9]*-{0,4}$/.test(rest)) return at;
  }
  return -1;
}

const AWS_KEY_NAME = "(?:aws_?)?secret_?access_?key";
const AWS_SECRET_PENDING = new RegExp(
  `${AWS_KEY_NAME}["']?\\s{0,4}(?:[:=]\\s{0,4}["']?[A-Za-z0-9/+]{0,40})?$`,
  "i",
);

function pendingAwsSecret(text: string, from: number): number {
  const tail = text.length - from > 128 ? text.slice(-128) : text.slice(from);
  const m = AWS_SECRET_PENDING.exec(tail);
  return m ? text.length - tail.length + m.index : -1;
}

/** Schemes whose URLs are database connection strings. */
const DB_SCHEMES =
  "(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\\+srv)?|redis|rediss|amqps?|mssql|sqlserver|cockroachdb|clickhouse|jdbc:[a-z]{1,20})";
/** Placeholders that documentation writes where a password goes; they are not secrets. */
const PLACEHOLDER = "(?!(?:password|passwd|pass|pwd|secret|changeme|x+|\\*+|…|\\.\\.\\.)[@;])";
/**
 * userinfo password: no `{`, `}` or leading `$`, so templates like `${user}:${pass}@` are left
 * alone, and no documented placeholder (`user:password@host`).
 */
const URL_PASSWORD = `${PLACEHOLDER}(?<secret>[^\\s:@/?#"'<>\\\\{}$\`][^\\s@/?#"'<>\\\\{}\`]{0,255})`;
const URL_USER = "[^\\s:@/?#\"'<>\\\\{}`]{1,128}";
const URL_HOST = "(?=[A-Za-z0-9[])";

/**
 * The built-in detectors, in order of precedence when two matches start at the same place and
 * are as long (a longer match wins over a shorter one that starts at the same place).
 *
 * URLs with userinfo (`scheme://user:password@host`) keep their user and host: only the
 * password is masked, so the record still shows which account and host were involved.
 */
export const DETECTORS: readonly Detector[] = [
  {
    name: "private-key",
    trigger: "-----BEGIN",
    pattern: new RegExp(`-----BEGIN (${PEM_LABEL})-----[\\s\\S]{16,${PEM_MAX_BODY}}?-----END \\1-----`, "g"),
    maxLength: PEM_MAX,
    pendingFrom: pendingPem,
  },
  {
    name: "aws-secret-access-key",
    trigger: `${anyCase("secret")}_?${anyCase("access")}_?${anyCase("key")}`,
    lead: 4,
    pattern: new RegExp(
      `${AWS_KEY_NAME}["']?\\s{0,4}[:=]\\s{0,4}["']?(?<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])`,
      "gid",
    ),
    maxLength: 80,
    pendingFrom: pendingAwsSecret,
  },
  {
    name: "anthropic-api-key",
    trigger: "sk-ant-",
    pattern: new RegExp(`${B}sk-ant-[a-z]{3,6}\\d{2}-[A-Za-z0-9_-]{32,160}${E}`, "g"),
    maxLength: 180,
  },
  {
    name: "openai-api-key",
    trigger: "sk-",
    pattern: new RegExp(
      `${B}sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,250}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20})${E}`,
      "g",
    ),
    maxLength: 270,
  },
  {
    name: "github-token",
    trigger: "gh[pousr]_",
    pattern: new RegExp(`${B}gh[pousr]_[A-Za-z0-9]{36,251}${E}`, "g"),
    maxLength: 255,
  },
  {
    name: "github-fine-grained-token",
    trigger: "github_pat_",
    pattern: new RegExp(`${B}github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}${E}`, "g"),
    maxLength: 93,
  },
  {
    name: "gitlab-token",
    trigger: "gl[a-z]{2,4}-",
    pattern: new RegExp(
      `${B}gl(?:pat|dt|rt|ptt|cbt|oas|imt|ft|soat)-[A-Za-z0-9_.-]{19,79}[A-Za-z0-9_-]${E}`,
      "g",
    ),
    maxLength: 90,
  },
  {
    name: "npm-token",
    trigger: "npm_",
    pattern: new RegExp(`${B}npm_[A-Za-z0-9]{36}${E}`, "g"),
    maxLength: 40,
  },
  {
    name: "slack-token",
    trigger: "xox",
    pattern: new RegExp(`${B}xox[baprs]-[A-Za-z0-9-]{10,250}${E}`, "g"),
    maxLength: 255,
  },
  {
    name: "aws-access-key-id",
    trigger: "A[KSBC][IC]A",
    pattern: /(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])/g,
    maxLength: 20,
  },
  {
    name: "azure-storage-account-key",
    trigger: "AccountKey=",
    pattern: /AccountKey=(?<secret>[A-Za-z0-9+/]{86}==)/dg,
    maxLength: 99,
  },
  {
    name: "azure-shared-access-key",
    trigger: "SharedAccessKey=",
    pattern: /SharedAccessKey=(?<secret>[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=)/dg,
    maxLength: 60,
  },
  {
    name: "entra-client-secret",
    trigger: "Q~",
    lead: 4,
    // No look-ahead: a secret may end a sentence, and `.` is one of its characters.
    pattern: /(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{3}[78]Q~[A-Za-z0-9_~.-]{31,34}/g,
    maxLength: 40,
  },
  {
    name: "google-api-key",
    trigger: "AIza",
    pattern: new RegExp(`${B}AIza[0-9A-Za-z_-]{35}${E}`, "g"),
    maxLength: 39,
  },
  {
    name: "stripe-key",
    trigger: "_(?:live|test)_",
    lead: 2,
    pattern: new RegExp(`${B}(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{10,247}${E}`, "g"),
    maxLength: 255,
  },
  {
    name: "jwt",
    trigger: "eyJ",
    pattern: new RegExp(
      `${B}eyJ[A-Za-z0-9_-]{8,1024}\\.eyJ[A-Za-z0-9_-]{8,2048}\\.[A-Za-z0-9_-]{16,700}${E}`,
      "g",
    ),
    maxLength: 3800,
  },
  {
    name: "database-connection-string",
    trigger: "://",
    // The longest scheme, `jdbc:` and a 20-letter driver name, comes before `://`.
    lead: 25,
    pattern: new RegExp(`(?<![A-Za-z0-9+.-])${DB_SCHEMES}://${URL_USER}:${URL_PASSWORD}@${URL_HOST}`, "gid"),
    maxLength: 420,
  },
  {
    name: "database-connection-string",
    trigger: `;(?:${anyCase("password")}|${anyCase("pwd")})=`,
    // ADO.NET / ODBC style: `Server=…;User Id=…;Password=…;`.
    pattern:
      /;(?:Password|Pwd)=(?!(?:password|passwd|pass|pwd|secret|changeme|x+|\*+|…|\.\.\.)[;])(?<secret>[^;\s"'{}$`<>][^;\s"'`<>]{0,127})/dgi,
    maxLength: 140,
  },
  {
    name: "basic-auth-url",
    trigger: "://",
    lead: 21,
    pattern: new RegExp(
      `(?<![A-Za-z0-9+.-])[a-z][a-z0-9+.-]{1,20}://${URL_USER}:${URL_PASSWORD}@${URL_HOST}`,
      "gid",
    ),
    maxLength: 420,
  },
];
