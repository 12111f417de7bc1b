/**
 * The control plane's signing keys (Ed25519). They sign session tokens, which
 * agents verify locally with the public halves pushed over the link, and the
 * seals that prove a closed session's record complete.
 *
 * Keys rotate: a new key is published (in the key file, at the JWKS endpoint
 * and to agents) {@link PUBLISH_LEAD_MS} before it signs anything, so every
 * replica and agent knows it by then; the key it replaces keeps only its public
 * half, so the tokens and seals it signed still verify.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8037 (EdDSA in JOSE)
 */
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { mkdir, open, readFile, rename, stat, unlink, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { GatehouseError } from "@gatehouse/proto/errors";
import { SESSION_TOKEN } from "@gatehouse/proto/session-token";
import {
  CompactSign,
  type CryptoKey,
  createLocalJWKSet,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  jwtVerify,
  SignJWT,
} from "jose";
import type { Logger } from "pino";

/** How long a new key is published before it signs: several reloads of every replica. */
export const PUBLISH_LEAD_MS = 3 * 60_000;
/** How often the key file is read again (another replica may have rotated it). */
const RELOAD_MS = 60_000;
/** A rotation lock older than this was left by a replica that died mid-rotation. */
const STALE_LOCK_MS = 30_000;

/** Claims of a session token besides iss/aud/iat. */
export interface SessionTokenClaims {
  /** Session id. */
  sid: string;
  /** The one connection the token opens. */
  cnx: string;
  /** Subject id of whoever opened the session. */
  sub: string;
  /** Expiry, milliseconds since the epoch. */
  expiresAt: number;
}

interface ActiveKey {
  kid: string;
  privateKey: CryptoKey;
}

/**
 * A key of the key file: Ed25519, with its kid; `d` only on keys that sign or
 * are about to; `iat` (seconds) when it was made — for a key added by hand
 * without one, the time the file was last written.
 */
interface FileJwk extends JWK {
  kid: string;
  iat?: number;
}

const isEd25519 = (k: Partial<FileJwk>): k is FileJwk =>
  k.kty === "OKP" && k.crv === "Ed25519" && typeof k.x === "string" && typeof k.kid === "string";

const isPrivate = (k: FileJwk) => typeof k.d === "string";
const madeAt = (k: FileJwk) => (k.iat ?? 0) * 1000;

/** Keys written from one process at a time, and only where the file's directory is writable. */
const READ_ONLY = new Set(["EROFS", "EACCES", "EPERM"]);

/**
 * The key file: a JWK set whose every key is trusted to verify (retired keys keep
 * their public halves there, so what they signed still verifies) and whose first
 * private key published {@link PUBLISH_LEAD_MS} ago signs. A file holding one
 * private JWK is read as a set of one.
 */
async function readKeyFile(path: string): Promise<FileJwk[] | null> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `cannot read the signing key file ${path} (${(error as NodeJS.ErrnoException).code}); check signing.keyFile and its permissions`,
      { cause: error },
    );
  }
  let parsed: { keys?: unknown } & Partial<FileJwk>;
  try {
    parsed = JSON.parse(text) as typeof parsed;
  } catch (error) {
    throw new GatehouseError("GATE_CONFIG_INVALID", `the signing key file ${path} is not JSON`, {
      cause: error,
    });
  }
  const keys = (Array.isArray(parsed.keys) ? parsed.keys : [parsed]) as Array<Partial<FileJwk>>;
  if (keys.length === 0 || !keys.every(isEd25519) || !keys.some(isPrivate)) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `the signing key file ${path} must hold Ed25519 JWKs with kids, one of them private; remove it to have a new key made, or restore the right file`,
    );
  }
  const written = Math.floor((await stat(path)).mtimeMs / 1000);
  return keys.map((k) => (typeof k.iat === "number" ? k : { ...k, iat: written }));
}

async function newKey(now: number): Promise<FileJwk> {
  const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  return { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "EdDSA", iat: Math.floor(now / 1000) };
}

/** Replaces the key file in one step (write aside, then rename), so no reader sees half a file. */
async function writeKeyFile(path: string, keys: readonly FileJwk[]): Promise<void> {
  const aside = `${path}.${randomUUID()}.tmp`;
  const file = await open(aside, "wx", 0o600);
  try {
    await file.writeFile(`${JSON.stringify({ keys })}\n`);
    // On disk before it replaces the file: a power loss must not leave an empty key file.
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(aside, path);
}

/**
 * Makes a key and writes it to `path` (0600), unless another process got there
 * first, in which case that file is used: replicas sharing the file share the key.
 * The first key signs at once (there is nothing to publish it ahead of).
 */
async function createKeyFile(path: string, now: number): Promise<FileJwk[]> {
  const key = { ...(await newKey(now)), iat: Math.floor((now - PUBLISH_LEAD_MS) / 1000) };
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    await writeFile(path, `${JSON.stringify({ keys: [key] })}\n`, { mode: 0o600, flag: "wx" });
    return [key];
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const existing = await readKeyFile(path);
    if (!existing) throw error;
    return existing;
  }
}

