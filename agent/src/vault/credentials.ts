/**
 * Connection credentials read from Vault: KV v1 and v2 secrets, and dynamic
 * secrets with leases.
 *
 * Each secret is held in memory under its path, key and engine:
 * - a KV secret is fresh for `cacheSeconds`; the first request after that reads it again,
 *   so a rotated secret is picked up without a restart;
 * - a dynamic secret is fresh while its lease lives: the lease is renewed at 2/3 of its
 *   duration, and once it cannot be (a renewal failed, or granted less than the lease had,
 *   which means it reached its max TTL) the next request reads a new secret. It is fresh no
 *   longer than the token that read it (Vault revokes a token's leases when the token expires).
 *   Every lease the agent took and that has not run out is revoked when it stops, each by its
 *   own path (`sys/leases/revoke/<lease id>`), so that the policy can allow revoking the
 *   agent's leases and no others.
 *
 * Concurrent requests for a secret that is not fresh share one read. When Vault cannot be
 * reached (see {@link VaultFailure.unreachable}), a held secret goes on serving for up to
 * `staleIfErrorSeconds` past its refresh time, never past its lease; meanwhile Vault is asked
 * again at most every {@link STALE_RETRY_MS}.
 *
 * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#read-secret-version
 * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v1#read-secret
 * @see https://developer.hashicorp.com/vault/api-docs/system/leases
 */
