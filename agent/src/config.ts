/**
 * The agent's configuration: one schema, validated once at start-up by the
 * process entry (cli/), unknown keys rejected by name. Defaults are declared
 * next to each option. Connections themselves come from the control plane.
 */
import { isIP } from "node:net";
import { HOST_PORT, HTTPS_OR_LOOPBACK, isHttpsOrLoopback, splitHostPort } from "@gatehouse/proto/address";
import { z } from "zod";

/** The largest `proxy.maxSseEventBytes`: the link's batch cap (link/link.ts `MAX_BATCH_BYTES`). */
export const MAX_SSE_EVENT_BYTES = 8 * 1024 * 1024;

/** `host:port`, with `[v6]:port` for IPv6. Port 0 picks a free port. */
const listenAddress = z.string().regex(HOST_PORT, "expected host:port, e.g. 127.0.0.1:7080");

export const proxyConfigSchema = z.strictObject({
  listen: listenAddress.default("127.0.0.1:7080"),
  /** Base URL clients use to reach this agent (default: http://<listen address>). */
  publicUrl: z.url({ protocol: /^https?$/ }).optional(),
  /** Largest request body accepted from a client; larger ones get 413. */
  maxRequestBytes: z
    .int()
    .min(1024)
    .default(32 * 1024 * 1024),
  /**
   * Largest single server-sent event accepted from upstream (default 4 MiB, at
   * most 8 MiB). Each event is recorded whole, as one event sent to the control
   * plane, so the bound keeps every recorded event within what one AgentLink
   * message may carry.
   */
  maxSseEventBytes: z
    .int()
    .min(1024)
    .max(MAX_SSE_EVENT_BYTES, {
      message: `at most ${MAX_SSE_EVENT_BYTES} (8 MiB): each event is recorded whole and must fit in one message to the control plane`,
    })
    .default(4 * 1024 * 1024),
  /** How long upstream may stay silent: before its response headers, or between body chunks. */
  upstreamIdleTimeoutSeconds: z.int().min(1).default(600),
});

/** A file path in the agent's file system. */
const filePath = z.string().min(1);

/**
 * How the agent logs in to Vault: exactly one method. Files are read at each
 * login, so a token, secret id or JWT rotated on disk is used from the next login on.
 *
 * @see https://developer.hashicorp.com/vault/docs/auth
 */
export const vaultAuthSchema = z
  .strictObject({
    /** A Vault token read from a file (e.g. one a Vault Agent sink keeps current). */
    token: z.strictObject({ tokenFile: filePath }).optional(),
    /** AppRole, mounted at `approle`: the role id, and a file holding the secret id. */
    approle: z.strictObject({ roleId: z.string().min(1), secretIdFile: filePath }).optional(),
    /** Kubernetes, mounted at `kubernetes`: the Vault role and the pod's service account token. */
    kubernetes: z
      .strictObject({
        role: z.string().min(1),
        jwtFile: filePath.default("/var/run/secrets/kubernetes.io/serviceaccount/token"),
      })
      .optional(),
    /** JWT/OIDC: the Vault role, a file holding the JWT, and the auth method's mount path (default `jwt`). */
    jwt: z
      .strictObject({
        role: z.string().min(1),
        jwtFile: filePath,
        // Part of the login URL (node-vault renders it into a template): path segments only.
        path: z
          .string()
          .regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/, "expected a mount path such as jwt or ci/jwt")
          .default("jwt"),
      })
      .optional(),
  })
  .refine((auth) => Object.values(auth).filter((method) => method !== undefined).length === 1, {
    message: "name exactly one Vault login method: token, approle, kubernetes or jwt",
  });

/**
 * Where the agent reads connection credentials named `{vault: …}` (HashiCorp
 * Vault or OpenBao). Only the agent holds them; they never reach the control plane.
 */
