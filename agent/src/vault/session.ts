/**
 * The agent's own identity in Vault: it logs in by the configured method and
 * keeps its token alive. The token's lifecycle is a small state machine:
 *
 * - `renewing`: the token is renewable; at 2/3 of its TTL it is renewed (renew-self).
 * - `expiring`: the token cannot be renewed (not renewable, or a renewal granted less than
 *   the login did, which means it reached its max TTL); at 2/3 of its remaining TTL the
 *   agent logs in again.
 * - `lasting`: the token has no TTL (e.g. a root token); nothing is scheduled.
 * - `stopped`.
 *
 * A failed renewal leads to a new login; a failed login is retried every
 * {@link LOGIN_RETRY_MS} and, meanwhile, before any read once the token has expired.
 * A token Vault refuses (revoked, or lost in a failover) is replaced by a login at once,
 * see {@link VaultSession.request}. Files (token, secret id, JWT) are read at each login,
 * so rotated ones are used.
 *
 * @see https://developer.hashicorp.com/vault/api-docs/auth/token#renew-a-token-self
 * @see https://developer.hashicorp.com/vault/docs/concepts/tokens#token-time-to-live-periodic-tokens-and-explicit-max-ttls
 */
import { readFile } from "node:fs/promises";
import { GatehouseError } from "@gatehouse/proto/errors";
import nodeVault from "node-vault";
import type { Logger } from "pino";
import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import type { VaultConfig } from "../config.js";
import { describeVaultError, localFailure, type VaultFailure } from "./failure.js";

/** node-vault's client; nothing outside agent/src/vault/ sees it. */
export type VaultClient = ReturnType<typeof nodeVault>;

/** How long after a failed login the next one is tried (sooner if a read needs a token). */
export const LOGIN_RETRY_MS = 30_000;

/** After a 403 made the agent log in again, the next 403 within this time is taken as Vault's answer. */
export const FORCED_LOGIN_MS = 30_000;

/**
 * When a token expires; one per login, moved by each renewal. Vault revokes a token's
 * leases when it expires, so a dynamic secret lives no longer than the token that read it.
 */
export interface TokenLifetime {
  /** Epoch ms; Infinity for a token without TTL. */
  readonly expiresAt: number;
}

/** A login Vault refused or could not serve; the message names what to fix. */
export class VaultLoginError extends Error {
  override readonly name = "VaultLoginError";
  constructor(
    message: string,
    readonly failure: VaultFailure,
  ) {
    super(message);
  }
}

const tokenAnswer = z.object({
  auth: z.object({ client_token: z.string().min(1), lease_duration: z.number(), renewable: z.boolean() }),
});
const lookupAnswer = z.object({ data: z.object({ ttl: z.number(), renewable: z.boolean().optional() }) });

/** What a login yielded: the token is set on the client. */
interface TokenTerms {
  ttlSeconds: number;
  renewable: boolean;
}

/** One configured login method. */
interface LoginMethod {
  /** `token`, `approle`, `kubernetes` or `jwt`: the key under `vault.auth`. */
  name: string;
  /** What to check when Vault refuses the login. */
  hint: string;
  login(client: VaultClient): Promise<TokenTerms>;
}

/** Reads a credential file of the login; trailing newlines are not part of the credential. */
async function readCredentialFile(key: string, file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unreadable";
    throw new VaultLoginError(`${key}: cannot read ${file} (${code})`, localFailure(`cannot read ${file}`));
  }
  const value = text.trim();
  if (!value) throw new VaultLoginError(`${key}: ${file} is empty`, localFailure(`${file} is empty`));
  return value;
}

function termsOf(answer: unknown): TokenTerms {
  const { auth } = tokenAnswer.parse(answer);
  return { ttlSeconds: auth.lease_duration, renewable: auth.renewable };
}

function loginMethod(auth: VaultConfig["auth"]): LoginMethod {
  if (auth.token) {
    const { tokenFile } = auth.token;
    return {
      name: "token",
      hint: `check the token in ${tokenFile}`,
      async login(client) {
        client.token = await readCredentialFile("vault.auth.token.tokenFile", tokenFile);
        const { data } = lookupAnswer.parse(await client.tokenLookupSelf());
        return { ttlSeconds: data.ttl, renewable: data.renewable ?? false };
      },
    };
  }
  if (auth.approle) {
    const { roleId, secretIdFile } = auth.approle;
    return {
      name: "approle",
      hint: "check roleId and the secret id file",
      login: async (client) =>
        termsOf(
          await client.approleLogin({
            role_id: roleId,
            secret_id: await readCredentialFile("vault.auth.approle.secretIdFile", secretIdFile),
          }),
        ),
    };
  }
  if (auth.kubernetes) {
    const { role, jwtFile } = auth.kubernetes;
    return {
      name: "kubernetes",
      hint: `check the role and the service account token in ${jwtFile}`,
      login: async (client) =>
        termsOf(
          await client.kubernetesLogin({
            role,
            jwt: await readCredentialFile("vault.auth.kubernetes.jwtFile", jwtFile),
            // node-vault's own default for this mount is not filled into the path.
            mount_point: "kubernetes",
          }),
        ),
    };
  }
  if (auth.jwt) {
    const { role, jwtFile, path } = auth.jwt;
    return {
      name: "jwt",
      hint: `check the role, the JWT in ${jwtFile} and the mount path '${path}'`,
      login: async (client) =>
        termsOf(
          await client.jwtLogin({
            role,
            jwt: await readCredentialFile("vault.auth.jwt.jwtFile", jwtFile),
            mount_point: path,
          }),
        ),
    };
  }
  // The config schema admits exactly one method.
  throw new GatehouseError("GATE_CONFIG_INVALID", "vault.auth: name one of token, approle, kubernetes, jwt");
}

