import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { chainEvents, EMPTY_TAIL, verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import type { NewEvent } from "@gatehouse/control-plane/store/types.js";

function event(i: number, body: string | null = null): NewEvent {
  return {
    id: `x:${i}`,
    sessionId: "s1",
    exchangeId: "x",
    at: 1_700_000_000_000_000 + i,
    kind: body === null ? "exchange.end" : "response.body",
    attrs: { status: 200, nested: { b: 1, a: [1, "two"] } },
    body: body === null ? null : Buffer.from(body),
  };
}

describe("event hash chain", () => {
  const { stored, tail } = chainEvents(EMPTY_TAIL, [event(0, "hello"), event(1, "world"), event(2)]);

  test("numbers events from 1 and ends at the last hash", () => {
    assert.deepEqual(
      stored.map((e) => e.seq),
      [1, 2, 3],
    );
    assert.equal(tail.count, 3);
    assert.equal(tail.lastHash, stored[2]?.hash);
    assert.deepEqual(verifyChain(stored), { tail, break: null });
  });

  test("continuing a chain in two appends gives the same hashes as one", () => {
    const first = chainEvents(EMPTY_TAIL, [event(0, "hello")]);
    const second = chainEvents(first.tail, [event(1, "world"), event(2)]);
    assert.deepEqual([...first.stored, ...second.stored], stored);
  });

  test("key order in attrs does not change the hash (stores may reorder keys)", () => {
    const reordered = stored.map((e) => ({ ...e, attrs: { nested: { a: [1, "two"], b: 1 }, status: 200 } }));
    assert.equal(verifyChain(reordered).break, null);
  });

  test("an altered body is found at the event that was altered", () => {
    const altered = stored.map((e) => (e.seq === 2 ? { ...e, body: Buffer.from("w0rld") } : e));
    assert.deepEqual(verifyChain(altered).break, { seq: 2, reason: "event 2 does not match its hash" });
  });

  test("a removed event is reported as a gap", () => {
    const gap = stored.filter((e) => e.seq !== 2);
    assert.deepEqual(verifyChain(gap).break, { seq: 3, reason: "expected event 2, found 3" });
  });
});
