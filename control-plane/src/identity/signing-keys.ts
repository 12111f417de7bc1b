/**
 * The control plane's signing keys (Ed25519). They sign session tokens, which
 * agents verify locally with the public halves pushed over the link, and the
 * seals that prove a closed session's record complete.
 *
 * @see https://www.rfc-editor.org/rfc/rfc8037 (EdDSA in JOSE)
 */
import { randomUUID } from "node:crypto";
import { SESSION_TOKEN } from "@gatehouse/proto/session-token";
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from "jose";
import type { SigningKeyRecord, Store } from "../store/types.js";

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
  publicJwk: JWK;
  privateKey: CryptoKey;
}

export class SigningKeys {
  private constructor(
    private readonly signing: ActiveKey,
    private readonly all: readonly JWK[],
  ) {}

  /** Loads the stored keys, creating the first one on a new store. The newest key signs. */
  static async load(
    store: Pick<Store, "listSigningKeys" | "insertSigningKey">,
    now: number,
  ): Promise<SigningKeys> {
    let records = await store.listSigningKeys();
    if (records.length === 0) {
      const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
      const record: SigningKeyRecord = {
        kid: randomUUID(),
        alg: "EdDSA",
        publicJwk: { ...(await exportJWK(publicKey)) },
        privateJwk: { ...(await exportJWK(privateKey)) },
        createdAt: now,
      };
      await store.insertSigningKey(record);
      records = [record];
    }
    const publicJwks = records.map((r) => ({ ...r.publicJwk, kid: r.kid, alg: r.alg, use: "sig" }));
    const newest = records[records.length - 1] as SigningKeyRecord;
    const privateKey = (await importJWK({ ...newest.privateJwk, alg: newest.alg })) as CryptoKey;
    return new SigningKeys({ kid: newest.kid, publicJwk: newest.publicJwk, privateKey }, publicJwks);
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
