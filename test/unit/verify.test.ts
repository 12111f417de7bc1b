/**
 * Verifying a record as an auditor does: the chain recomputed from the events,
 * the seal checked against the public keys. Every way a record can be altered
 * must show.
 */
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { chainEvents, EMPTY_TAIL } from "@gatehouse/control-plane/sessions/chain.js";
import { verifyRecord } from "@gatehouse/control-plane/sessions/verify.js";
import type { NewEvent, StoredEvent } from "@gatehouse/control-plane/store/types.js";
import { CompactSign, type CryptoKey, exportJWK, generateKeyPair, type JSONWebKeySet, type JWK } from "jose";

const SID = "0199a1b2-0000-7000-8000-000000000001";

function events(n: number): StoredEvent[] {
  const fresh: NewEvent[] = Array.from({ length: n }, (_, i) => ({
    id: `x:${i}`,
    sessionId: SID,
    exchangeId: "x",
    at: 1_800_000_000_000_000 + i,
    kind: "response.body",
    attrs: {},
    body: Buffer.from(`chunk ${i}`),
  }));
  return chainEvents(EMPTY_TAIL, fresh).stored;
}

describe("verifyRecord", () => {
  let sign: (payload: object) => Promise<string>;
  let privateKey: CryptoKey;
  let keys: JSONWebKeySet;
  let otherKeys: JSONWebKeySet;

  before(async () => {
    const pair = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    privateKey = pair.privateKey;
    const other = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    keys = { keys: [{ ...(await exportJWK(pair.publicKey)), kid: "k1", alg: "EdDSA" } as JWK] };
    otherKeys = { keys: [{ ...(await exportJWK(other.publicKey)), kid: "k1", alg: "EdDSA" } as JWK] };
    sign = (payload) =>
      new CompactSign(new TextEncoder().encode(JSON.stringify(payload)))
        .setProtectedHeader({ alg: "EdDSA", kid: "k1", typ: "gatehouse-seal+jws" })
        .sign(pair.privateKey);
  });

  const sealOf = async (stored: StoredEvent[], sid = SID) => ({
    jws: await sign({ sid, count: stored.length, lastHash: stored.at(-1)?.hash, sealedAt: 1 }),
  });

  test("an untouched, sealed record is intact", async () => {
    const record = events(5);
    const verdict = await verifyRecord(SID, record, await sealOf(record), keys);
    assert.equal(verdict.intact, true);
    assert.deepEqual(verdict.seal, { state: "valid", kid: "k1", count: 5, sealedAt: 1, coversAll: true });
  });

  test("an altered body breaks the chain at that event", async () => {
    const record = events(5);
    const seal = await sealOf(record);
    const altered = record.map((e) => (e.seq === 3 ? { ...e, body: Buffer.from("chunk X") } : e));
    const verdict = await verifyRecord(SID, altered, seal, keys);
    assert.equal(verdict.intact, false);
    assert.deepEqual(verdict.chainBreak, { seq: 3, reason: "event 3 does not match its hash" });
  });

  test("a recomputed chain with the last event removed no longer matches the seal", async () => {
    const record = events(5);
    const seal = await sealOf(record);
    const verdict = await verifyRecord(SID, record.slice(0, 4), seal, keys);
    assert.equal(verdict.intact, false);
    assert.equal(verdict.seal.state, "invalid");
    assert.match((verdict.seal as { reason: string }).reason, /covers 5 events but the record has 4/);
  });

  test("a chain rewritten end to end still fails: the seal signed the original last hash", async () => {
    const record = events(5);
    const seal = await sealOf(record);
    const rewritten = chainEvents(
      EMPTY_TAIL,
      record.map((e) => ({ ...e, body: Buffer.from("forged") })),
    ).stored;
    const verdict = await verifyRecord(SID, rewritten, seal, keys);
    assert.equal(verdict.chainBreak, null, "the forger recomputed every hash");
    assert.match((verdict.seal as { reason: string }).reason, /record was altered/);
  });

  test("events after the seal are reported unsealed, not intact", async () => {
    const record = events(6);
    const verdict = await verifyRecord(SID, record, await sealOf(record.slice(0, 4)), keys);
    assert.equal(verdict.intact, false);
    assert.deepEqual(verdict.seal, { state: "valid", kid: "k1", count: 4, sealedAt: 1, coversAll: false });
  });

  test("another JWS signed by the same key (a session token, say) does not pass for a seal", async () => {
    const record = events(2);
    const notASeal = await new CompactSign(
      new TextEncoder().encode(
        JSON.stringify({ sid: SID, count: 2, lastHash: record.at(-1)?.hash, sealedAt: 1 }),
      ),
    )
      .setProtectedHeader({ alg: "EdDSA", kid: "k1", typ: "gatehouse-session+jwt" })
      .sign(privateKey);
    const verdict = await verifyRecord(SID, record, { jws: notASeal }, keys);
    assert.match((verdict.seal as { reason: string }).reason, /not a seal/);
  });

  test("a seal signed by another key, or for another session, is invalid; no seal is not intact", async () => {
    const record = events(3);
    const foreign = await verifyRecord(SID, record, await sealOf(record), otherKeys);
    assert.match((foreign.seal as { reason: string }).reason, /signature does not verify/);
    const moved = await verifyRecord(SID, record, await sealOf(record, "another-session"), keys);
    assert.match((moved.seal as { reason: string }).reason, /is for session another-session/);
    const open = await verifyRecord(SID, record, null, keys);
    assert.deepEqual([open.intact, open.seal], [false, { state: "missing" }]);
  });
});
