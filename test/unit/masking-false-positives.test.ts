/**
 * Masking must leave ordinary output alone: source code, prose, hashes, UUIDs, base64 images and
 * long identifiers are what coding agents return all day, and a marker in them would break work.
 */
import assert from "node:assert/strict";
import { createHash, randomUUID } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Masker } from "@gatehouse/agent/masking/masker.js";

const FIXTURES = join(import.meta.dirname, "..", "..", "fixtures", "masking");
const masker = new Masker();

function assertUntouched(name: string, text: string): void {
  const { text: masked, found } = masker.mask(text);
  assert.deepEqual([...found], [], `${name}: masked ${JSON.stringify([...found])}`);
  assert.equal(masked, text);
  // Streamed in uneven pieces, the text also comes out as it went in.
  const stream = masker.stream();
  let out = "";
  for (let at = 0, step = 1; at < text.length; at += step, step = (step * 7) % 97 || 1) {
    out += stream.push(text.slice(at, at + step));
  }
  assert.equal(out + stream.flush(), text, `${name}, streamed`);
}

describe("false positives", () => {
  for (const file of readdirSync(FIXTURES)) {
    test(`fixture ${file} is not masked`, () => {
      assertUntouched(file, readFileSync(join(FIXTURES, file), "utf8"));
    });
  }

  test("Gatehouse's own sources, a large body of ordinary code, are not masked", () => {
    const root = join(import.meta.dirname, "..", "..", "..");
    // Not third-party docs: they hold credential-shaped examples (`http://abc:xyz@example.com`),
    // which are masked as they should be.
    const dirs = ["agent/src", "control-plane/src", "sdk/src", "proto/src"];
    let files = 0;
    for (const dir of dirs) {
      for (const file of readdirSync(join(root, dir), { recursive: true }).map(String)) {
        if (!file.endsWith(".ts")) continue;
        assertUntouched(`${dir}/${file}`, readFileSync(join(root, dir, file), "utf8"));
        files++;
      }
    }
    assert.ok(files > 50, `only ${files} files`);
  });

  test("git SHAs, sha256 digests and UUIDs are not masked", () => {
    const lines: string[] = [];
    for (let i = 0; i < 2000; i++) {
      const seed = `line ${i}`;
      lines.push(
        `commit ${createHash("sha1").update(seed).digest("hex")} ${randomUUID()}`,
        `sha256:${createHash("sha256").update(seed).digest("hex")} ${createHash("sha256").update(seed).digest("base64")}`,
      );
    }
    assertUntouched("hashes and UUIDs", lines.join("\n"));
  });
});
