/**
 * A test double of HashiCorp Vault's documented HTTP API. It is not Vault: no Vault server can be
 * installed where these tests run, so this in-process server (node:http on 127.0.0.1) answers the
 * few endpoints a Gatehouse agent uses, with the paths, methods, bodies, status codes and error
 * texts that Vault documents or is observed to send. test/unit/vault-double.test.ts drives the real
 * `node-vault` client against it to prove that.
 *
 * Served, all under `/v1`, JSON, client token in `X-Vault-Token` (or `Authorization: Bearer`),
 * `X-Vault-Namespace` accepted and recorded:
 * - `GET|HEAD sys/health`; `POST|PUT auth/{approle,kubernetes,jwt}/login` (mount paths configurable);
 * - `GET auth/token/lookup-self`, `POST|PUT auth/token/renew-self`;
 * - KV v1 `GET|POST|PUT <mount>/<path>`; KV v2 `GET <mount>/data/<path>[?version=N]`, `POST|PUT <mount>/data/<path>`;
 * - database `GET <mount>/creds/<role>`; `POST|PUT sys/leases/renew`, `POST|PUT sys/leases/revoke`
 *   (the lease id in the body, or after the path: `sys/leases/revoke/<lease id>`, which an ACL
 *   path can scope to one role's leases).
 *
 * What it leaves out, on purpose: real JWT/service-account verification (the test lists the JWTs a
 * role accepts), ACL capabilities (a policy here is a list of path patterns, any operation), response
 * wrapping, token accessors as an API, namespaces as separate stores (the header is only recorded),
 * KV v2 check-and-set, metadata endpoints and deletes over HTTP (a test deletes or destroys a
 * version with {@link VaultDouble.deleteKvV2} and {@link VaultDouble.destroyKvV2}).
 *
 * Error bodies are `{"errors":[...]}` (Vault's one error shape). Which text goes in them:
 * - a token that is unknown, revoked or past its TTL: 403, by default the text Vault 1.x sends,
 *   `"2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n"` (Vault's own UI tests stub
 *   exactly that: hashicorp/vault ui/tests/acceptance/oidc-provider-test.js);
 * - a valid token outside its policy: 403, `"1 error occurred:\n\t* permission denied\n\n"`
 *   (hashicorp/vault#6699, rajanadar/VaultSharp#176 on Vault 1.5.3, nodevault/node-vault#166);
 * - with `denialStyle: "plain"` both are the bare `"permission denied"` that Vault 0.x sent and that
 *   some proxies and older servers still send; a client must key on the 403, not on the text.
 *
 * @see https://developer.hashicorp.com/vault/api-docs (error response, HTTP status codes, namespaces)
 * @see https://developer.hashicorp.com/vault/api-docs/system/health
 * @see https://developer.hashicorp.com/vault/api-docs/auth/token
 * @see https://developer.hashicorp.com/vault/api-docs/auth/approle#login-with-approle
 * @see https://developer.hashicorp.com/vault/api-docs/auth/kubernetes#login
 * @see https://developer.hashicorp.com/vault/api-docs/auth/jwt#jwt-login
 * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v1
 * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2
 * @see https://developer.hashicorp.com/vault/api-docs/secret/databases#generate-credentials
 * @see https://developer.hashicorp.com/vault/api-docs/system/leases
 */