import type { CredentialRef__Output, VaultSecret__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import type { VaultConfig } from "../config.js";
import type { CredentialSource } from "../credentials/source.js";
import { describeVaultError, localFailure, type VaultFailure } from "./failure.js";
import { type TokenLifetime, VaultLoginError, VaultSession } from "./session.js";

/** While a held secret serves past its refresh time, how often Vault is asked again. */
export const STALE_RETRY_MS = 5_000;

/** A dynamic secret is read again this long before the token that read it expires. */
export const TOKEN_MARGIN_MS = 5_000;

const leaseAnswer = z.object({
  lease_id: z.string().min(1),
  lease_duration: z.number().positive(),
  renewable: z.boolean(),
});
const renewAnswer = leaseAnswer.pick({ lease_duration: true, renewable: true });

interface Lease {
  readonly id: string;
  /** The duration it was granted first: a renewal granting less has met the lease's max TTL. */
  readonly grantedSeconds: number;
  expiresAt: number;
  /** The lifetime of the token that read it: the lease ends with the token. */
  readonly token: TokenLifetime;
  cancelRenewal: () => void;
}

/** When a lease ends: at its TTL, or when the token that read it expires. */
function leaseEnd(lease: Lease): number {
  return Math.min(lease.expiresAt, lease.token.expiresAt);
}

/** A secret in memory. */
interface Held {
  readonly value: string;
  /** From then on, a request reads Vault again. */
  freshUntil: number;
  /** From then on, the value is not served even while Vault cannot be reached. */
  usableUntil: number;
  readonly lease: Lease | null;
}

/** `held[field]`, for a dynamic secret no later than shortly before its token expires. */
function heldUntil(held: Held, field: "freshUntil" | "usableUntil"): number {
  return held.lease ? Math.min(held[field], held.lease.token.expiresAt - TOKEN_MARGIN_MS) : held[field];
}

/** A read that failed, described for the connection's error. */
class ReadFailure extends Error {
  constructor(
    readonly failure: VaultFailure,
    readonly what: string,
  ) {
    super(what);
  }
}

/** KV v2 wraps a secret's fields in `data.data` (with `data.metadata` beside them). */
function isKv2(secret: VaultSecret__Output): boolean {
  return !secret.dynamic && secret.kv !== 1;
}

function cacheKey(secret: VaultSecret__Output): string {
  return JSON.stringify([secret.path, secret.key, secret.dynamic ? "dynamic" : isKv2(secret) ? 2 : 1]);
}

function kindOf(secret: VaultSecret__Output): string {
  return secret.dynamic ? "dynamic secret" : `KV v${isKv2(secret) ? 2 : 1} secret`;
}

const withData = z.object({ data: z.record(z.string(), z.unknown()).nullable() });

function dataOf(value: unknown): Record<string, unknown> | null {
  return withData.safeParse(value).data?.data ?? null;
}

const deletedVersion = z.object({
  response: z.object({
    statusCode: z.literal(404),
    body: z.object({
      data: z.object({
        metadata: z.object({ deletion_time: z.string(), destroyed: z.boolean(), version: z.number() }),
      }),
    }),
  }),
});

/**
 * A KV v2 read of a secret whose latest version was deleted or destroyed: Vault answers 404 with
 * that version's metadata and no error text.
 * @see https://developer.hashicorp.com/vault/api-docs/secret/kv/kv-v2#delete-latest-version-of-secret
 */
function deletedLatest(error: unknown, secret: VaultSecret__Output): ReadFailure | null {
  const metadata = deletedVersion.safeParse(error).data?.response.body.data.metadata;
  if (!metadata || !isKv2(secret)) return null;
  const latest = `the latest version (${metadata.version}) of ${secret.path}`;
  const what = metadata.destroyed
    ? `${latest} was destroyed; write a new version`
    : `${latest} was deleted at ${metadata.deletion_time}; undelete it or write a new version`;
  return new ReadFailure({ status: 404, text: "404: deleted", unreachable: false }, what);
}

/** The credential in a read's answer: `data.data[key]` for KV v2, `data[key]` otherwise. */
function credentialIn(answer: unknown, secret: VaultSecret__Output): string {
  const fields = isKv2(secret) ? dataOf(dataOf(answer)) : dataOf(answer);
  if (!fields) {
    const hint = isKv2(secret)
      ? " (a KV v2 path has /data/ after the mount, e.g. secret/data/anthropic; a deleted version has no data)"
      : "";
    throw new ReadFailure(
      localFailure("no data in Vault's answer"),
      `Vault's answer has no secret data${hint}`,
    );
  }
  const value = fields[secret.key];
  if (typeof value !== "string" || value === "") {
    const known = Object.keys(fields).join(", ") || "none";
    throw new ReadFailure(
      localFailure(`no field '${secret.key}'`),
      `the secret has no non-empty string field '${secret.key}' (its fields: ${known}); check credential.vault.key`,
    );
  }
  return value;
}

export interface VaultCredentialSourceOptions {
  logger: Logger;
  clock?: Clock;
}

/** Credentials named `{vault: {path, key, kv, dynamic}}`, read with the agent's own Vault login. */
export class VaultCredentialSource implements CredentialSource {
  private readonly held = new Map<string, Held>();
  private readonly reading = new Map<string, Promise<Held>>();
  /** Reads of a dynamic secret that failed after taking a lease: not tried again before `until`. */
  private readonly failed = new Map<string, { error: ReadFailure; until: number }>();
  /** Every lease taken and not yet revoked; superseded ones stay until they run out. */
  private readonly leases = new Map<string, Lease>();
  private stopping = false;
  private readonly clock: Clock;
  private readonly logger: Logger;

  constructor(
    private readonly session: VaultSession,
    private readonly settings: Pick<VaultConfig, "cacheSeconds" | "staleIfErrorSeconds">,
    options: VaultCredentialSourceOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger;
  }

  /**
   * Logs in to Vault (see {@link VaultSession.start}, which names what to fix when it
   * cannot) and returns the source of the credentials it holds.
   */
  static async start(
    config: VaultConfig,
    options: VaultCredentialSourceOptions,
  ): Promise<VaultCredentialSource> {
    const session = await VaultSession.start(config, options);
    return new VaultCredentialSource(session, config, options);
  }

  async get(connection: string, ref: CredentialRef__Output): Promise<string> {
    const secret = ref.vault;
    if (!secret) {
      throw new GatehouseError(
        "GATE_CREDENTIAL_UNAVAILABLE",
        `the credential for connection '${connection}' is unavailable: it names no Vault secret`,
      );
    }
    const key = cacheKey(secret);
    const held = this.held.get(key);
    if (held && this.clock.now() < heldUntil(held, "freshUntil")) return held.value;
    try {
      return (await this.read(key, secret)).value;
    } catch (error) {
      return this.fallBack(connection, secret, key, error);
    }
  }

  /**
   * Stops renewing, then revokes every lease that has not run out (best effort:
   * each failure is logged), and stops the session.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    const now = this.clock.now();
    const live = [...this.leases.values()].filter((lease) => leaseEnd(lease) > now);
    for (const lease of this.leases.values()) lease.cancelRenewal();
    this.leases.clear();
    this.held.clear();
    await Promise.all(live.map((lease) => this.revoke(lease.id)));
    this.session.stop();
  }

  /** Best effort: a lease that cannot be revoked ends at its TTL. Returns whether it was revoked. */
  private async revoke(leaseId: string): Promise<boolean> {
    const path = `sys/leases/revoke/${leaseId.split("/").map(encodeURIComponent).join("/")}`;
    try {
      await this.session.request((client) => client.write(path, {}));
      this.logger.info({ lease: leaseId }, "revoked a Vault lease");
      return true;
    } catch (error) {
      const failure = error instanceof VaultLoginError ? error.failure : describeVaultError(error);
      this.logger.warn(
        { lease: leaseId, vaultError: failure.text },
        "could not revoke a Vault lease; it ends at its TTL",
      );
      return false;
    }
  }

  /** The held secret when Vault cannot be reached and it may still serve; otherwise the error. */
  private fallBack(connection: string, secret: VaultSecret__Output, key: string, error: unknown): string {
    const failure =
      error instanceof ReadFailure || error instanceof VaultLoginError
        ? error.failure
        : describeVaultError(error);
    const now = this.clock.now();
    const held = this.held.get(key);
    const fields = { connection, path: secret.path, status: failure.status, vaultError: failure.text };
    const usableUntil = held ? heldUntil(held, "usableUntil") : 0;
    if (failure.unreachable && held && now < usableUntil) {
      held.freshUntil = Math.min(now + STALE_RETRY_MS, usableUntil);
      this.logger.warn(
        { ...fields, servingUntil: new Date(usableUntil).toISOString() },
        "Vault cannot be reached; serving the credential read earlier",
      );
      return held.value;
    }
    this.logger.warn(fields, "could not read a credential from Vault");
    let what: string;
    if (error instanceof VaultLoginError) {
      what = `the agent is not logged in to Vault: ${error.message}`;
    } else if (error instanceof ReadFailure) {
      what = `reading ${kindOf(secret)} ${secret.path} from Vault: ${error.what}`;
    } else {
      const advice =
        failure.status === 403
          ? `; check that the agent's Vault policy allows reading ${secret.path}`
          : failure.status === 404 && isKv2(secret) && !secret.path.includes("/data/")
            ? "; a KV v2 path has /data/ after the mount, e.g. secret/data/anthropic"
            : "";
      what = `reading ${kindOf(secret)} ${secret.path} from Vault failed (${failure.text})${advice}`;
    }
    throw new GatehouseError(
      "GATE_CREDENTIAL_UNAVAILABLE",
      `the credential for connection '${connection}' is unavailable: ${what}`,
    );
  }

  /** One read per secret at a time; callers that come meanwhile share it. */
  private read(key: string, secret: VaultSecret__Output): Promise<Held> {
    let pending = this.reading.get(key);
    if (pending) {
      this.logger.debug({ path: secret.path }, "sharing a Vault read under way");
    } else {
      pending = this.fetch(key, secret).finally(() => this.reading.delete(key));
      this.reading.set(key, pending);
    }
    return pending;
  }

  private async fetch(key: string, secret: VaultSecret__Output): Promise<Held> {
    const failed = this.failed.get(key);
    if (failed && this.clock.now() < failed.until) throw failed.error;
    let token = this.session.tokenLifetime;
    const answer: unknown = await this.session
      .request((client) => {
        token = this.session.tokenLifetime;
        return client.read(secret.path);
      })
      .catch((error: unknown) => {
        throw deletedLatest(error, secret) ?? error;
      });
    const now = this.clock.now();
    const previous = this.held.get(key);
    let held: Held;
    if (secret.dynamic) {
      const parsed = leaseAnswer.safeParse(answer);
      if (!parsed.success) {
        throw new ReadFailure(
          localFailure("no lease in Vault's answer"),
          "Vault's answer has no lease; set dynamic: false for a KV secret",
        );
      }
      const lease = this.takeLease(parsed.data, token, now);
      let value: string;
      try {
        if (this.stopping)
          throw new ReadFailure(localFailure("the agent is stopping"), "the agent is stopping");
        value = credentialIn(answer, secret);
      } catch (error) {
        // Nobody will use or renew it: revoked now rather than left to its TTL, and, without the
        // key, not read again at once (each read takes a lease).
        if (await this.revoke(lease.id)) this.leases.delete(lease.id);
        if (error instanceof ReadFailure) this.failed.set(key, { error, until: now + STALE_RETRY_MS });
        throw error;
      }
      if (parsed.data.renewable) this.renewLater(key, lease, parsed.data.lease_duration);
      // A lease that cannot be renewed is replaced before it ends, not when it has.
      const freshUntil = parsed.data.renewable
        ? lease.expiresAt
        : now + (parsed.data.lease_duration * 1000 * 2) / 3;
      held = { value, freshUntil, usableUntil: lease.expiresAt, lease };
    } else {
      const value = credentialIn(answer, secret);
      const freshUntil = now + this.settings.cacheSeconds * 1000;
      held = {
        value,
        freshUntil,
        usableUntil: freshUntil + this.settings.staleIfErrorSeconds * 1000,
        lease: null,
      };
    }
    // A superseded lease is no longer renewed; it is revoked at stop unless it has run out.
    previous?.lease?.cancelRenewal();
    this.held.set(key, held);
    return held;
  }

  private takeLease(answer: z.infer<typeof leaseAnswer>, token: TokenLifetime, now: number): Lease {
    for (const [id, old] of this.leases) if (leaseEnd(old) <= now) this.leases.delete(id);
    const lease: Lease = {
      id: answer.lease_id,
      grantedSeconds: answer.lease_duration,
      expiresAt: now + answer.lease_duration * 1000,
      token,
      cancelRenewal: () => {},
    };
    this.leases.set(lease.id, lease);
    return lease;
  }

  private renewLater(key: string, lease: Lease, durationSeconds: number): void {
    lease.cancelRenewal = this.clock.after(
      (durationSeconds * 1000 * 2) / 3,
      () => void this.renew(key, lease),
    );
  }

  private async renew(key: string, lease: Lease): Promise<void> {
    lease.cancelRenewal = () => {};
    try {
      const answer = renewAnswer.parse(
        await this.session.request((client) => client.renew({ lease_id: lease.id })),
      );
      const now = this.clock.now();
      lease.expiresAt = now + answer.lease_duration * 1000;
      const held = this.held.get(key);
      if (held?.lease !== lease || !this.leases.has(lease.id)) return;
      held.usableUntil = lease.expiresAt;
      if (answer.renewable && answer.lease_duration >= lease.grantedSeconds) {
        held.freshUntil = lease.expiresAt;
        this.renewLater(key, lease, answer.lease_duration);
        this.logger.info({ lease: lease.id, ttlSeconds: answer.lease_duration }, "renewed a Vault lease");
      } else {
        // Its max TTL is near: use it a while longer, and read a new secret before it ends.
        held.freshUntil = now + (answer.lease_duration * 1000 * 2) / 3;
        this.logger.info(
          { lease: lease.id, ttlSeconds: answer.lease_duration },
          "a Vault lease reached its max TTL; a new secret will be read",
        );
      }
    } catch (error) {
      const held = this.held.get(key);
      if (held?.lease === lease) {
        const now = this.clock.now();
        held.freshUntil = Math.min(held.freshUntil, now);
        held.usableUntil = Math.min(lease.expiresAt, now + this.settings.staleIfErrorSeconds * 1000);
      }
      const failure =
        error instanceof VaultLoginError
          ? error.failure
          : error instanceof z.ZodError
            ? localFailure("no lease_duration in Vault's answer")
            : describeVaultError(error);
      this.logger.warn(
        { lease: lease.id, vaultError: failure.text },
        "could not renew a Vault lease; the next request reads a new secret",
      );
    }
  }
}
