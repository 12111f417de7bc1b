/**
 * The control plane's configuration: one schema, validated once at start-up by
 * the process entry (cli/), unknown keys rejected by name. Defaults are declared
 * next to each option.
 */

import { HOST_PORT, HTTPS_OR_LOOPBACK, isHttpsOrLoopback } from "@gatehouse/proto/address";
import { MASKING_PATTERN } from "@gatehouse/proto/masking";
import { z } from "zod";
import { policySchema, regexSource } from "./policy/schema.js";

/** `host:port`, with `[v6]:port` for IPv6. Port 0 picks a free port. */
export const listenAddress = z.string().regex(HOST_PORT, "expected host:port, e.g. 127.0.0.1:7070");

const upstreamScheme = {
  /** How the credential goes upstream; the default suits the connection type. */
  scheme: z.enum(["x-api-key", "bearer", "basic"]).optional(),
  /** User name for `scheme: basic` (e.g. anything for an Azure DevOps PAT). */
  username: z.string().min(1).optional(),
};

const credentialRef = z
  .union([
    z.strictObject({
      /** Environment variable of the agent process holding the credential (for development). */
      env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name"),
      ...upstreamScheme,
    }),
    z.strictObject({
      /** A secret the agent reads from Vault (its `vault` config says where Vault is and how it logs in). */
      vault: z.strictObject({
        /** API path after /v1/: `secret/data/anthropic` (KV v2), `kv/anthropic` (KV v1), `database/creds/ro`. */
        path: z
          .string()
          .regex(
            /^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)+$/,
            "expected a Vault API path such as secret/data/anthropic",
          ),
        /** The field of the secret's data that holds the credential. */
        key: z.string().min(1),
        kv: z.union([z.literal(1), z.literal(2)]).default(2),
        /** A dynamic secret with a lease: renewed while in use, revoked when the agent stops. */
        dynamic: z.boolean().default(false),
      }),
      ...upstreamScheme,
    }),
  ])
  .refine((c) => c.scheme !== "basic" || c.username !== undefined, {
    message: "scheme basic needs a username",
    path: ["username"],
  });

export const connectionSchema = z.strictObject({
  /** Appears in proxy URLs (`/c/<name>`), so it is URL-safe. */
  name: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "use lower-case letters, digits, '.', '_' and '-' (max 63)"),
  type: z.enum(["anthropic"], {
    error: (issue) => `connection type ${JSON.stringify(issue.input)} is not supported; supported: anthropic`,
  }),
  upstream: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }),
  credential: credentialRef,
});

export type ConnectionConfig = z.infer<typeof connectionSchema>;

const tlsServer = z.strictObject({
  certFile: z.string(),
  keyFile: z.string(),
  /** When set, agents must present a client certificate signed by this CA (mTLS). */
  clientCaFile: z.string().optional(),
});

/**
 * An issuer URL: https, or http on a loopback address (a development issuer on
 * this machine); tokens and keys fetched over plain http elsewhere could be forged in transit.
 */
const loopbackOrHttps = z
  .url({ protocol: /^https?$/, error: "expected an https URL" })
  .refine(isHttpsOrLoopback, HTTPS_OR_LOOPBACK);

/** Claim values a rule accepts: a glob (`*` within a path segment, `**` across), or a list of them. */
const claimPattern = z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]);

const runnerRule = z.strictObject({
  /** Named in refusals; default `rule <n>`. */
  name: z.string().min(1).optional(),
  /** Every claim named must match; a list matches if any of its globs does. */
  match: z
    .record(z.string().min(1), claimPattern)
    .refine((m) => Object.keys(m).length > 0, "a rule must match at least one claim"),
  /** The connections a matching token may open sessions for. */
  connections: z.array(z.string().min(1)).min(1),
  /** Longest session a matching token gets; default and upper bound `sessions.maxTtlSeconds`. */
  maxTtlSeconds: z.int().min(30).max(86_400).optional(),
  /** Put on every session this rule opens (over labels the caller asks for). */
  labels: z.record(z.string(), z.string()).default({}),
});

export type RunnerRule = z.infer<typeof runnerRule>;

const SIGNING_ALGORITHMS = [
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "EdDSA",
] as const;