type TokenState = "renewing" | "expiring" | "lasting" | "stopped";

export interface VaultSessionOptions {
  logger: Logger;
  clock?: Clock;
}

/** A logged-in Vault client that keeps its token alive until {@link VaultSession.stop}. */
export class VaultSession {
  private state: TokenState = "lasting";
  /** The current token's. */
  private lifetime = { expiresAt: Number.POSITIVE_INFINITY };
  /** When a 403 last made the agent log in again. */
  private forcedLoginAt = Number.NEGATIVE_INFINITY;
  /** The TTL the last login granted: a renewal granting less has met the token's max TTL. */
  private grantedTtlSeconds = 0;
  private cancelTimer: (() => void) | null = null;
  private loggingIn: Promise<void> | null = null;
  private logins = 0;
  private readonly clock: Clock;
  private readonly logger: Logger;

  private constructor(
    /** The node-vault client, with the current token. */
    readonly client: VaultClient,
    private readonly method: LoginMethod,
    private readonly address: string,
    options: VaultSessionOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger;
  }

  /**
   * Reads `vault.caCert`, logs in, and starts keeping the token alive. Fails with
   * GATE_CONFIG_INVALID naming the setting to fix: `vault.address` when Vault cannot
   * be reached, `vault.auth.<method>` when it refuses the login.
   */
  static async start(config: VaultConfig, options: VaultSessionOptions): Promise<VaultSession> {
    let ca: Buffer | undefined;
    if (config.caCert) {
      try {
        ca = await readFile(config.caCert);
      } catch (error) {
        throw new GatehouseError(
          "GATE_CONFIG_INVALID",
          `vault.caCert: cannot read ${config.caCert} (${(error as NodeJS.ErrnoException).code}); point it at the PEM file of the CA that signed Vault's certificate`,
        );
      }
    }
    const client = nodeVault({
      // node-vault's default prints each request body (secret ids, JWTs) when DEBUG names it.
      debug: () => {},
      endpoint: config.address,
      requestOptions: {
        timeout: config.timeoutSeconds * 1000,
        // Set, so that node-vault's VAULT_SKIP_VERIFY default cannot turn verification off.
        strictSSL: true,
        ...(ca ? { ca } : {}),
      },
    });
    // node-vault falls back to VAULT_TOKEN, VAULT_NAMESPACE and VAULT_PREFIX from the process
    // environment; the agent's configuration alone decides.
    Object.assign(client, { token: "", namespace: config.namespace ?? "", pathPrefix: "" });
    const session = new VaultSession(client, loginMethod(config.auth), config.address, options);
    try {
      await session.login();
    } catch (error) {
      throw new GatehouseError("GATE_CONFIG_INVALID", (error as Error).message);
    }
    return session;
  }

  /** Whether {@link VaultSession.stop} was called (a getter, so that it is read anew after each await). */
  get stopped(): boolean {
    return this.state === "stopped";
  }

  /** The current token's lifetime (see {@link TokenLifetime}). */
  get tokenLifetime(): TokenLifetime {
    return this.lifetime;
  }

  /**
   * Resolves once the client holds a token that has not expired: waits for a login
   * under way, or logs in when the token ran out (a renewal missed while the process
   * was suspended, or logins failing). A failed login rejects only when the token it was
   * to replace has expired too. Rejects with a {@link VaultLoginError}.
   */
  async ready(): Promise<void> {
    if (this.state === "stopped") {
      throw new VaultLoginError("the agent is stopping", localFailure("the agent is stopping"));
    }
    if (this.loggingIn) {
      this.logger.debug("waiting for a Vault login under way");
      await this.loggingIn.catch((error: unknown) => {
        if (this.clock.now() >= this.lifetime.expiresAt) throw error;
      });
    } else if (this.clock.now() >= this.lifetime.expiresAt) {
      await this.login();
    }
  }