/**
 * Anyone who can read the private key can sign tokens and seals as this control plane.
 * Starting anyway keeps a running deployment up; the warning says what to fix.
 */
async function warnIfShared(path: string, logger: Pick<Logger, "warn">): Promise<void> {
  const mode = (await stat(path)).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  logger.warn(
    { keyFile: path, mode: `0${mode.toString(8)}` },
    "the signing key file is open to group or others: whoever can read it can forge session tokens and seals; chmod 600 it",
  );
}

/**
 * The key that signs at `now`: the first private key (in file order) published
 * long enough ago; if none is, the last private key — so a file holding a single
 * new private key (a rotation by hand after a compromise) signs with it at once.
 */
function signerOf(keys: readonly FileJwk[], now: number): FileJwk {
  const candidates = keys.filter(isPrivate);
  return (candidates.find((k) => madeAt(k) <= now - PUBLISH_LEAD_MS) ?? candidates.at(-1)) as FileJwk;
}

export interface KeyRotation {
  /** Make a new key once the newest is this old; null: never (rotate by editing the file). */
  everyMs: number | null;
  now: () => number;
  /** Told of each rotation this process makes, before the new key is written (the audit log). */
  announce?: (kid: string) => Promise<void>;
}

/** `changed`: the set of public keys changed (agents need the new set). */
export class SigningKeys extends EventEmitter<{ changed: [] }> {
  private signing!: ActiveKey;
  private all: readonly JWK[] = [];
  private verifier!: ReturnType<typeof createLocalJWKSet>;
  private fileText = "";
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private rotateEveryMs: number | null;

  private constructor(
    private readonly keyFile: string,
    private readonly logger: Pick<Logger, "warn" | "info" | "error">,
    private readonly rotation: KeyRotation,
  ) {
    super();
    this.rotateEveryMs = rotation.everyMs;
  }

  /**
   * Loads the keys from `keyFile`, creating it with a new key on first start.
   * Only this file is trusted: the store, which whoever can write records can
   * also write, holds no keys, so it cannot slip in one of its own. A key file
   * that group or others may read is used, with a warning on `logger`.
   */
  static async load(
    keyFile: string,
    logger: Pick<Logger, "warn" | "info" | "error">,
    rotation: KeyRotation = { everyMs: null, now: Date.now },
  ): Promise<SigningKeys> {
    const keys = new SigningKeys(keyFile, logger, rotation);
    const file = (await readKeyFile(keyFile)) ?? (await createKeyFile(keyFile, rotation.now()));
    await warnIfShared(keyFile, logger);
    await keys.use(file);
    return keys;
  }