export const vaultConfigSchema = z
  .strictObject({
    /** Vault's base URL, e.g. https://vault.example.com:8200; plain http only to this machine. */
    address: z.url({ protocol: /^https?$/ }).refine(isHttpsOrLoopback, HTTPS_OR_LOOPBACK),
    /** Vault Enterprise / OpenBao namespace, sent as X-Vault-Namespace. */
    namespace: z.string().min(1).optional(),
    /** PEM file of the CA that signed Vault's certificate (default: the system roots). */
    caCert: filePath.optional(),
    auth: vaultAuthSchema,
    /**
     * How long a secret read from a KV engine is used before the next request reads it
     * again (so a rotated secret is picked up without a restart). 0 reads it for every
     * request. A dynamic secret is used for as long as its lease can be renewed.
     */
    cacheSeconds: z.int().min(0).default(300),
    /**
     * How long past its refresh time a secret may keep serving while Vault cannot be
     * reached (network error, timeout, 5xx); never past a dynamic secret's lease. 0: not at all.
     */
    staleIfErrorSeconds: z.int().min(0).default(900),
    /** How long one request to Vault may take. */
    timeoutSeconds: z.int().min(1).max(300).default(10),
  })
  .refine((vault) => !vault.caCert || vault.address.startsWith("https:"), {
    message: "vault.caCert is for an https address; make vault.address https, or remove caCert",
    path: ["caCert"],
  });

export const agentConfigSchema = z.strictObject({
  agent: z
    .strictObject({
      /** Stable id reported to the control plane; default: one generated and kept in the spool directory. */
      id: z.string().min(1).optional(),
      /** Connections this agent serves; empty: every connection the control plane has. */
      connections: z.array(z.string()).default([]),
    })
    .default({ connections: [] }),
  controlPlane: z
    .strictObject({
      /** gRPC address of the control plane, host:port. */
      address: z.string().min(1),
      /** File holding the agent token (`gatehouse agents create`); or set GATEHOUSE_AGENT_TOKEN. */
      tokenFile: z.string().optional(),
      /** TLS towards the control plane; without it the link is plaintext (loopback or a trusted network only). */
      tls: z
        .strictObject({
          /** CA that signed the control plane's certificate (default: the system roots). */
          caFile: z.string().optional(),
          /** Client certificate and key, for mTLS. */
          certFile: z.string().optional(),
          keyFile: z.string().optional(),
          /** Name to verify the server certificate against, when it differs from the address host. */
          serverName: z.string().optional(),
        })
        .optional(),
    })
    .refine((cp) => !cp.tls || cp.tls.serverName || isIP(splitHostPort(cp.address).host) === 0, {
      // TLS server names may not be IP addresses (RFC 6066); newer Node versions refuse them.
      message:
        "controlPlane.tls.serverName is required when controlPlane.address is an IP address: set it to a DNS name in the control plane's certificate, or use a DNS name in the address",
      path: ["tls", "serverName"],
    }),
  proxy: proxyConfigSchema.default(proxyConfigSchema.parse({})),
  spool: z
    .strictObject({
      /** Directory of the on-disk spool; default `<data dir>/spool`. */
      dir: z.string().optional(),
      /** Longest time a written event may wait for fsync (power-loss window). */
      fsyncIntervalMs: z.int().min(0).max(10_000).default(100),
    })
    .default({ fsyncIntervalMs: 100 }),
  /** Vault, for connections whose credential is `{vault: …}`; without it they fail at request time. */
  vault: vaultConfigSchema.optional(),
});

export type AgentConfig = Readonly<z.infer<typeof agentConfigSchema>>;
export type ProxyConfig = Readonly<z.infer<typeof proxyConfigSchema>>;
export type VaultConfig = Readonly<z.infer<typeof vaultConfigSchema>>;

/**
 * V8 options for an agent process. A smaller young generation keeps an agent
 * holding many open streams small: in bench/, 500 concurrent streams took the
 * agent to ~160 MB resident with V8's default and ~140 MB with this, at no
 * measurable cost in latency or CPU. `gatehouse up` starts its agent with it;
 * run a standalone agent with `NODE_OPTIONS=--max-semi-space-size=4`.
 */
export const AGENT_NODE_OPTIONS: readonly string[] = ["--max-semi-space-size=4"];
