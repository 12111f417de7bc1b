/**
 * The control plane's configuration: one schema, validated once at start-up by
 * the process entry (cli/), unknown keys rejected by name. Defaults are declared
 * next to each option.
 */
import { HOST_PORT } from "@gatehouse/proto/address";
import { z } from "zod";

/** `host:port`, with `[v6]:port` for IPv6. Port 0 picks a free port. */
export const listenAddress = z.string().regex(HOST_PORT, "expected host:port, e.g. 127.0.0.1:7070");

const credentialRef = z.strictObject({
  /** Environment variable of the agent process holding the credential (for development). */
  env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name"),
  /** How the credential goes upstream; the default suits the connection type. */
  scheme: z.enum(["x-api-key", "bearer", "basic"]).optional(),
  /** User name for `scheme: basic`. */
  username: z.string().optional(),
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

export const controlPlaneConfigSchema = z.strictObject({
  connections: z
    .array(connectionSchema)
    .min(1, "at least one connection is required")
    .refine(
      (list) => new Set(list.map((c) => c.name)).size === list.length,
      "connection names must be unique",
    ),
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
       * Ed25519 key signs and whose every key verifies (keep retired keys' public
       * halves there). Made with one new key on first start. Default
       * `<data dir>/signing-key.jwk`. The only source of trusted keys: never the
       * store, which whoever can write records could also write. Replicas share
       * it (mount the same secret).
       */
      keyFile: z.string().optional(),
    })
    .default({}),
  sessions: z
    .strictObject({
      /** Token lifetime when the caller asks for none. */
      defaultTtlSeconds: z.int().min(30).max(86_400).default(900),
      /** Upper bound on any session's lifetime. */
      maxTtlSeconds: z.int().min(30).max(86_400).default(3600),
    })
    .default({ defaultTtlSeconds: 900, maxTtlSeconds: 3600 }),
});

export type ControlPlaneConfig = Readonly<z.infer<typeof controlPlaneConfigSchema>>;