import { randomBytes, randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** A JSON object as Vault stores and returns secret data. */
export type VaultJson = { [key: string]: unknown };

/** Vault's system default (and default maximum) lease TTL: 768h. KV v1 reads advertise it. */
export const VAULT_SYSTEM_DEFAULT_TTL_SECONDS = 2_764_800;

export interface VaultDoubleOptions {
  /**
   * Clock in epoch milliseconds; {@link VaultDouble.advance} adds to it. Default: frozen at the
   * moment the double is created, so TTLs are exact and move only when the test says; pass
   * `Date.now` for a clock that runs.
   */
  now?: () => number;
  /** The root token: never expires, no policy restriction. Default: a fresh `hvs.` token. */
  rootToken?: string;
  /** Mount path of the AppRole auth method (default `approle`). */
  approleMount?: string;
  /** Mount path of the Kubernetes auth method (default `kubernetes`). */
  kubernetesMount?: string;
  /** Mount path of the JWT/OIDC auth method (default `jwt`). */
  jwtMount?: string;
  /** Text of 403 bodies; see the module comment (default `multierror`, what Vault 1.x sends). */
  denialStyle?: "multierror" | "plain";
  /** `version` reported by sys/health. */
  version?: string;
  /** Port to listen on (default 0: any free port, then kept across {@link VaultDouble.stop}/start). */
  port?: number;
}

/** What a login against a role yields: the token's TTLs, policy names and readable paths. */
export interface VaultLoginRole {
  name: string;
  /** Token TTL (Vault's `token_ttl`; default 768h). */
  ttlSeconds?: number;
  /** Token max TTL (Vault's `token_max_ttl`; default 768h): renewals never reach past it. */
  maxTtlSeconds?: number;
  /** Default true. */
  renewable?: boolean;
  /** Policy names reported in `auth.policies`; `default` is always added, as Vault does. */
  policies?: readonly string[];
  /**
   * Paths the role's tokens may use, as Vault ACL path patterns (`secret/data/app/*`,
   * `database/creds/+`). Undefined: unrestricted. Change later with {@link VaultDouble.setPolicy}.
   */
  paths?: readonly string[];
  /** Extra token metadata, merged over what the auth method sets. */
  metadata?: Readonly<Record<string, string>>;
}

export interface VaultAppRole extends VaultLoginRole {
  roleId: string;
  secretId: string;
}

/** A Kubernetes or JWT/OIDC role: the double does not verify JWTs, it accepts the ones listed. */
export interface VaultJwtRole extends VaultLoginRole {
  jwts: readonly string[];
}

/** A token created directly by the test (as `vault token create` would): a role's settings, no name. */
export type VaultTokenSpec = Omit<VaultLoginRole, "name">;

export interface VaultDatabaseRole {
  /** Mount path of the database secrets engine (default `database`). */
  mount?: string;
  name: string;
  /** Lease TTL of each credential (the role's `default_ttl`; default 768h). */
  ttlSeconds?: number;
  /** The role's `max_ttl` (default 768h): renewals never reach past it. */
  maxTtlSeconds?: number;
  /** Default true. */
  renewable?: boolean;
}

/** One request the double answered. Holds no token, body or header value: nothing secret. */
export interface VaultRequestRecord {
  readonly method: string;
  /** As sent, query string included, e.g. `/v1/secret/data/app?version=2`. */
  readonly path: string;
  /** The `X-Vault-Namespace` header, if any. */
  readonly namespace: string | undefined;
  readonly status: number;
  /** The double's clock when the request arrived. */
  readonly at: number;
}

export interface VaultLeaseView {
  readonly leaseId: string;
  readonly issuedAt: number;
  readonly expiresAt: number;
  readonly maxExpiresAt: number;
  readonly renewable: boolean;
  /** Not revoked, not expired, and the token that read it is still valid. */
  readonly live: boolean;
}

interface Policy {
  paths: readonly string[] | undefined;
}

interface RoleEntry {
  method: "approle" | "kubernetes" | "jwt";
  name: string;
  ttlSeconds: number;
  maxTtlSeconds: number;
  renewable: boolean;
  policies: string[];
  policy: Policy;
  metadata: Record<string, string>;
  roleId?: string;
  secretId?: string;
  jwts?: readonly string[];
}

interface TokenEntry {
  id: string;
  /** The role it logged in with; undefined for tokens the test issued. */
  role: string | undefined;
  accessor: string;
  entityId: string;
  displayName: string;
  /** The login path that created it, as lookup-self reports (`auth/approle/login`). */
  path: string;
  policies: string[];
  policy: Policy;
  metadata: Record<string, string> | null;
  issuedAt: number;
  creationTtlSeconds: number;
  /** Undefined for the root token, which never expires. */
  expiresAt: number | undefined;
  maxExpiresAt: number | undefined;
  renewable: boolean;
  lastRenewal: number | undefined;
  revoked: boolean;
}

interface LeaseEntry {
  id: string;
  tokenId: string;
  issuedAt: number;
  expiresAt: number;
  maxExpiresAt: number;
  ttlSeconds: number;
  renewable: boolean;
  revoked: boolean;
}

interface Kv2Version {
  data: VaultJson;
  createdTime: string;
  /** "" unless deleted (soft: undelete brings the data back). */
  deletionTime: string;
  destroyed: boolean;
}

interface Kv2Secret {
  versions: Kv2Version[];
  customMetadata: Record<string, string> | null;
}

type Mount =
  | { type: "kv1"; entries: Map<string, VaultJson> }
  | { type: "kv2"; entries: Map<string, Kv2Secret> }
  | { type: "database"; roles: Map<string, Required<Omit<VaultDatabaseRole, "mount">>> };

interface Reply {
  status: number;
  /** Undefined: no body (204, or HEAD). */
  body?: unknown;
}

interface Incoming {
  method: string;
  url: URL;
  /** The API path: after `/v1/`, decoded, e.g. `secret/data/app`. */
  path: string;
  token: string | undefined;
  /** The body as a JSON object; `{}` when empty or when the method carries none. */
  json: VaultJson;
}

/**
 * Paths Vault's built-in `default` policy opens to every token, so a policy set here never has to
 * list them.
 * @see https://developer.hashicorp.com/vault/docs/concepts/policies#default-policy
 */
const DEFAULT_POLICY_PATHS: readonly string[] = [
  "auth/token/lookup-self",
  "auth/token/renew-self",
  "sys/renew",
  "sys/leases/renew",
  "sys/leases/lookup",
];

const BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function randomBase62(length: number): string {
  let out = "";
  while (out.length < length) {
    for (const byte of randomBytes(length * 2)) {
      // 248 = 4 × 62: dropping the top bytes keeps every character equally likely.
      if (byte < 248 && out.length < length) out += BASE62.charAt(byte % 62);
    }
  }
  return out;
}

function errors(...messages: string[]): { errors: string[] } {
  return { errors: messages };
}

function isObject(value: unknown): value is VaultJson {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Parses a Vault duration: whole seconds as a number or digit string, or a Go-style duration
 * (`90s`, `1h30m`, `7d`). Returns seconds, or undefined when it is not one.
 */
export function parseVaultDuration(value: unknown): number | undefined {
  if (typeof value === "number") return Number.isFinite(value) && value >= 0 ? Math.floor(value) : undefined;
  if (typeof value !== "string" || value === "") return undefined;
  if (/^\d+$/.test(value)) return Number(value);
  const unitSeconds: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400 };
  let seconds = 0;
  let rest = value;
  while (rest !== "") {
    const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)/.exec(rest);
    const unit = match?.[2];
    if (match === null || unit === undefined) return undefined;
    seconds += Number(match[1]) * (unitSeconds[unit] ?? 0);
    rest = rest.slice(match[0].length);
  }
  return Math.floor(seconds);
}

/** Formats seconds as Vault's newer warnings do: `1h`, `1m30s`, `0s`. */
function formatDuration(totalSeconds: number): string {
  const hours = Math.floor(totalSeconds / 3600);
  const minutes = Math.floor((totalSeconds % 3600) / 60);
  const seconds = totalSeconds % 60;
  const parts = [
    hours > 0 ? `${hours}h` : "",
    minutes > 0 ? `${minutes}m` : "",
    seconds > 0 ? `${seconds}s` : "",
  ];
  return parts.join("") || "0s";
}

