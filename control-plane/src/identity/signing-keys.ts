/**
 * The control plane's signing keys (Ed25519). They sign session tokens, which
 * agents verify locally with the public halves pushed over the link, and the
 * seals that prove a closed session's record complete.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8037 (EdDSA in JOSE)
 */
import { randomUUID } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { GatehouseError, isGatehouseError } from "@gatehouse/proto/errors";
import { SESSION_TOKEN } from "@gatehouse/proto/session-token";
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import type { Store } from "../store/types.js";

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

/** The private signing key, as kept in the key file: an Ed25519 JWK with its kid. */
interface PrivateJwk extends JWK {
  kid: string;
  d: string;
}

async function readKeyFile(path: string): Promise<PrivateJwk | null> {
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
  let jwk: Partial<PrivateJwk>;
  try {
    jwk = JSON.parse(text) as Partial<PrivateJwk>;
  } catch (error) {
    throw new GatehouseError("GATE_CONFIG_INVALID", `the signing key file ${path} is not JSON`, {
      cause: error,
    });
  }
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || !jwk.d || !jwk.x || !jwk.kid) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `the signing key file ${path} is not a private Ed25519 JWK with a kid; remove it to have a new key made, or restore the right file`,
    );
  }
  return jwk as PrivateJwk;
}

/**
 * Makes a key and writes it to `path` (0600), unless another process got there
 * first, in which case that key is used: replicas sharing the file share the key.
 */
async function createKeyFile(path: string): Promise<PrivateJwk> {
  const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: randomUUID(), alg: "EdDSA" } as PrivateJwk;
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    await writeFile(path, `${JSON.stringify(jwk)}\n`, { mode: 0o600, flag: "wx" });
    return jwk;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const existing = await readKeyFile(path);
    if (!existing) throw error;
    return existing;
  }
}

export class SigningKeys {
  private constructor(
    private readonly signing: ActiveKey,
    private readonly all: readonly JWK[],
  ) {}

  /**
   * Loads the private key from `keyFile` (creating the file with a new key on
   * first start) and makes sure its public half is in the store, beside those of
   * earlier keys, so that agents and auditors can verify what any key signed.
   */
  static async load(
    store: Pick<Store, "listSigningKeys" | "insertSigningKey">,
    keyFile: string,
    now: number,
  ): Promise<SigningKeys> {
    const privateJwk = (await readKeyFile(keyFile)) ?? (await createKeyFile(keyFile));
    const { d: _d, ...publicJwk } = privateJwk;
    let records = await store.listSigningKeys();
    if (!records.some((r) => r.kid === privateJwk.kid)) {
      try {
        await store.insertSigningKey({
          kid: privateJwk.kid,
          alg: "EdDSA",
          publicJwk: { ...publicJwk },
          createdAt: now,
        });
      } catch (error) {
        // Another replica with the same key file stored it first.
        if (!isGatehouseError(error) || error.code !== "GATE_INVALID_REQUEST") throw error;
      }
      records = await store.listSigningKeys();
    }
    const publicJwks = records.map((r) => ({ ...r.publicJwk, kid: r.kid, alg: r.alg, use: "sig" }));
    const privateKey = (await importJWK({ ...privateJwk, alg: "EdDSA" })) as CryptoKey;
    return new SigningKeys({ kid: privateJwk.kid, privateKey }, publicJwks);
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