  /** Reads the file again every minute and rotates when due, until {@link stop}. */
  start(): void {
    this.timer = setInterval(() => {
      this.ticking = this.ticking.then(() => this.tick());
    }, RELOAD_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.ticking;
  }

  /**
   * One round of upkeep: picks up a file another replica rotated, rotates when
   * the newest key is due, moves signing to a key once it has been published
   * long enough. Failures are logged; signing goes on with the keys in hand.
   */
  async tick(): Promise<void> {
    try {
      const keys = await readKeyFile(this.keyFile);
      if (keys === null) {
        this.logger.error(
          { keyFile: this.keyFile },
          "the signing key file is gone; signing goes on with the keys loaded, none is rotated: restore the file",
        );
        return;
      }
      if (this.rotationDue(keys)) await this.rotate({ onlyIfDue: true });
      else await this.use(keys);
    } catch (error) {
      this.logger.warn(
        { err: error, keyFile: this.keyFile },
        "signing key upkeep failed; signing goes on with the keys already loaded",
      );
    }
  }

  /**
   * Publishes a new key now; it signs from {@link PUBLISH_LEAD_MS} on, first in
   * the file. Private halves of keys that no longer sign are dropped. One replica
   * at a time rotates (a lock file beside the key file; with `onlyIfDue`, it checks
   * again under the lock that no other replica has just rotated); the others pick
   * up the result. Resolves with the new key's kid, or null when it made none.
   */
  async rotate(options: { onlyIfDue?: boolean } = {}): Promise<string | null> {
    const lock = `${this.keyFile}.lock`;
    const locked = await takeLock(lock).catch((error: NodeJS.ErrnoException) => {
      if (!READ_ONLY.has(error.code ?? "")) throw error;
      // A key file mounted from a read-only secret: rotate by replacing the secret.
      this.rotateEveryMs = null;
      this.logger.warn(
        { keyFile: this.keyFile, code: error.code },
        "automatic signing key rotation is off: the key file's directory is not writable; rotate by replacing the file (put the new private key first)",
      );
      return null;
    });
    if (!locked) return null;
    try {
      const now = this.rotation.now();
      const keys = await readKeyFile(this.keyFile);
      if (keys === null || (options.onlyIfDue && !this.rotationDue(keys))) return null;
      const signer = signerOf(keys, now);
      const added = await newKey(now);
      const kept = keys.map((k) => (k === signer || !isPrivate(k) ? k : withoutPrivateHalf(k)));
      await this.rotation.announce?.(added.kid);
      await writeKeyFile(this.keyFile, [added, ...kept]);
      this.logger.info(
        { kid: added.kid, signsFrom: new Date(now + PUBLISH_LEAD_MS).toISOString() },
        "signing key rotated",
      );
      await this.use([added, ...kept]);
      return added.kid;
    } finally {
      await unlink(lock).catch(() => {});
    }
  }

  private rotationDue(keys: readonly FileJwk[]): boolean {
    const every = this.rotateEveryMs;
    return every !== null && Math.max(...keys.map(madeAt)) <= this.rotation.now() - every;
  }

  /** Public keys as JWKs (with kid, alg and use), for agents and the JWKS endpoint. */
  get publicJwks(): readonly JWK[] {
    return this.all;
  }

  /** The kid of the key that signs now. */
  get signingKid(): string {
    return this.signing.kid;
  }

  issueSessionToken(claims: SessionTokenClaims, issuedAt: number): Promise<string> {
    return new SignJWT({ sid: claims.sid, cnx: claims.cnx })
      .setProtectedHeader({ alg: SESSION_TOKEN.algorithm, kid: this.signing.kid, typ: SESSION_TOKEN.type })
      .setIssuer(SESSION_TOKEN.issuer)
      .setAudience(SESSION_TOKEN.audience)
      .setSubject(claims.sub)
      .setJti(claims.sid)
      .setIssuedAt(Math.floor(issuedAt / 1000))
      .setExpirationTime(Math.floor(claims.expiresAt / 1000))
      .sign(this.signing.privateKey);
  }

  /**
   * The session and subject of a session token this control plane signed. A
   * token expired less than a day ago is accepted: a session's own token may
   * still close it after it expired (a long job), not for ever.
   *
   * @throws GatehouseError GATE_TOKEN_INVALID when it is not such a token.
   */
  async readSessionToken(token: string): Promise<{ sessionId: string; subject: string }> {
    try {
      const { payload } = await jwtVerify(token, this.verifier, {
        issuer: SESSION_TOKEN.issuer,
        audience: SESSION_TOKEN.audience,
        typ: SESSION_TOKEN.type,
        algorithms: [SESSION_TOKEN.algorithm],
        requiredClaims: ["sub", "sid"],
        // An expired session may still be closed by its own token, for a day.
        clockTolerance: 86_400,
        currentDate: new Date(this.rotation.now()),
      });
      if (typeof payload.sid === "string" && typeof payload.sub === "string") {
        return { sessionId: payload.sid, subject: payload.sub };
      }
    } catch {
      // Refused below, without saying which check failed on a token that is not ours.
    }
    throw new GatehouseError(
      "GATE_TOKEN_INVALID",
      "not a session token of this Gatehouse; send an admin API key or the session's own token",
    );
  }

  /** A compact JWS over `payload`, e.g. a session seal. */
  sign(payload: object, typ: string): Promise<string> {
    return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: "EdDSA", kid: this.signing.kid, typ })
      .sign(this.signing.privateKey);
  }

  /** Takes `keys` as the current set; tells listeners when the public keys changed. */
  private async use(keys: readonly FileJwk[]): Promise<void> {
    const signer = signerOf(keys, this.rotation.now());
    if (this.signing?.kid !== signer.kid) {
      const { iat: _iat, ...jwk } = signer;
      this.signing = {
        kid: signer.kid,
        privateKey: (await importJWK({ ...jwk, alg: "EdDSA" })) as CryptoKey,
      };
    }
    const published = keys.map(({ d: _d, iat: _iat, ...key }) => ({ ...key, alg: "EdDSA", use: "sig" }));
    const text = JSON.stringify(published);
    if (text === this.fileText) return;
    const first = this.fileText === "";
    this.fileText = text;
    this.all = published;
    this.verifier = createLocalJWKSet({ keys: published });
    if (!first) this.emit("changed");
  }
}

function withoutPrivateHalf({ d: _d, ...key }: FileJwk): FileJwk {
  return key;
}

/** Creates `path` unless it exists; a lock left by a dead process is taken over. */
async function takeLock(path: string): Promise<boolean> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await writeFile(path, String(process.pid), { flag: "wx", mode: 0o600 });
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
      const age = Date.now() - (await stat(path).catch(() => ({ mtimeMs: Date.now() }))).mtimeMs;
      if (age < STALE_LOCK_MS) return false;
      await unlink(path).catch(() => {});
    }
  }
  return false;
}