const runnerProvider = z.strictObject({
  /** Named in refusals and recorded with each session it opens. */
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, "use lower-case letters, digits, '.', '_' and '-'"),
  /** Discovered at `<issuer>/.well-known/openid-configuration`; must equal the tokens' `iss`. */
  issuer: loopbackOrHttps,
  /** The `aud` runners request their tokens for. */
  audience: z.string().min(1),
  /** Signature algorithms accepted; anything else (`none`, HS256…) is refused. */
  algorithms: z.array(z.enum(SIGNING_ALGORITHMS)).min(1).default(["RS256"]),
  /** Tolerance for the clocks of issuer and control plane when checking exp, nbf and iat. */
  clockSkewSeconds: z.int().min(0).max(300).default(60),
  /**
   * After a token names a key id the cached key set lacks, the issuer's keys are
   * fetched again at most this often (a rotation is picked up at once; forged key
   * ids cannot make the control plane hammer the issuer).
   */
  jwksCooldownSeconds: z.int().min(0).max(3600).default(5),
  /** Claims recorded with each session (those the token has); default: the usual CI identifying claims. */
  recordClaims: z.array(z.string().min(1)).optional(),
  /** Tried in order; the first that matches the token and allows the connection applies. */
  rules: z.array(runnerRule).min(1, "a provider needs at least one rule"),
});

export type RunnerProviderConfig = z.infer<typeof runnerProvider>;

const adminLogin = z.strictObject({
  issuer: loopbackOrHttps,
  clientId: z.string().min(1),
  /** File holding the client secret; omit for a public client (PKCE alone). */
  clientSecretFile: z.string().optional(),
  /** This control plane's callback as the issuer knows it: `<public URL>/v1/auth/callback` (it receives an API key). */
  redirectUrl: loopbackOrHttps,
  scopes: z.array(z.string()).default(["openid", "profile", "email"]),
  /** The ID-token claim listing the user's groups. */
  groupsClaim: z.string().min(1).default("groups"),
  /** Groups granting each role; a user in several gets the first of admin, approver, auditor. */
  roles: z
    .strictObject({
      admin: z.array(z.string().min(1)).default([]),
      approver: z.array(z.string().min(1)).default([]),
      auditor: z.array(z.string().min(1)).default([]),
    })
    .refine(
      (r) => r.admin.length + r.approver.length + r.auditor.length > 0,
      "map at least one group to a role",
    ),
  /** Lifetime of the API token a sign-in gives. */
  loginTtlSeconds: z
    .int()
    .min(60)
    .max(7 * 86_400)
    .default(8 * 3600),
});

export type AdminLoginConfig = z.infer<typeof adminLogin>;

/** Lengths a custom pattern's match may span; the agent holds back at most this much of a stream. */

/**
 * A custom masking pattern: a JavaScript regular expression, checked here at start-up so that
 * the agents it is pushed to never meet one they cannot use.
 */
const maskingPattern = z.strictObject({
  /** Named in markers (`[MASKED:internal-host]`) and in masking counts. */
  name: z
    .string()
    .regex(MASKING_PATTERN.name, "use lower-case letters, digits and '-' (max 64), e.g. internal-host"),
  /** JavaScript regular expression source, without flags; a group named `secret` masks only that part. */
  pattern: regexSource("matches empty text; a masking pattern must match at least one character"),
  /** The longest text a match spans (default 256): it bounds what a stream holds back. */
  maxLength: z.int().min(1).max(MASKING_PATTERN.maxLength).optional(),
});

export type MaskingPatternConfig = z.infer<typeof maskingPattern>;