/** Vault ACL path globbing: `+` is one whole segment, a trailing `*` any suffix. */
function pathMatches(pattern: string, path: string): boolean {
  const prefix = pattern.endsWith("*");
  const body = prefix ? pattern.slice(0, -1) : pattern;
  const source = body
    .split("/")
    .map((segment) => (segment === "+" ? "[^/]+" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${source}${prefix ? ".*" : ""}$`).test(path);
}

function headerValue(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  const first = Array.isArray(value) ? value[0] : value;
  return first === undefined || first === "" ? undefined : first;
}

/** A request body as a JSON object (empty: `{}`), or the text of Vault's 400 for it. */
function parseBody(body: Buffer): { value: VaultJson } | { error: string } {
  if (body.length === 0) return { value: {} };
  try {
    const parsed: unknown = JSON.parse(body.toString("utf8"));
    if (isObject(parsed)) return { value: parsed };
    return { error: "failed to parse JSON input: the body is not a JSON object" };
  } catch (cause) {
    // Vault's text continues with Go's decoder message, which a JavaScript parser cannot reproduce.
    return { error: `failed to parse JSON input: ${(cause as Error).message}` };
  }
}

/**
 * An in-process double of Vault's HTTP API for tests; see the module comment for what it serves
 * and how faithfully. Create with {@link startVaultDouble}, or `new VaultDouble()` then `start()`.
 */
export class VaultDouble {
  readonly rootToken: string;
  readonly #options: VaultDoubleOptions;
  readonly #clock: () => number;
  #offsetMs = 0;
  #available = true;
  #port: number;
  #server: Server | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #clusterId = randomUUID();
  readonly #tokens = new Map<string, TokenEntry>();
  readonly #roles: RoleEntry[] = [];
  readonly #mounts = new Map<string, Mount>();
  readonly #leases = new Map<string, LeaseEntry>();
  readonly #counts = new Map<string, number>();
  readonly #countWaiters: { key: string; count: number; resolve: () => void }[] = [];
  readonly #log: VaultRequestRecord[] = [];
  #held: { released: Promise<void>; release: () => void } | undefined;

  constructor(options: VaultDoubleOptions = {}) {
    this.#options = options;
    const createdAt = Date.now();
    this.#clock = options.now ?? (() => createdAt);
    this.#port = options.port ?? 0;
    this.rootToken = options.rootToken ?? `hvs.${randomBase62(24)}`;
    const now = this.now();
    this.#tokens.set(this.rootToken, {
      id: this.rootToken,
      role: undefined,
      accessor: randomBase62(24),
      entityId: "",
      displayName: "root",
      path: "auth/token/root",
      policies: ["root"],
      policy: { paths: undefined },
      metadata: null,
      issuedAt: now,
      creationTtlSeconds: 0,
      expiresAt: undefined,
      maxExpiresAt: undefined,
      renewable: false,
      lastRenewal: undefined,
      revoked: false,
    });
    // A dev-mode Vault comes with KV v2 at secret/, and that is where most examples read.
    this.#mount("secret", "kv2");
  }

  /** `http://127.0.0.1:<port>`, the address to give a Vault client; stable across stop/start. */
  get url(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  get port(): number {
    return this.#port;
  }

  /** The double's clock, epoch milliseconds: what TTLs are measured against. */
  now(): number {
    return this.#clock() + this.#offsetMs;
  }

  /** Moves the clock forward, so tokens and leases expire without the test sleeping. */
  advance(ms: number): void {
    if (!(ms >= 0)) throw new Error(`advance(${ms}): the clock only moves forward; pass milliseconds >= 0`);
    this.#offsetMs += ms;
  }

  /**
   * `false`: every request but sys/health gets 503 `{"errors":["Vault is sealed"]}` and sys/health
   * reports `sealed: true` with 503, as a sealed Vault does. For refused connections use {@link stop}.
   */
  setAvailable(available: boolean): void {
    this.#available = available;
  }

  /** Listens (again) on 127.0.0.1, on the same port as before once one was chosen. */
  async start(): Promise<void> {
    if (this.#server !== undefined) return;
    const server = createServer((req, res) => this.#receive(req, res));
    server.on("connection", (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once("close", () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.#port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.#port = (server.address() as AddressInfo).port;
    this.#server = server;
  }

  /**
   * Stops listening and cuts open connections; state is kept. New connections get ECONNREFUSED;
   * a client that reuses a kept-alive connection may see ECONNRESET on its first call after.
   */
  async stop(): Promise<void> {
    const server = this.#server;
    if (server === undefined) return;
    this.#server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    await closed;
  }

  /** Same as {@link stop}; for `afterEach`. */
  close(): Promise<void> {
    this.#held?.release();
    return this.stop();
  }

  addAppRole(role: VaultAppRole): void {
    this.#addRole("approle", role, { roleId: role.roleId, secretId: role.secretId });
  }

  addKubernetesRole(role: VaultJwtRole): void {
    this.#addRole("kubernetes", role, { jwts: [...role.jwts] });
  }

  addJwtRole(role: VaultJwtRole): void {
    this.#addRole("jwt", role, { jwts: [...role.jwts] });
  }

  /** Creates a service token directly, as `auth/token/create` would; returns it. */
  issueToken(spec: VaultTokenSpec = {}): string {
    const ttl = spec.ttlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS;
    const maxTtl = spec.maxTtlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS;
    return this.#mintToken({
      displayName: "token",
      path: "auth/token/create",
      policies: spec.policies ?? [],
      policy: { paths: spec.paths },
      metadata: spec.metadata ? { ...spec.metadata } : null,
      ttlSeconds: ttl,
      maxTtlSeconds: maxTtl,
      renewable: spec.renewable ?? true,
    }).id;
  }

  /** The tokens logins to the role named `role` (any auth method) were given, oldest first. */
  tokensOf(role: string): string[] {
    return [...this.#tokens.values()].filter((token) => token.role === role).map((token) => token.id);
  }

  /** Revokes a token, and with it the leases it read, as Vault does. Returns whether it existed. */
  revokeToken(token: string): boolean {
    const entry = this.#tokens.get(token);
    if (entry === undefined) return false;
    entry.revoked = true;
    return true;
  }

  /**
   * Sets the paths (Vault ACL path patterns) a token, or every token of a role (existing ones
   * included: Vault resolves policies per request), may use. The default policy's paths
   * (lookup-self, renew-self, sys/leases/renew…) stay open regardless.
   */
  setPolicy(tokenOrRole: string, paths: readonly string[]): void {
    const token = this.#tokens.get(tokenOrRole);
    if (token !== undefined) {
      token.policy = { paths: [...paths] };
      return;
    }
    const roles = this.#roles.filter((r) => r.name === tokenOrRole);
    if (roles.length === 0) {
      throw new Error(
        "setPolicy: nothing matches; pass a token the double issued or the name of a role added",
      );
    }
    for (const role of roles) role.policy.paths = [...paths];
  }

  /**
   * Enables a secrets engine at `path`, as `vault secrets enable -path=<path>` would (KV v2 is
   * already at `secret`). The write methods below enable their mount on first use too.
   */
  mountSecretsEngine(path: string, type: "kv-v1" | "kv-v2" | "database"): void {
    this.#mount(path, type === "kv-v1" ? "kv1" : type === "kv-v2" ? "kv2" : "database");
  }

  /** Writes a KV v1 secret (replacing it); registers `mount` as KV v1 on first use. */
  writeKvV1(mount: string, path: string, data: VaultJson): void {
    this.#mount(mount, "kv1").entries.set(path, structuredClone(data));
  }

  /**
   * Writes a new version of a KV v2 secret, which is how a test rotates it; registers `mount` as
   * KV v2 on first use. Returns the new version number (1 for a new secret).
   */
  writeKvV2(mount: string, path: string, data: VaultJson, customMetadata?: Record<string, string>): number {
    return this.#writeKv2(this.#mount(mount, "kv2").entries, path, data, customMetadata).version;
  }

  /**
   * Deletes the latest version of a KV v2 secret (soft: its data can be undeleted), as
   * `DELETE <mount>/data/<path>` does; a read then gets 404 with the version's metadata.
   * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#delete-latest-version-of-secret
   */
  deleteKvV2(mount: string, path: string): void {
    this.#latestKv2(mount, path).deletionTime = new Date(this.now()).toISOString();
  }

  /**
   * Destroys the latest version of a KV v2 secret (its data is gone for good), as
   * `POST <mount>/destroy/<path>` with that version does.
   * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#destroy-secret-versions
   */
  destroyKvV2(mount: string, path: string): void {
    const version = this.#latestKv2(mount, path);
    version.destroyed = true;
    version.data = {};
  }

  /** Adds a dynamic-credentials role; registers its mount as a database secrets engine. */
  addDatabaseRole(role: VaultDatabaseRole): void {
    this.#mount(role.mount ?? "database", "database").roles.set(role.name, {
      name: role.name,
      ttlSeconds: role.ttlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS,
      maxTtlSeconds: role.maxTtlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS,
      renewable: role.renewable ?? true,
    });
  }

  /** Every lease the double issued, in order. */
  get leases(): VaultLeaseView[] {
    return [...this.#leases.values()].map((lease) => this.#leaseView(lease));
  }

  /** The lease's state now, or undefined if the double never issued it. */
  lease(leaseId: string): VaultLeaseView | undefined {
    const lease = this.#leases.get(leaseId);
    return lease === undefined ? undefined : this.#leaseView(lease);
  }

  #leaseView(lease: LeaseEntry): VaultLeaseView {
    return {
      leaseId: lease.id,
      issuedAt: lease.issuedAt,
      expiresAt: lease.expiresAt,
      maxExpiresAt: lease.maxExpiresAt,
      renewable: lease.renewable,
      live: this.#leaseLive(lease),
    };
  }

  /** Whether a token would be accepted now. */
  tokenValid(token: string): boolean {
    const entry = this.#tokens.get(token);
    return entry !== undefined && this.#tokenLive(entry);
  }

  /**
   * Requests received for `method` and `path` (as sent, without the query string, e.g.
   * `GET`, `/v1/secret/data/app`), counted on arrival: a request held by {@link hold} counts.
   */
  requestCount(method: string, path: string): number {
    return this.#counts.get(`${method.toUpperCase()} ${path}`) ?? 0;
  }

  /** Resolves once {@link requestCount} for `method` and `path` reaches `count`. */
  waitForRequests(method: string, path: string, count = 1): Promise<void> {
    const key = `${method.toUpperCase()} ${path}`;
    if ((this.#counts.get(key) ?? 0) >= count) return Promise.resolve();
    return new Promise((resolve) => this.#countWaiters.push({ key, count, resolve }));
  }

  /** Every request answered so far, in order; see {@link VaultRequestRecord} (nothing secret). */
  get requests(): readonly VaultRequestRecord[] {
    return [...this.#log];
  }

  /**
   * Holds every request that arrives from now on (after counting it) until the returned function
   * is called: lets a test have several client calls in flight at once, deterministically.
   */
  hold(): () => void {
    if (this.#held === undefined) {
      let release = () => {};
      const released = new Promise<void>((resolve) => {
        release = resolve;
      });
      this.#held = { released, release };
    }
    const held = this.#held;
    return () => {
      if (this.#held === held) this.#held = undefined;
      held.release();
    };
  }

  #addRole(method: RoleEntry["method"], role: VaultLoginRole, credentials: Partial<RoleEntry>): void {
    const duplicate = this.#roles.find((r) => r.method === method && r.name === role.name);
    if (duplicate !== undefined) throw new Error(`a ${method} role named "${role.name}" was already added`);
    this.#roles.push({
      method,
      name: role.name,
      ttlSeconds: role.ttlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS,
      maxTtlSeconds: role.maxTtlSeconds ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS,
      renewable: role.renewable ?? true,
      policies: [...(role.policies ?? [])],
      policy: { paths: role.paths ? [...role.paths] : undefined },
      metadata: { ...role.metadata },
      ...credentials,
    });
  }

  /** The mount at `path`, registered as `type` on first use. */
  #mount<T extends Mount["type"]>(path: string, type: T): Extract<Mount, { type: T }> {
    const existing = this.#mounts.get(path);
    if (existing !== undefined && existing.type !== type) {
      throw new Error(`mount "${path}" is ${existing.type}; it cannot also be ${type}`);
    }
    const mount: Mount =
      existing ??
      (type === "database"
        ? { type: "database", roles: new Map() }
        : { type: type === "kv1" ? "kv1" : "kv2", entries: new Map() });
    this.#mounts.set(path, mount);
    // The type check above makes this the variant asked for.
    return mount as Extract<Mount, { type: T }>;
  }

  #latestKv2(mount: string, path: string): Kv2Version {
    const latest = this.#mount(mount, "kv2").entries.get(path)?.versions.at(-1);
    if (latest === undefined) throw new Error(`no KV v2 secret ${mount}/${path}; write it first`);
    return latest;
  }

  #writeKv2(
    entries: Map<string, Kv2Secret>,
    path: string,
    data: VaultJson,
    customMetadata?: Record<string, string>,
  ): { version: number; createdTime: string; customMetadata: Record<string, string> | null } {
    const secret = entries.get(path) ?? { versions: [], customMetadata: null };
    if (customMetadata !== undefined) secret.customMetadata = { ...customMetadata };
    const createdTime = new Date(this.now()).toISOString();
    secret.versions.push({ data: structuredClone(data), createdTime, deletionTime: "", destroyed: false });
    entries.set(path, secret);
    return { version: secret.versions.length, createdTime, customMetadata: secret.customMetadata };
  }

  #mintToken(spec: {
    role?: string;
    displayName: string;
    path: string;
    policies: readonly string[];
    policy: Policy;
    metadata: Record<string, string> | null;
    ttlSeconds: number;
    maxTtlSeconds: number;
    renewable: boolean;
  }): TokenEntry {
    const now = this.now();
    const ttl = Math.min(spec.ttlSeconds, spec.maxTtlSeconds);
    const token: TokenEntry = {
      // Vault 1.10+ service tokens: `hvs.` and a base62 body.
      id: `hvs.${randomBase62(24)}`,
      role: spec.role,
      accessor: randomBase62(24),
      entityId: randomUUID(),
      displayName: spec.displayName,
      path: spec.path,
      // Vault attaches `default` unless told not to, and reports policies sorted.
      policies: [...new Set(["default", ...spec.policies])].sort(),
      policy: spec.policy,
      metadata: spec.metadata,
      issuedAt: now,
      creationTtlSeconds: ttl,
      expiresAt: now + ttl * 1000,
      maxExpiresAt: now + spec.maxTtlSeconds * 1000,
      renewable: spec.renewable,
      lastRenewal: undefined,
      revoked: false,
    };
    this.#tokens.set(token.id, token);
    return token;
  }

  #tokenLive(token: TokenEntry): boolean {
    return !token.revoked && (token.expiresAt === undefined || this.now() < token.expiresAt);
  }

  #leaseLive(lease: LeaseEntry): boolean {
    const token = this.#tokens.get(lease.tokenId);
    return !lease.revoked && this.now() < lease.expiresAt && token !== undefined && this.#tokenLive(token);
  }

  #denied(kind: "policy" | "token"): Reply {
    if (this.#options.denialStyle === "plain") return { status: 403, body: errors("permission denied") };
    return {
      status: 403,
      body:
        kind === "token"
          ? errors("2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n")
          : errors("1 error occurred:\n\t* permission denied\n\n"),
    };
  }

  #receive(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    // A client that went away mid-reply must not crash the test process.
    res.on("error", () => {});
    req.on("data", (chunk: Buffer) => chunks.push(chunk));
    req.on("end", () => {
      const arrivedAt = this.now();
      const method = (req.method ?? "GET").toUpperCase();
      const url = new URL(req.url ?? "/", "http://vault.invalid");
      this.#count(`${method} ${url.pathname}`);
      const held = this.#held?.released ?? Promise.resolve();
      void held
        .then(() => this.#handle(req, method, url, Buffer.concat(chunks)))
        .catch(
          (cause: unknown): Reply => ({ status: 500, body: errors(`vault double failed: ${String(cause)}`) }),
        )
        .then((reply) => {
          this.#log.push({
            method,
            path: `${url.pathname}${url.search}`,
            namespace: headerValue(req, "x-vault-namespace"),
            status: reply.status,
            at: arrivedAt,
          });
          this.#send(res, reply, method === "HEAD");
        });
    });
  }

  #count(key: string): void {
    const count = (this.#counts.get(key) ?? 0) + 1;
    this.#counts.set(key, count);
    for (let i = this.#countWaiters.length - 1; i >= 0; i--) {
      const waiter = this.#countWaiters[i];
      if (waiter !== undefined && waiter.key === key && count >= waiter.count) {
        this.#countWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  #send(res: ServerResponse, reply: Reply, head: boolean): void {
    if (res.destroyed) return;
    if (reply.body === undefined) {
      res.writeHead(reply.status, { "cache-control": "no-store" });
      res.end();
      return;
    }
    // Go's json.Encoder, which Vault answers through, ends the document with a newline.
    const text = `${JSON.stringify(reply.body)}\n`;
    res.writeHead(reply.status, {
      "content-type": "application/json",
      "cache-control": "no-store",
      "content-length": Buffer.byteLength(text),
    });
    res.end(head ? undefined : text);
  }

  #handle(req: IncomingMessage, method: string, url: URL, body: Buffer): Reply {
    if (!url.pathname.startsWith("/v1/")) return { status: 404, body: errors() };
    const path = decodeURIComponent(url.pathname.slice("/v1/".length));
    if (path === "sys/health") {
      if (method !== "GET" && method !== "HEAD") return this.#unsupported();
      return this.#health(url);
    }
    if (!this.#available) return { status: 503, body: errors("Vault is sealed") };
    const bearer = /^Bearer\s+(.+)$/i.exec(headerValue(req, "authorization") ?? "")?.[1];
    // Vault parses the body while building the request, before it looks at token or route.
    const parsed = method === "POST" || method === "PUT" ? parseBody(body) : { value: {} };
    if ("error" in parsed) return { status: 400, body: errors(parsed.error) };
    const { value: json } = parsed;
    const incoming: Incoming = {
      method,
      url,
      path,
      token: headerValue(req, "x-vault-token") ?? bearer,
      json,
    };

    const login = this.#loginMethod(path);
    if (login !== undefined) {
      if (method !== "POST" && method !== "PUT") return this.#unsupported();
      if (login === "approle") return this.#approleLogin(json);
      return login === "kubernetes" ? this.#kubernetesLogin(json) : this.#jwtLogin(json);
    }

    // Vault checks the token and the ACL before it routes, so a denied token never learns
    // whether a path exists.
    // Not verified: the exact text for a request with no token at all; the policy-denial text
    // is the closest documented behaviour.
    if (incoming.token === undefined) return this.#denied("policy");
    const token = this.#tokens.get(incoming.token);
    if (token === undefined || !this.#tokenLive(token)) return this.#denied("token");
    if (!this.#allowed(token, path)) return this.#denied("policy");
    return this.#route(incoming, token);
  }

  #route(incoming: Incoming, token: TokenEntry): Reply {
    const { method, path } = incoming;
    const read = method === "GET";
    const write = method === "POST" || method === "PUT";
    switch (path) {
      case "auth/token/lookup-self":
        return read ? this.#lookupSelf(token) : this.#unsupported();
      case "auth/token/renew-self":
        return write ? this.#renewSelf(token, incoming.json) : this.#unsupported();
      case "sys/leases/renew":
      case "sys/renew":
        return write ? this.#renewLease(incoming.json) : this.#unsupported();
      case "sys/leases/revoke":
        return write ? this.#revokeLease(incoming.json.lease_id) : this.#unsupported();
    }
    if (path.startsWith("sys/leases/revoke/")) {
      return write ? this.#revokeLease(path.slice("sys/leases/revoke/".length)) : this.#unsupported();
    }
    const found = this.#findMount(path);
    if (found === undefined) {
      // The router's text for a path no mount claims, as seen in public client test suites; the
      // Vault source of it was not read.
      return { status: 404, body: errors(`no handler for route "${path}". route entry not found.`) };
    }
    const { mount, mountPath, rest } = found;
    if (mount.type === "kv1") {
      if (read) return this.#readKv1(mount.entries, rest);
      if (!write) return this.#unsupported();
      mount.entries.set(rest, structuredClone(incoming.json));
      return { status: 204 };
    }
    if (mount.type === "kv2") {
      if (!rest.startsWith("data/")) return { status: 404, body: errors() };
      const secretPath = rest.slice("data/".length);
      if (read) return this.#readKv2(mount.entries, secretPath, incoming.url);
      if (!write) return this.#unsupported();
      return this.#writeKv2Http(mount.entries, secretPath, incoming.json);
    }
    const role = /^creds\/([^/]+)$/.exec(rest)?.[1];
    if (role === undefined) return { status: 404, body: errors() };
    return read ? this.#databaseCreds(mount, mountPath, role, token) : this.#unsupported();
  }

  /** @see https://developer.hashicorp.com/vault/api-docs/system/health */
  #health(url: URL): Reply {
    const code = (name: string, fallback: number): number => {
      const value = url.searchParams.get(name);
      return value !== null && /^\d{3}$/.test(value) ? Number(value) : fallback;
    };
    const sealed = !this.#available;
    return {
      status: sealed ? code("sealedcode", 503) : code("activecode", 200),
      body: {
        initialized: true,
        sealed,
        standby: sealed,
        performance_standby: false,
        replication_performance_mode: "disabled",
        replication_dr_mode: "disabled",
        server_time_utc: Math.floor(this.now() / 1000),
        version: this.#options.version ?? "1.19.0",
        ...(sealed ? {} : { cluster_name: "vault-cluster-double", cluster_id: this.#clusterId }),
      },
    };
  }

  #unsupported(): Reply {
    // ErrUnsupportedOperation ("unsupported operation") maps to 405 in Vault's sdk/logical
    // response_util.go; the multierror wrapping of its text is assumed, not observed.
    const text = "unsupported operation";
    return {
      status: 405,
      body: errors(this.#options.denialStyle === "plain" ? text : `1 error occurred:\n\t* ${text}\n\n`),
    };
  }

  #loginMethod(path: string): RoleEntry["method"] | undefined {
    const mounts: [RoleEntry["method"], string][] = [
      ["approle", this.#options.approleMount ?? "approle"],
      ["kubernetes", this.#options.kubernetesMount ?? "kubernetes"],
      ["jwt", this.#options.jwtMount ?? "jwt"],
    ];
    return mounts.find(([, mount]) => path === `auth/${mount}/login`)?.[0];
  }

  #allowed(token: TokenEntry, path: string): boolean {
    const paths = token.policy.paths;
    if (paths === undefined) return true;
    return [...DEFAULT_POLICY_PATHS, ...paths].some((pattern) => pathMatches(pattern, path));
  }

  #findMount(path: string): { mount: Mount; mountPath: string; rest: string } | undefined {
    let best: string | undefined;
    for (const mountPath of this.#mounts.keys()) {
      if (path.startsWith(`${mountPath}/`) && (best === undefined || mountPath.length > best.length)) {
        best = mountPath;
      }
    }
    const mount = best === undefined ? undefined : this.#mounts.get(best);
    if (best === undefined || mount === undefined) return undefined;
    return { mount, mountPath: best, rest: path.slice(best.length + 1) };
  }

  /**
   * Errors: 400 "missing role_id" / "missing secret_id", 400 "invalid role or secret ID" for an
   * unknown role_id or a wrong secret_id (logical.ErrInvalidCredentials has no status of its own,
   * so an error response is a 400).
   * @see https://developer.hashicorp.com/vault/api-docs/auth/approle#login-with-approle
   * @see https://github.com/hashicorp/vault/blob/main/builtin/credential/approle/path_login.go
   * @see https://github.com/hvac/hvac/issues/1145 (the text, as a client sees it)
   */
  #approleLogin(json: VaultJson): Reply {
    const roleId = typeof json.role_id === "string" ? json.role_id.trim() : "";
    if (roleId === "") return { status: 400, body: errors("missing role_id") };
    const role = this.#roles.find((r) => r.method === "approle" && r.roleId === roleId);
    if (role === undefined) return { status: 400, body: errors("invalid role or secret ID") };
    const secretId = typeof json.secret_id === "string" ? json.secret_id.trim() : "";
    if (secretId === "") return { status: 400, body: errors("missing secret_id") };
    if (secretId !== role.secretId) return { status: 400, body: errors("invalid role or secret ID") };
    const approle = this.#options.approleMount ?? "approle";
    return this.#loggedIn(role, `auth/${approle}/login`, approle, { role_name: role.name });
  }

  /**
   * Errors: 400 "missing role" / "missing jwt"; 400 `invalid role name "<role>"`; a JWT the role
   * does not accept (bad signature, or refused by the TokenReview API): 403 with the bare
   * "permission denied" (logical.ErrPermissionDenied; an observed 403 of that plugin has
   * Content-Length 33, the plain body plus newline).
   * @see https://developer.hashicorp.com/vault/api-docs/auth/kubernetes#login
   * @see https://github.com/hashicorp/vault-plugin-auth-kubernetes/blob/main/path_login.go
   * @see https://github.com/hashicorp/vault-plugin-auth-kubernetes/issues/84
   */
  #kubernetesLogin(json: VaultJson): Reply {
    const roleName = typeof json.role === "string" ? json.role : "";
    if (roleName === "") return { status: 400, body: errors("missing role") };
    const jwt = typeof json.jwt === "string" ? json.jwt : "";
    if (jwt === "") return { status: 400, body: errors("missing jwt") };
    const role = this.#roles.find((r) => r.method === "kubernetes" && r.name === roleName);
    if (role === undefined) return { status: 400, body: errors(`invalid role name "${roleName}"`) };
    if (!role.jwts?.includes(jwt)) return { status: 403, body: errors("permission denied") };
    const mount = this.#options.kubernetesMount ?? "kubernetes";
    return this.#loggedIn(role, `auth/${mount}/login`, `${mount}-default-${role.name}`, {
      role: role.name,
      service_account_name: role.name,
      service_account_namespace: "default",
      service_account_secret_name: "",
      service_account_uid: randomUUID(),
    });
  }

  /**
   * Errors, all 400 (logical.ErrorResponse): "missing role"; `role "<role>" could not be found`;
   * "missing token" (the field is `jwt`, the text says token); a JWT the role does not accept:
   * "no known key successfully validated the token signature", the text for a mount configured
   * with static public keys (with JWKS it is "error verifying token: …", with OIDC discovery
   * "error validating signature: …": the detail comes from the signature library).
   * @see https://developer.hashicorp.com/vault/api-docs/auth/jwt#jwt-login
   * @see https://github.com/hashicorp/vault-plugin-auth-jwt/blob/main/path_login.go
   */
  #jwtLogin(json: VaultJson): Reply {
    const roleName = typeof json.role === "string" ? json.role : "";
    if (roleName === "") return { status: 400, body: errors("missing role") };
    const role = this.#roles.find((r) => r.method === "jwt" && r.name === roleName);
    if (role === undefined) return { status: 400, body: errors(`role "${roleName}" could not be found`) };
    const jwt = typeof json.jwt === "string" ? json.jwt : "";
    if (jwt === "") return { status: 400, body: errors("missing token") };
    if (!role.jwts?.includes(jwt)) {
      return { status: 400, body: errors("no known key successfully validated the token signature") };
    }
    const mount = this.#options.jwtMount ?? "jwt";
    return this.#loggedIn(role, `auth/${mount}/login`, `${mount}-${role.name}`, { role: role.name });
  }

  #loggedIn(role: RoleEntry, path: string, displayName: string, metadata: Record<string, string>): Reply {
    const token = this.#mintToken({
      role: role.name,
      displayName,
      path,
      policies: role.policies,
      // Shared with the role, so setPolicy(role) reaches tokens already issued.
      policy: role.policy,
      metadata: { ...metadata, ...role.metadata },
      ttlSeconds: role.ttlSeconds,
      maxTtlSeconds: role.maxTtlSeconds,
      renewable: role.renewable,
    });
    return { status: 200, body: this.#envelope({ auth: this.#authBlock(token, token.creationTtlSeconds) }) };
  }

  /** The fields every Vault response carries around `data`/`auth`. */
  #envelope(fields: {
    data?: unknown;
    auth?: unknown;
    warnings?: string[];
    leaseId?: string;
    leaseDuration?: number;
    renewable?: boolean;
  }): VaultJson {
    return {
      request_id: randomUUID(),
      lease_id: fields.leaseId ?? "",
      renewable: fields.renewable ?? false,
      lease_duration: fields.leaseDuration ?? 0,
      data: fields.data ?? null,
      wrap_info: null,
      warnings: fields.warnings && fields.warnings.length > 0 ? fields.warnings : null,
      auth: fields.auth ?? null,
    };
  }

  /** @see https://developer.hashicorp.com/vault/api-docs/auth/token#create-token (the `auth` block) */
  #authBlock(token: TokenEntry, leaseDuration: number): VaultJson {
    return {
      client_token: token.id,
      accessor: token.accessor,
      policies: token.policies,
      token_policies: token.policies,
      metadata: token.metadata,
      lease_duration: leaseDuration,
      renewable: token.renewable,
      entity_id: token.entityId,
      token_type: "service",
      orphan: true,
      mfa_requirement: null,
      num_uses: 0,
    };
  }

  /** @see https://developer.hashicorp.com/vault/api-docs/auth/token#lookup-a-token-self */
  #lookupSelf(token: TokenEntry): Reply {
    const now = this.now();
    const iso = (ms: number) => new Date(ms).toISOString();
    return {
      status: 200,
      body: this.#envelope({
        data: {
          accessor: token.accessor,
          creation_time: Math.floor(token.issuedAt / 1000),
          creation_ttl: token.creationTtlSeconds,
          display_name: token.displayName,
          entity_id: token.entityId,
          expire_time: token.expiresAt === undefined ? null : iso(token.expiresAt),
          explicit_max_ttl: 0,
          id: token.id,
          issue_time: iso(token.issuedAt),
          meta: token.metadata,
          num_uses: 0,
          orphan: true,
          path: token.path,
          policies: token.policies,
          renewable: token.renewable,
          ttl: token.expiresAt === undefined ? 0 : Math.max(0, Math.floor((token.expiresAt - now) / 1000)),
          type: "service",
          ...(token.lastRenewal === undefined
            ? {}
            : {
                last_renewal: iso(token.lastRenewal),
                last_renewal_time: Math.floor(token.lastRenewal / 1000),
              }),
        },
      }),
    };
  }

  /**
   * Without `increment` the token gets its creation TTL again (what the auth method's renew
   * callback sets); never past its max TTL: the TTL is capped, with Vault's warning.
   * @see https://developer.hashicorp.com/vault/api-docs/auth/token#renew-a-token-self
   */
  #renewSelf(token: TokenEntry, json: VaultJson): Reply {
    if (!token.renewable || token.expiresAt === undefined || token.maxExpiresAt === undefined) {
      return { status: 400, body: errors("lease is not renewable") };
    }
    const requested =
      json.increment === undefined ? token.creationTtlSeconds : parseVaultDuration(json.increment);
    if (requested === undefined) {
      return {
        status: 400,
        body: errors(`invalid increment "${String(json.increment)}"; give seconds or a duration like "1h"`),
      };
    }
    const { ttl, warnings } = this.#capped(requested, token.maxExpiresAt);
    const now = this.now();
    token.expiresAt = now + ttl * 1000;
    token.lastRenewal = now;
    return { status: 200, body: this.#envelope({ auth: this.#authBlock(token, ttl), warnings }) };
  }

  /** Caps a requested TTL at what is left before `maxExpiresAt`, warning as Vault's CalculateTTL does. */
  #capped(requestedSeconds: number, maxExpiresAt: number): { ttl: number; warnings: string[] } {
    const left = Math.max(0, Math.floor((maxExpiresAt - this.now()) / 1000));
    if (requestedSeconds <= left) return { ttl: requestedSeconds, warnings: [] };
    return {
      ttl: left,
      warnings: [
        `TTL of "${formatDuration(requestedSeconds)}" exceeded the effective max_ttl of "${formatDuration(left)}"; TTL value is capped accordingly`,
      ],
    };
  }

  /**
   * Errors, 400: "lease not found" for an unknown, revoked or expired lease (Vault revokes a lease
   * when it expires; "lease expired" only shows in the moment before that, which this double
   * does not model), "lease is not renewable".
   * @see https://developer.hashicorp.com/vault/api-docs/system/leases#renew-lease
   * @see https://github.com/spring-cloud/spring-cloud-vault/issues/557 (400 {"errors":["lease not found"]})
   */
  #renewLease(json: VaultJson): Reply {
    const leaseId = typeof json.lease_id === "string" ? json.lease_id : "";
    // Not verified: the text when lease_id is missing (node-vault always sends it).
    if (leaseId === "") return { status: 400, body: errors("lease_id must be specified") };
    const lease = this.#leases.get(leaseId);
    if (lease === undefined || !this.#leaseLive(lease))
      return { status: 400, body: errors("lease not found") };
    if (!lease.renewable) return { status: 400, body: errors("lease is not renewable") };
    const requested = json.increment === undefined ? lease.ttlSeconds : parseVaultDuration(json.increment);
    if (requested === undefined) {
      return { status: 400, body: errors(`invalid increment "${String(json.increment)}"; give seconds`) };
    }
    const { ttl, warnings } = this.#capped(requested, lease.maxExpiresAt);
    lease.expiresAt = this.now() + ttl * 1000;
    return {
      status: 200,
      body: this.#envelope({ leaseId: lease.id, renewable: true, leaseDuration: ttl, warnings }),
    };
  }

  /**
   * 204 whether or not the lease exists: Vault's revocation of an unknown lease is a no-op
   * (ExpirationManager.LazyRevoke returns nil when there is no entry).
   * @see https://developer.hashicorp.com/vault/api-docs/system/leases#revoke-lease
   */
  #revokeLease(id: unknown): Reply {
    const leaseId = typeof id === "string" ? id : "";
    if (leaseId === "") return { status: 400, body: errors("lease_id must be specified") };
    const lease = this.#leases.get(leaseId);
    if (lease !== undefined) lease.revoked = true;
    return { status: 204 };
  }

  /**
   * `lease_duration` is the advisory `ttl` key of the secret if it has one, else the system default.
   * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v1#read-secret
   */
  #readKv1(entries: Map<string, VaultJson>, path: string): Reply {
    const data = entries.get(path);
    if (data === undefined) return { status: 404, body: errors() };
    const ttl = parseVaultDuration(data.ttl) ?? VAULT_SYSTEM_DEFAULT_TTL_SECONDS;
    return { status: 200, body: this.#envelope({ data: structuredClone(data), leaseDuration: ttl }) };
  }

  /**
   * Missing secret or version: 404 `{"errors":[]}`, Vault's answer to a read that found nothing.
   * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#read-secret-version
   */
  #readKv2(entries: Map<string, Kv2Secret>, path: string, url: URL): Reply {
    const secret = entries.get(path);
    const raw = url.searchParams.get("version");
    // Not verified: Vault's exact text for a version that is not an integer.
    if (raw !== null && !/^\d+$/.test(raw)) {
      return { status: 400, body: errors(`cannot parse 'version' as int: "${raw}"`) };
    }
    if (secret === undefined) return { status: 404, body: errors() };
    const version = raw === null || raw === "0" ? secret.versions.length : Number(raw);
    const stored = secret.versions[version - 1];
    if (stored === undefined) return { status: 404, body: errors() };
    // A deleted or destroyed version: 404 with its metadata, data null and no `errors`
    // (hashicorp/vault#4935, hvac/hvac#906).
    const gone = stored.deletionTime !== "" || stored.destroyed;
    return {
      status: gone ? 404 : 200,
      body: this.#envelope({
        data: {
          data: gone ? null : structuredClone(stored.data),
          metadata: {
            created_time: stored.createdTime,
            custom_metadata: secret.customMetadata,
            deletion_time: stored.deletionTime,
            destroyed: stored.destroyed,
            version,
          },
        },
      }),
    };
  }

  /** @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#create-update-secret */
  #writeKv2Http(entries: Map<string, Kv2Secret>, path: string, json: VaultJson): Reply {
    // Not verified: the text for a write without a `data` object.
    if (!isObject(json.data)) return { status: 400, body: errors("no data provided") };
    const written = this.#writeKv2(entries, path, json.data);
    return {
      status: 200,
      body: this.#envelope({
        data: {
          created_time: written.createdTime,
          custom_metadata: written.customMetadata,
          deletion_time: "",
          destroyed: false,
          version: written.version,
        },
      }),
    };
  }

  /**
   * Each read is a new lease, `<mount>/creds/<role>/<random>`, with a fresh username and password.
   * Unknown role: 400 "unknown role: <role>".
   * @see https://developer.hashicorp.com/vault/api-docs/secret/databases#generate-credentials
   * @see https://github.com/hashicorp/vault/blob/main/builtin/logical/database/path_creds_create.go
   */
  #databaseCreds(mount: Mount, mountPath: string, roleName: string, token: TokenEntry): Reply {
    const role = mount.type === "database" ? mount.roles.get(roleName) : undefined;
    if (role === undefined) return { status: 400, body: errors(`unknown role: ${roleName}`) };
    const now = this.now();
    const ttl = Math.min(role.ttlSeconds, role.maxTtlSeconds);
    const lease: LeaseEntry = {
      id: `${mountPath}/creds/${roleName}/${randomBase62(24)}`,
      tokenId: token.id,
      issuedAt: now,
      expiresAt: now + ttl * 1000,
      maxExpiresAt: now + role.maxTtlSeconds * 1000,
      ttlSeconds: ttl,
      renewable: role.renewable,
      revoked: false,
    };
    this.#leases.set(lease.id, lease);
    // Shaped like the default username template of Vault's SQL plugins, v-<display>-<role>-<random>-<unix>.
    const username = `v-${token.displayName.slice(0, 8)}-${roleName.slice(0, 8)}-${randomBase62(20)}-${Math.floor(now / 1000)}`;
    return {
      status: 200,
      body: this.#envelope({
        leaseId: lease.id,
        renewable: lease.renewable,
        leaseDuration: ttl,
        data: { username, password: `${randomBase62(8)}-${randomBase62(11)}` },
      }),
    };
  }
}

/** Creates a {@link VaultDouble} and starts it on 127.0.0.1 (port 0 unless `options.port`). */
export async function startVaultDouble(options: VaultDoubleOptions = {}): Promise<VaultDouble> {
  const double = new VaultDouble(options);
  await double.start();
  return double;
}
