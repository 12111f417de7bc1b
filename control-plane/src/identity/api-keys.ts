/**
 * API keys: bearer credentials for the REST API, each with one role. Keys for
 * automation are made by admins (`POST /v1/api-keys`); a person's OIDC sign-in
 * is given one too, of the role their groups map to. A key is random, shown
 * once, kept only as its hash, expires, and can be revoked; its last use is kept.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import { v7 as uuidv7 } from "uuid";
import type { AuditLog } from "../audit/log.js";
import type { ApiKeyRecord, Page, Role, Store } from "../store/types.js";
import { generateToken, hashToken, sameSecret } from "./tokens.js";

export type { Role } from "../store/types.js";

/** Prefix of API keys: "Gatehouse API Key", so secret scanners can find leaked ones. */
export const API_KEY_PREFIX = "gak_";

/** An API key's lifetime when its maker names none, and the longest allowed. */
export const API_KEY_TTL = { defaultSeconds: 90 * 86_400, maxSeconds: 366 * 86_400 } as const;

/** Who is calling the REST API with a key, and what they may do. */
export interface Principal {
  /** The key's id; `bootstrap-admin` for `GATEHOUSE_ADMIN_TOKEN`. */
  id: string;
  /** The key's name, or who signed in. */
  name: string;
  role: Role;
}

/** The key `GATEHOUSE_ADMIN_TOKEN` is accepted as. */
const BOOTSTRAP: Principal = { id: "bootstrap-admin", name: "GATEHOUSE_ADMIN_TOKEN", role: "admin" };

/** A key's last use is written at most this often: every request reads it, few need to write. */
const TOUCH_INTERVAL_MS = 60_000;

export interface NewApiKey {
  name: string;
  role: Role;
  ttlSeconds?: number | undefined;
}

export class ApiKeys {
  constructor(
    private readonly deps: {
      store: Pick<
        Store,
        "insertApiKey" | "findApiKeyByHash" | "getApiKey" | "listApiKeys" | "revokeApiKey" | "touchApiKey"
      >;
      audit: AuditLog;
      /** `GATEHOUSE_ADMIN_TOKEN`: accepted as an admin key, never stored. */
      bootstrapAdminToken?: string | undefined;
      logger: Pick<Logger, "warn">;
      now: () => number;
    },
  ) {}

  /** Makes an API key; `key` is shown to its maker once and never again. */
  create(actor: string, request: NewApiKey): Promise<{ record: ApiKeyRecord; key: string }> {
    const ttlSeconds = request.ttlSeconds ?? API_KEY_TTL.defaultSeconds;
    return this.make(actor, "api-key.create", { ...request, kind: "api-key", ttlSeconds });
  }

  /** The key a person's OIDC sign-in is given; `subject` is `<issuer>#<sub>`. */
  async issueLogin(
    identity: { subject: string; name: string; role: Role },
    ttlSeconds: number,
  ): Promise<{ id: string; key: string; expiresAt: number }> {
    const { record, key } = await this.make(identity.subject, "auth.login", {
      name: identity.name,
      role: identity.role,
      kind: "login",
      ttlSeconds,
    });
    return { id: record.id, key, expiresAt: record.createdAt + ttlSeconds * 1000 };
  }

  list(limit: number, cursor?: string): Promise<Page<ApiKeyRecord>> {
    return this.deps.store.listApiKeys(cursor === undefined ? { limit } : { limit, cursor });
  }

  /** Revokes a key: it is refused from the next request on. Revoking it again changes nothing. */
  async revoke(actor: string, id: string): Promise<ApiKeyRecord> {
    const { store, audit, now } = this.deps;
    const key = await store.getApiKey(id);
    if (!key) throw notFound();
    if (key.revokedAt !== null) return key;
    await audit.record(actor, "api-key.revoke", id, { name: key.name, role: key.role, kind: key.kind });
    return (await store.revokeApiKey(id, now())) ?? key;
  }

  /**
   * The caller a bearer key belongs to.
   *
   * @throws GatehouseError GATE_TOKEN_INVALID for an unknown key, GATE_TOKEN_EXPIRED
   *   or GATE_TOKEN_REVOKED for one that no longer works.
   */
  async authenticate(bearer: string): Promise<Principal> {
    const { store, bootstrapAdminToken, now } = this.deps;
    if (bootstrapAdminToken && sameSecret(bearer, bootstrapAdminToken)) return BOOTSTRAP;
    const key = await store.findApiKeyByHash(hashToken(bearer));
    if (!key)
      throw new GatehouseError("GATE_TOKEN_INVALID", "API key not recognised; check it was copied whole");
    const at = now();
    if (key.revokedAt !== null) {
      throw new GatehouseError(
        "GATE_TOKEN_REVOKED",
        `API key '${key.name}' was revoked at ${new Date(key.revokedAt).toISOString()}; ask an admin for a new one`,
      );
    }
    if (key.expiresAt !== null && key.expiresAt <= at) {
      throw new GatehouseError(
        "GATE_TOKEN_EXPIRED",
        `API key '${key.name}' expired at ${new Date(key.expiresAt).toISOString()}; ${key.kind === "login" ? "sign in again at /v1/auth/login" : "ask an admin for a new one"}`,
      );
    }
    if (key.lastUsedAt === null || at - key.lastUsedAt >= TOUCH_INTERVAL_MS) {
      // Bookkeeping: a failed write is logged and the request goes on.
      await store.touchApiKey(key.id, at).catch((error: unknown) => {
        this.deps.logger.warn({ err: error, apiKey: key.id }, "could not record an API key's last use");
      });
    }
    return { id: key.id, name: key.name, role: key.role };
  }

  private async make(
    actor: string,
    action: "api-key.create" | "auth.login",
    request: { name: string; role: Role; kind: ApiKeyRecord["kind"]; ttlSeconds: number },
  ): Promise<{ record: ApiKeyRecord; key: string }> {
    const { store, audit, now } = this.deps;
    const createdAt = now();
    const key = generateToken(API_KEY_PREFIX);
    const record: ApiKeyRecord = {
      id: uuidv7({ msecs: createdAt }),
      name: request.name,
      role: request.role,
      kind: request.kind,
      keyHash: hashToken(key),
      createdBy: actor,
      createdAt,
      expiresAt: createdAt + request.ttlSeconds * 1000,
      revokedAt: null,
      lastUsedAt: null,
    };
    await audit.record(actor, action, record.id, {
      name: record.name,
      role: record.role,
      expiresAt: new Date(record.expiresAt ?? 0).toISOString(),
    });
    await store.insertApiKey(record);
    return { record, key };
  }
}

function notFound(): GatehouseError {
  return new GatehouseError("GATE_NOT_FOUND", "no API key has that id; GET /v1/api-keys lists them");
}