/** The control plane's settings, before the checks that span several of them. */
export const controlPlaneConfigObject = z.strictObject({
  connections: z
    .array(connectionSchema)
    .min(1, "at least one connection is required")
    .refine(
      (list) => new Set(list.map((c) => c.name)).size === list.length,
      "connection names must be unique",
    ),
  identity: z
    .strictObject({
      /** Issuers whose tokens CI runners trade for sessions at POST /v1/sessions. */
      providers: z
        .array(runnerProvider)
        .default([])
        .refine(
          (list) => new Set(list.map((p) => p.name)).size === list.length,
          "provider names must be unique",
        )
        .refine(
          (list) => new Set(list.map((p) => `${p.issuer} ${p.audience}`)).size === list.length,
          "two providers have the same issuer and audience: only the first would ever be used; merge their rules",
        ),
      /** Sign-in of people through OIDC (authorization code + PKCE); roles from group claims. */
      admin: adminLogin.optional(),
    })
    .default({ providers: [] }),
  store: z
    .discriminatedUnion("type", [
      z.strictObject({
        type: z.literal("sqlite"),
        /** Database file; default `<data dir>/gatehouse.db`. */
        path: z.string().optional(),
      }),
      z.strictObject({
        type: z.literal("mongodb"),
        /** Any MongoDB-compatible server: MongoDB 6+, Azure Cosmos DB for MongoDB (vCore), DocumentDB, FerretDB. */
        uri: z.string().regex(/^mongodb(\+srv)?:\/\//, "expected a mongodb:// or mongodb+srv:// URI"),
        database: z
          .string()
          .regex(/^[A-Za-z0-9_-]{1,63}$/, "use letters, digits, '_' and '-' (max 63)")
          .default("gatehouse"),
      }),
    ])
    .default({ type: "sqlite" }),
  retention: z
    .strictObject({
      /** Closed sessions, with their events, are purged this many days after they closed; unset: kept. */
      closedSessionsDays: z.int().min(1).optional(),
      /** How often to look for sessions to purge. */
      checkIntervalMinutes: z.int().min(1).max(1440).default(60),
    })
    .default({ checkIntervalMinutes: 60 }),
  http: z
    .strictObject({ listen: listenAddress.default("127.0.0.1:7070") })
    .default({ listen: "127.0.0.1:7070" }),
  grpc: z
    .strictObject({ listen: listenAddress.default("127.0.0.1:7071"), tls: tlsServer.optional() })
    .default({ listen: "127.0.0.1:7071" }),
  signing: z
    .strictObject({
      /**
       * The keys of session tokens and seals: a JWK set (0600) whose first private
       * Ed25519 key published three minutes ago (or its only private key) signs and
       * whose every key verifies (keep retired keys' public halves there). Made with
       * one new key on first start. Default `<data dir>/signing-key.jwk`. The only
       * source of trusted keys: never the store, which whoever can write records
       * could also write. Replicas share it: a writable shared volume lets them
       * rotate it; a read-only mounted secret turns automatic rotation off (rotate
       * by replacing the secret, the new private key first).
       */
      keyFile: z.string().optional(),
      /**
       * A new key is made when the newest is this many days old; it is published
       * three minutes before it signs, and the key it replaces keeps its public
       * half (what it signed still verifies). 0: never rotate automatically.
       */
      rotationDays: z.int().min(0).max(3650).default(30),
    })
    .default({ rotationDays: 30 }),
  masking: z
    .strictObject({
      /** Masked in responses by every agent, after the built-in detectors, as `[MASKED:<name>]`. */
      custom: z.array(maskingPattern).default([]),
    })
    .default({ custom: [] }),
  /** Evaluated by the agents, in this order, before the policies set over REST. */
  policies: z
    .array(policySchema)
    .default([])
    .refine((list) => new Set(list.map((p) => p.name)).size === list.length, "policy names must be unique"),
  approvals: z
    .strictObject({
      /**
       * How long a held request or tool call waits for a decision before it fails. Below the
       * clients' own timeout (the Anthropic SDKs and Claude Code: 600 s), so they hear why.
       */
      timeoutSeconds: z.int().min(10).max(86_400).default(300),
      /** Told of every new pending approval (Slack- or Teams-compatible JSON). */
      webhooks: z
        .array(
          z.strictObject({
            /** Holds a secret in most chat services: it is never logged. */
            url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }),
            format: z.enum(["slack", "teams"]).default("slack"),
          }),
        )
        .default([]),
    })
    .default({ timeoutSeconds: 300, webhooks: [] }),
  sessions: z
    .strictObject({
      /** Token lifetime when the caller asks for none. */
      defaultTtlSeconds: z.int().min(30).max(86_400).default(900),
      /** Upper bound on any session's lifetime. */
      maxTtlSeconds: z.int().min(30).max(86_400).default(3600),
    })
    .default({ defaultTtlSeconds: 900, maxTtlSeconds: 3600 }),
});

/** Every connection a runner rule or a policy names must be configured. */
export function ruleConnectionsExist(
  config: Pick<z.infer<typeof controlPlaneConfigObject>, "connections" | "identity" | "policies">,
  ctx: z.RefinementCtx,
): void {
  const known = new Set(config.connections.map((c) => c.name));
  config.policies.forEach((policy, p) => {
    policy.connections?.forEach((name, c) => {
      if (known.has(name)) return;
      ctx.addIssue({
        code: "custom",
        path: ["policies", p, "connections", c],
        message: `no connection is named '${name}'; known: ${[...known].join(", ")}`,
      });
    });
  });
  config.identity.providers.forEach((provider, p) => {
    provider.rules.forEach((rule, r) => {
      rule.connections.forEach((name, c) => {
        if (known.has(name)) return;
        ctx.addIssue({
          code: "custom",
          path: ["identity", "providers", p, "rules", r, "connections", c],
          message: `no connection is named '${name}'; known: ${[...known].join(", ")}`,
        });
      });
    });
  });
}

export const controlPlaneConfigSchema = controlPlaneConfigObject.superRefine(ruleConnectionsExist);

export type ControlPlaneConfig = Readonly<z.infer<typeof controlPlaneConfigSchema>>;
