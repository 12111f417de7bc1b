/**
 * Opaque bearer secrets (admin API keys, agent tokens): random, recognisable by
 * prefix so secret scanners can find leaked ones, and kept only as a hash.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";

/** Prefix of agent tokens: "Gatehouse Agent Token". */
export const AGENT_TOKEN_PREFIX = "gat_";

export function generateToken(prefix: string): string {
  return prefix + randomBytes(32).toString("base64url");
}

/** Hex SHA-256; tokens carry 256 random bits, so a fast hash is the right one. */
export function hashToken(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

/** Compares two secrets in time independent of where they differ. */
export function sameSecret(a: string, b: string): boolean {
  return timingSafeEqual(Buffer.from(hashToken(a), "hex"), Buffer.from(hashToken(b), "hex"));
}
