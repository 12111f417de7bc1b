/**
 * The control plane's signing keys (Ed25519). They sign session tokens, which
 * agents verify locally with the public halves pushed over the link, and the
 * seals that prove a closed session's record complete.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8037 (EdDSA in JOSE)
 */
import { randomUUID } from "node:crypto";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { GatehouseError } from "@gatehouse/proto/errors";
import { SESSION_TOKEN } from "@gatehouse/proto/session-token";
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import type { Logger } from "pino";

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

/** A key of the key file: Ed25519, with its kid; `d` only on the key that signs. */
interface FileJwk extends JWK {
  kid: string;
}

const isEd25519 = (k: Partial<FileJwk>): k is FileJwk =>
  k.kty === "OKP" && k.crv === "Ed25519" && typeof k.x === "string" && typeof k.kid === "string";

/**
 * The key file: a JWK set whose first private key signs, and whose every key is
 * trusted to verify (keep retired keys' public halves there, so what they signed
 * still verifies). A file holding one private JWK is read as a set of one.
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
  if (keys.length === 0 || !keys.every(isEd25519) || !keys.some((k) => typeof k.d === "string")) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `the signing key file ${path} must hold Ed25519 JWKs with kids, one of them private; remove it to have a new key made, or restore the right file`,
    );
  }
  return keys;
}

/**
 * Makes a key and writes it to `path` (0600), unless another process got there
 * first, in which case that file is used: replicas sharing the file share the key.
 */
async function createKeyFile(path: string): Promise<FileJwk[]> {
  const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const key = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "EdDSA" } as FileJwk;
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

export class SigningKeys {
  private constructor(
    private readonly signing: ActiveKey,
    private readonly all: readonly JWK[],
  ) {}

  /**
   * Loads the keys from `keyFile`, creating it with a new key on first start.
   * Only this file is trusted: the store, which whoever can write records can
   * also write, holds no keys, so it cannot slip in one of its own. A key file
   * that group or others may read is used, with a warning on `logger`.
   */
  static async load(keyFile: string, logger: Pick<Logger, "warn">): Promise<SigningKeys> {
    const keys = (await readKeyFile(keyFile)) ?? (await createKeyFile(keyFile));
    await warnIfShared(keyFile, logger);
    const signing = keys.find((k) => typeof k.d === "string") as FileJwk;
    const publicJwks = keys.map(({ d: _d, ...key }) => ({ ...key, alg: "EdDSA", use: "sig" }));
    const privateKey = (await importJWK({ ...signing, alg: "EdDSA" })) as CryptoKey;
    return new SigningKeys({ kid: signing.kid, privateKey }, publicJwks);
  }

  /** Public keys as JWKs (with kid, alg and use), for agents and the JWKS endpoint. */
  get publicJwks(): readonly JWK[] {
    return this.all;
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

  /** A compact JWS over `payload`, e.g. a session seal. */
  sign(payload: object, typ: string): Promise<string> {
    return new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
      .setProtectedHeader({ alg: "EdDSA", kid: this.signing.kid, typ })
      .sign(this.signing.privateKey);
  }
}
