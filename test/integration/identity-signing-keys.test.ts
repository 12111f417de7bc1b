/**
 * Session-token signing keys rotate: a new key reaches the JWKS endpoint and
 * every linked agent before it signs anything, tokens and seals of the key it
 * replaced still verify, and another replica sharing the key file picks the
 * new key up.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { PUBLISH_LEAD_MS, SigningKeys } from "@gatehouse/control-plane/identity/signing-keys.js";
import { compactVerify, createLocalJWKSet, decodeProtectedHeader } from "jose";
import { TestGatehouse } from "../support/gatehouse.js";

const LIMIT = { timeout: 60_000 };
const message = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hi" }],
};

let gh: TestGatehouse;
before(async () => {
  gh = await TestGatehouse.start();
});
after(() => gh?.stop());

const kidOf = (token: string) => decodeProtectedHeader(token).kid;

test(
  "a rotated key is published to agents first, signs after the lead time, and old tokens and seals still verify",
  LIMIT,
  async () => {
    const first = await gh.openSession();
    const oldKid = kidOf(first.token);

    const pushed = once(gh.agent.verifier, "configured");
    const newKid = await gh.cp.keys.rotate();
    await pushed;
    const jwks = (await gh.admin.jwks()).keys.map((k) => k.kid);
    assert.deepEqual(jwks.sort(), [oldKid, newKid].sort());

    // Published, not yet signing: replicas and agents that have not heard of it yet are not handed its tokens.
    assert.equal(kidOf((await gh.openSession()).token), oldKid);

    gh.clockOffsetMs = PUBLISH_LEAD_MS + 1000;
    await gh.cp.keys.tick();
    const second = await gh.openSession();
    assert.equal(kidOf(second.token), newKid);

    // The agent takes tokens of both keys.
    assert.equal((await gh.anthropic(second).messages.create(message)).type, "message");
    assert.equal((await gh.anthropic(first).messages.create(message)).type, "message");

    // A seal made with the new key verifies with the published set, as does the old key's token.
    const closed = await gh.admin.closeSession(first.id);
    const keySet = createLocalJWKSet(await gh.admin.jwks());
    const seal = await compactVerify(closed.seal?.jws ?? "", keySet);
    assert.equal(seal.protectedHeader.kid, newKid);

    const audit = (await (
      await fetch(`${gh.cp.httpUrl}/v1/audit`, { headers: { authorization: `Bearer ${gh.adminToken}` } })
    ).json()) as { items: Array<{ action: string; actor: string; target: string }> };
    assert.deepEqual(
      audit.items.filter((e) => e.action === "signing.rotate").map((e) => [e.actor, e.target]),
      [["system", newKid]],
    );
  },
);

test(
  "a key that no longer signs keeps only its public half; another replica picks the rotation up",
  LIMIT,
  async () => {
    const keyFile = join(gh.dir, "signing-key.jwk");
    const replica = await SigningKeys.load(keyFile, gh.logs.log("cp.keys"), {
      everyMs: null,
      now: () => Date.now() + gh.clockOffsetMs,
    });
    const changed = once(replica, "changed");
    const signer = gh.cp.keys.signingKid;
    const newest = await gh.cp.keys.rotate();
    await replica.tick();
    await changed;
    assert.ok(replica.publicJwks.some((k) => k.kid === newest));

    const file = JSON.parse(await readFile(keyFile, "utf8")) as { keys: Array<{ kid: string; d?: string }> };
    const privateKids = file.keys.filter((k) => k.d !== undefined).map((k) => k.kid);
    assert.deepEqual(
      privateKids.sort(),
      [signer, newest].sort(),
      "only the signing key and the next one keep private halves",
    );
    assert.equal(file.keys.length, 3, "retired keys stay published");
    // What the old keys signed still verifies.
    assert.equal((await gh.admin.jwks()).keys.length, 3);
  },
);
