/**
 * Checks a session's record the way an auditor would, from what can be read
 * back (the events and the seal) and the public keys: the seal must be a valid
 * signature, and the hash chain, recomputed from the first event, must reach
 * what the seal signed. Events are checked as they stream in, so a record of
 * any size can be verified.
 */
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from "jose";
import type { Seal, StoredEvent } from "../store/types.js";
import { ChainCheck } from "./chain.js";

export const SEAL_TYPE = "gatehouse-seal+jws";

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

type SealState = RecordVerdict["seal"];

async function openSeal(
  sessionId: string,
  seal: Pick<Seal, "jws"> | null,
  keys: JSONWebKeySet,
): Promise<{ state: SealState; payload: SealPayload | null }> {
  if (!seal) return { state: { state: "missing" }, payload: null };
  const invalid = (reason: string) => ({ state: { state: "invalid" as const, reason }, payload: null });
  let payload: SealPayload;
  let kid: string;
  try {
    const verified = await compactVerify(seal.jws, createLocalJWKSet(keys), { algorithms: ["EdDSA"] });
    if (verified.protectedHeader.typ !== SEAL_TYPE)
      return invalid(`the JWS is not a seal (typ ${verified.protectedHeader.typ})`);
    payload = JSON.parse(new TextDecoder().decode(verified.payload)) as SealPayload;
    kid = verified.protectedHeader.kid ?? "";
  } catch (error) {
    return invalid(`the seal's signature does not verify with the given keys (${(error as Error).message})`);
  }
  if (payload.sid !== sessionId) return invalid(`the seal is for session ${payload.sid}, not ${sessionId}`);
  if (!Number.isSafeInteger(payload.count) || payload.count < 0 || typeof payload.lastHash !== "string") {
    return invalid("the seal's payload is malformed");
  }
  return {
    state: { state: "valid", kid, count: payload.count, sealedAt: payload.sealedAt, coversAll: false },
    payload,
  };
}

export async function verifyRecord(
  sessionId: string,
  events: AsyncIterable<StoredEvent> | Iterable<StoredEvent>,
  seal: Pick<Seal, "jws"> | null,
  keys: JSONWebKeySet,
): Promise<RecordVerdict> {
  const opened = await openSeal(sessionId, seal, keys);
  const chain = new ChainCheck();
  /** The chain's hash where the seal says it ended, once the events get there. */
  let hashAtSeal = opened.payload?.count === 0 ? chain.tail.lastHash : null;
  for await (const event of events) {
    if (!chain.push(event)) break;
    if (event.seq === opened.payload?.count) hashAtSeal = chain.tail.lastHash;
  }
  const base = { events: chain.tail.count, lastHash: chain.tail.lastHash, chainBreak: chain.break };
  const { payload } = opened;
  if (opened.state.state !== "valid" || !payload) return { ...base, intact: false, seal: opened.state };

  const invalid = (reason: string): RecordVerdict => ({
    ...base,
    intact: false,
    seal: { state: "invalid", reason },
  });
  if (payload.count > chain.tail.count && !chain.break) {
    return invalid(
      `the seal covers ${payload.count} events but the record has ${chain.tail.count}: events are missing`,
    );
  }
  // Events the seal covers must hash to what it signed; events after it are unsealed, not altered.
  if (hashAtSeal !== null && hashAtSeal !== payload.lastHash) {
    return invalid(
      payload.count === chain.tail.count
        ? "the seal's last hash differs from the record's: the record was altered"
        : `event ${payload.count}'s hash differs from the one the seal signed: the record was altered`,
    );
  }
  const coversAll = payload.count === chain.tail.count;
  return {
    ...base,
    intact: chain.break === null && coversAll && hashAtSeal === payload.lastHash,
    seal: { ...opened.state, coversAll },
  };
}
