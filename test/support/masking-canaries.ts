/**
 * One canary secret of every type the agent masks. Built at run time from a seeded generator, so
 * the repository holds no string shaped like a live credential, and every run uses the same ones.
 */

/** A canary: the text that carries it, the part that must never be seen, and its marker's type. */
export interface Canary {
  type: string;
  /** The text as upstream sends it. */
  text: string;
  /** What must not reach the client or the record. */
  secret: string;
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const UPPER_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const B64 = `${ALNUM}+/`;
const URLSAFE = `${ALNUM}_-`;

/** Deterministic characters from `alphabet` (a small LCG: reproducible, not secret). */
function chars(seed: number, length: number, alphabet: string): string {
  let state = seed >>> 0;
  let out = "";
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out += alphabet.charAt((state >>> 8) % alphabet.length);
  }
  return out;
}

function whole(type: string, text: string): Canary {
  return { type, text, secret: text };
}

function part(type: string, before: string, secret: string, after: string): Canary {
  return { type, text: before + secret + after, secret };
}

const pemBody = Array.from({ length: 6 }, (_, i) => chars(100 + i, 64, B64)).join("\n");

/** Every canary, one or more per detector. */
export const CANARIES: readonly Canary[] = [
  whole("anthropic-api-key", `sk-ant-api03-${chars(1, 93, URLSAFE)}AA`),
  whole("openai-api-key", `sk-proj-${chars(2, 124, URLSAFE)}`),
  whole("openai-api-key", `sk-${chars(3, 20, ALNUM)}T3BlbkFJ${chars(4, 20, ALNUM)}`),
  whole("github-token", `ghp_${chars(5, 36, ALNUM)}`),
  whole("github-token", `ghs_${chars(6, 36, ALNUM)}`),
  whole("github-fine-grained-token", `github_pat_${chars(7, 22, ALNUM)}_${chars(8, 59, ALNUM)}`),
  whole("gitlab-token", `glpat-${chars(9, 20, URLSAFE)}`),
  whole("npm-token", `npm_${chars(10, 36, ALNUM)}`),
  whole(
    "slack-token",
    `xoxb-${chars(11, 12, "0123456789")}-${chars(12, 13, "0123456789")}-${chars(13, 24, ALNUM)}`,
  ),
  whole("aws-access-key-id", `AKIA${chars(14, 16, UPPER_DIGITS)}`),
  part("aws-secret-access-key", "aws_secret_access_key = ", chars(15, 40, B64), ""),
  part(
    "azure-storage-account-key",
    "DefaultEndpointsProtocol=https;AccountName=contosodata;AccountKey=",
    `${chars(16, 86, B64)}==`,
    ";EndpointSuffix=core.windows.net",
  ),
  part(
    "azure-shared-access-key",
    "Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=",
    `${chars(17, 42, B64)}A=`,
    "",
  ),
  whole("entra-client-secret", `${chars(18, 3, ALNUM)}8Q~${chars(19, 34, `${ALNUM}_~.-`)}`),
  whole("google-api-key", `AIza${chars(20, 35, URLSAFE)}`),
  whole("stripe-key", `sk_live_${chars(21, 24, ALNUM)}`),
  whole("stripe-key", `rk_live_${chars(22, 24, ALNUM)}`),
  whole("private-key", `-----BEGIN RSA PRIVATE KEY-----\n${pemBody}\n-----END RSA PRIVATE KEY-----`),
  whole("private-key", `-----BEGIN PRIVATE KEY-----\n${pemBody}\n-----END PRIVATE KEY-----`),
  whole(
    "jwt",
    `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJydW5uZXItNDIiLCJpYXQiOjE3MDAwMDAwMDB9.${chars(23, 43, URLSAFE)}`,
  ),
  part("basic-auth-url", "https://deploy:", chars(24, 20, ALNUM), "@git.example.com/app.git"),
  part("database-connection-string", "postgres://app:", chars(25, 18, ALNUM), "@db.internal:5432/app"),
  part("database-connection-string", "mongodb+srv://svc:", chars(26, 18, ALNUM), "@cluster0.example.net/db"),
  part(
    "database-connection-string",
    "Server=tcp:sql.example.net,1433;Database=app;User Id=sa;Password=",
    chars(27, 18, ALNUM),
    ";Encrypt=true",
  ),
];

/** A reply that carries every canary, each in a sentence of ordinary prose. */
export function canaryProse(): string {
  return CANARIES.map((c, i) => `Step ${i + 1}: the ${c.type} is ${c.text} (keep it safe).`).join("\n");
}
