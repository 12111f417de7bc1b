/**
 * The signing key file over time: automatic rotation when due, key files made
 * by hand or by an older version (no `iat`), a key file that disappears, and an
 * agent that must not forget a revocation when new keys are pushed to it.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { TokenVerifier } from "@gatehouse/agent/tokens/verifier.js";
import { PUBLISH_LEAD_MS, SigningKeys } from "@gatehouse/control-plane/identity/signing-keys.js";
import { exportJWK, generateKeyPair } from "jose";
import { pino } from "pino";
import { LogCapture } from "../support/gatehouse.js";

const DAY = 86_400_000;
let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), "gatehouse-keys-"));
});
after(() => rm(dir, { recursive: true, force: true }));

/** A clock the test moves. */
function clock(start = Date.now()) {
  const state = { at: start };
  return { now: () => state.at, advance: (ms: number) => (state.at += ms) };
}

async function handMadeKey(kid: string): Promise<Record<string, unknown>> {
  const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
  return { ...(await exportJWK(privateKey)), kid };
}

const silent = pino({ level: "silent" });

test("a key is made when the newest is due, published first, and signs after the lead time", async () => {
  const file = join(dir, "due.jwk");
  const time = clock();
  const announced: string[] = [];
  const keys = await SigningKeys.load(file, silent, {
    everyMs: 30 * DAY,
    now: time.now,
    announce: async (kid) => {
      announced.push(kid);
    },
  });
  const first = keys.signingKid;
  await keys.tick();
  assert.equal(keys.publicJwks.length, 1, "not due yet");

  time.advance(30 * DAY);
  const changed = once(keys, "changed");
  await keys.tick();
  await changed;
  assert.equal(keys.publicJwks.length, 2);
  assert.deepEqual(announced, [keys.publicJwks[0]?.kid]);
  assert.equal(keys.signingKid, first, "the new key is published before it signs");

  time.advance(PUBLISH_LEAD_MS);
  await keys.tick();
  assert.equal(keys.signingKid, announced[0]);
  const saved = JSON.parse(await readFile(file, "utf8")) as { keys: Array<{ kid: string }> };
  assert.deepEqual(
    saved.keys.map((k) => k.kid),
    [announced[0], first],
  );
});

test("a key file from before rotation (no iat) keeps signing with its key until it is due", async () => {
  const file = join(dir, "old.jwk");
  const key = await handMadeKey("made-by-hand");
  await writeFile(file, JSON.stringify({ keys: [key] }), { mode: 0o600 });
  const twoDaysAgo = new Date(Date.now() - 2 * DAY);
  await utimes(file, twoDaysAgo, twoDaysAgo);
  const keys = await SigningKeys.load(file, silent, { everyMs: 30 * DAY, now: Date.now });
  assert.equal(keys.signingKid, "made-by-hand");
  await keys.tick();
  assert.equal(keys.publicJwks.length, 1, "a key written two days ago is not 30 days old");
});

test("a file replaced by hand with a single new private key signs with it at once", async () => {
  const file = join(dir, "replaced.jwk");
  const keys = await SigningKeys.load(file, silent);
  const old = (JSON.parse(await readFile(file, "utf8")) as { keys: Array<Record<string, unknown>> }).keys[0];
  const { d: _d, ...oldPublic } = old ?? {};
  // After a compromise: the new key first, the old one's public half kept so old seals verify.
  await writeFile(file, JSON.stringify({ keys: [await handMadeKey("after-compromise"), oldPublic] }));
  await keys.tick();
  assert.equal(keys.signingKid, "after-compromise");
  assert.equal(keys.publicJwks.length, 2);
});

test("a key file that disappears is logged; signing goes on with the keys loaded, nothing is rotated", async () => {
  const file = join(dir, "gone.jwk");
  const logs = new LogCapture();
  const time = clock();
  const keys = await SigningKeys.load(file, logs.log("cp.keys"), { everyMs: DAY, now: time.now });
  const kid = keys.signingKid;
  await rm(file);
  time.advance(2 * DAY);
  await keys.tick();
  assert.equal(keys.signingKid, kid);
  assert.ok(logs.lines.some((l) => l.includes("the signing key file is gone")));
  await assert.rejects(readFile(file), { code: "ENOENT" }, "a rotation made a new file without the old keys");
});

test("new keys pushed to an agent do not undo a revocation that reached it first", async () => {
  const keys = await SigningKeys.load(join(dir, "agent.jwk"), silent);
  const verifier = new TokenVerifier();
  const pushed = keys.publicJwks.map((jwk) => ({ kid: String(jwk.kid), jwkJson: JSON.stringify(jwk) }));
  verifier.configure({ tokenKeys: pushed, revoked: [] });
  const expiresAt = Date.now() + 600_000;
  const token = await keys.issueSessionToken({ sid: "s1", cnx: "claude", sub: "k", expiresAt }, Date.now());
  assert.equal((await verifier.verify(token, "claude")).sessionId, "s1");
  // The close's broadcast arrives, then a configuration read from the store before the close.
  verifier.revoke([{ sessionId: "s1", expiresAtUnixMs: expiresAt }]);
  verifier.configure({ tokenKeys: pushed, revoked: [] });
  await assert.rejects(verifier.verify(token, "claude"), { code: "GATE_TOKEN_REVOKED" });
});
