/**
 * Checks a session's record the way an auditor would, from what can be read
 * back (the events and the seal) and the public keys: the hash chain is
 * recomputed from the first event, and the seal must be a valid signature over
 * the chain's length and last hash.
 */
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from "jose";
import type { Seal, StoredEvent } from "../store/types.js";
import { verifyChain } from "./chain.js";

export interface RecordVerdict {
  /** True when the chain is unbroken and a valid seal covers every event. */
  intact: boolean;
  events: number;
  lastHash: string;
  /** Where the chain first fails to hold, if it does. */
  chainBreak: { seq: number; reason: string } | null;
  seal:
    | { state: "missing" }
    | { state: "invalid"; reason: string }
    | { state: "valid"; kid: string; count: number; sealedAt: number; coversAll: boolean };
}

interface SealPayload {
  sid: string;
  count: number;
  lastHash: string;
  sealedAt: number;
}

export async function verifyRecord(
  sessionId: string,
  events: Iterable<StoredEvent>,
  seal: Pick<Seal, "jws"> | null,
  keys: JSONWebKeySet,
): Promise<RecordVerdict> {
  const list = [...events];
  const chain = verifyChain(list);
  const base = { events: chain.tail.count, lastHash: chain.tail.lastHash, chainBreak: chain.break };
  if (!seal) return { ...base, intact: false, seal: { state: "missing" } };

  let payload: SealPayload;
  let kid: string;
  try {
    const verified = await compactVerify(seal.jws, createLocalJWKSet(keys), { algorithms: ["EdDSA"] });
    payload = JSON.parse(new TextDecoder().decode(verified.payload)) as SealPayload;
    kid = verified.protectedHeader.kid ?? "";
  } catch (error) {
    const reason = `the seal's signature does not verify with the given keys (${(error as Error).message})`;
    return { ...base, intact: false, seal: { state: "invalid", reason } };
  }
  if (payload.sid !== sessionId) {
    const reason = `the seal is for session ${payload.sid}, not ${sessionId}`;
    return { ...base, intact: false, seal: { state: "invalid", reason } };
  }
  // Events the seal covers must hash to what it signed; events after it are unsealed, not altered.
  const coversAll = payload.count === chain.tail.count;
  if (payload.count > chain.tail.count) {
    const reason = `the seal covers ${payload.count} events but the record has ${chain.tail.count}: events are missing`;
    return { ...base, intact: false, seal: { state: "invalid", reason } };
  }
  if (coversAll && payload.lastHash !== chain.tail.lastHash) {
    const reason = "the seal's last hash differs from the record's: the record was altered";
    return { ...base, intact: false, seal: { state: "invalid", reason } };
  }
  if (!coversAll) {
    const sealedTail = verifyChain(list.filter((e) => e.seq <= payload.count)).tail;
    if (sealedTail.lastHash !== payload.lastHash) {
      const reason = `event ${payload.count}'s hash differs from the one the seal signed: the record was altered`;
      return { ...base, intact: false, seal: { state: "invalid", reason } };
    }
  }
  return {
    ...base,
    intact: chain.break === null && coversAll,
    seal: { state: "valid", kid, count: payload.count, sealedAt: payload.sealedAt, coversAll },
  };
}