  /**
   * Sends a request with a token that has not expired. Vault answering 403 may mean the token
   * was revoked (by an operator, or lost in a disaster-recovery failover) rather than that the
   * policy denies the path: the agent logs in again and sends it once more, at most once every
   * {@link FORCED_LOGIN_MS}; a 403 that persists with a fresh token is Vault's answer.
   */
  async request<T>(send: (client: VaultClient) => Promise<T>): Promise<T> {
    await this.ready();
    const refused = this.lifetime;
    try {
      return await send(this.client);
    } catch (error) {
      const failure = describeVaultError(error);
      if (failure.status !== 403) throw error;
      // Another request's login may have replaced the token meanwhile.
      await this.ready();
      if (this.lifetime === refused) {
        const now = this.clock.now();
        if (now < this.forcedLoginAt + FORCED_LOGIN_MS) throw error;
        this.forcedLoginAt = now;
        this.logger.warn({ vaultError: failure.text }, "Vault refused the agent's token; logging in again");
        await this.login();
        // If it was revoked, so were its leases.
        refused.expiresAt = Math.min(refused.expiresAt, now);
      }
      return send(this.client);
    }
  }

  /** Logs in again now (one login at a time; callers share it). Rejects with a {@link VaultLoginError}. */
  login(): Promise<void> {
    this.loggingIn ??= this.performLogin().finally(() => {
      this.loggingIn = null;
    });
    return this.loggingIn;
  }

  /** Stops renewing; the token is left to expire (it may belong to someone else, e.g. a token file). */
  stop(): void {
    this.state = "stopped";
    this.cancelTimer?.();
    this.cancelTimer = null;
  }

  private async performLogin(): Promise<void> {
    // A login request carries no token: the old one may be the reason for logging in again.
    // It is kept for when the login fails, though: until it expires it still serves.
    const previous = this.client.token;
    this.client.token = "";
    let terms: TokenTerms;
    try {
      terms = await this.method.login(this.client);
    } catch (error) {
      this.client.token = previous;
      if (error instanceof VaultLoginError) throw error;
      throw this.refusal(error);
    }
    if (this.stopped) return;
    this.grantedTtlSeconds = terms.ttlSeconds;
    this.lifetime = { expiresAt: Number.POSITIVE_INFINITY };
    this.adopt(terms);
    this.logger.info(
      { method: this.method.name, ttlSeconds: terms.ttlSeconds, renewable: terms.renewable },
      this.logins++ === 0 ? "logged in to Vault" : "logged in to Vault again",
    );
  }

  /** The message for a failed login, naming the setting to fix. */
  private refusal(error: unknown): VaultLoginError {
    if (error instanceof z.ZodError) {
      const failure = localFailure("Vault's login answer has no auth.client_token");
      return new VaultLoginError(
        `vault.address: ${this.address} did not answer the ${this.method.name} login as Vault does; check the address`,
        failure,
      );
    }
    const failure = describeVaultError(error);
    const key = `vault.auth.${this.method.name}`;
    if (failure.status === undefined) {
      const tls = this.address.startsWith("https:") ? ", vault.caCert" : "";
      return new VaultLoginError(
        `vault.address: cannot reach Vault at ${this.address} (${failure.text}); check the address${tls} and that Vault is running`,
        failure,
      );
    }
    if (failure.unreachable) {
      return new VaultLoginError(
        `${key}: Vault at ${this.address} could not serve the login (${failure.text}); check that Vault is unsealed and healthy`,
        failure,
      );
    }
    return new VaultLoginError(
      `${key}: Vault refused the login (${failure.text}); ${this.method.hint}`,
      failure,
    );
  }

  /** Takes on a token's TTL and schedules what keeps it alive. */
  private adopt(terms: TokenTerms): void {
    const now = this.clock.now();
    if (terms.ttlSeconds <= 0) {
      this.lifetime.expiresAt = Number.POSITIVE_INFINITY;
      this.state = "lasting";
      this.schedule(null);
      return;
    }
    this.lifetime.expiresAt = now + terms.ttlSeconds * 1000;
    this.state = terms.renewable && terms.ttlSeconds >= this.grantedTtlSeconds ? "renewing" : "expiring";
    this.schedule((terms.ttlSeconds * 1000 * 2) / 3);
  }

  private schedule(ms: number | null): void {
    this.cancelTimer?.();
    this.cancelTimer = ms === null ? null : this.clock.after(ms, () => void this.keepAlive());
  }

  private async keepAlive(): Promise<void> {
    this.cancelTimer = null;
    if (this.state === "renewing") {
      try {
        const terms = termsOf(await this.client.tokenRenewSelf());
        if (this.stopped) return;
        this.adopt(terms);
        this.grantedTtlSeconds = Math.max(this.grantedTtlSeconds, terms.ttlSeconds);
        this.logger.info({ ttlSeconds: terms.ttlSeconds, state: this.state }, "renewed the Vault token");
        return;
      } catch (error) {
        const why = error instanceof z.ZodError ? "no auth in the answer" : describeVaultError(error).text;
        this.logger.warn({ vaultError: why }, "could not renew the Vault token; logging in again");
      }
    }
    if (this.stopped) return;
    try {
      await this.login();
    } catch (error) {
      if (this.stopped) return;
      const failure = error instanceof VaultLoginError ? error.failure : describeVaultError(error);
      this.logger.error(
        { vaultError: failure.text, reason: (error as Error).message },
        `could not log in to Vault; trying again in ${LOGIN_RETRY_MS / 1000} s`,
      );
      this.schedule(LOGIN_RETRY_MS);
    }
  }
}
