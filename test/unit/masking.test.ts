import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Masker, marker, usableMasker } from "@gatehouse/agent/masking/masker.js";
import { GatehouseError } from "@gatehouse/proto/errors";
import fc from "fast-check";
import { CANARIES, canaryProse } from "../support/masking-canaries.js";

const masker = new Masker();

/** Feeds `text` cut at `cuts` (sorted positions) through a StreamMasker; returns what it released. */
function streamed(m: Masker, text: string, cuts: number[]): { out: string; maxHeld: number } {
  const stream = m.stream();
  let out = "";
  let maxHeld = 0;
  let at = 0;
  for (const cut of [...cuts, text.length]) {
    out += stream.push(text.slice(at, cut));
    maxHeld = Math.max(maxHeld, stream.held);
    at = cut;
  }
  return { out: out + stream.flush(), maxHeld };
}

describe("detectors", () => {
  for (const canary of CANARIES) {
    test(`${canary.type}: ${canary.text.slice(0, 24)}… is masked with its type`, () => {
      const text = `before ${canary.text} after`;
      const { text: masked, found } = masker.mask(text);
      assert.ok(!masked.includes(canary.secret), masked);
      assert.ok(masked.includes(marker(canary.type)), masked);
      assert.equal(found.get(canary.type), 1);
      assert.ok(masked.startsWith("before ") && masked.endsWith(" after"));
    });
  }

  test("URLs and assignments keep their user, host and key name; only the value is masked", () => {
    const { text } = masker.mask("clone https://deploy:hunter2hunter2@git.example.com/app.git now");
    assert.equal(text, "clone https://deploy:[MASKED:basic-auth-url]@git.example.com/app.git now");
    const aws = masker.mask(`aws_secret_access_key=${"a1B2".repeat(10)}\n`).text;
    assert.equal(aws, "aws_secret_access_key=[MASKED:aws-secret-access-key]\n");
  });

  test("a secret inside JSON string escapes (input_json_delta text) is masked", () => {
    const pem = CANARIES.find((c) => c.type === "private-key")?.text ?? "";
    const json = JSON.stringify({ file: "id_rsa", content: pem });
    const { text } = masker.mask(json);
    assert.ok(!text.includes("PRIVATE KEY-----\\n"), text);
    assert.deepEqual(JSON.parse(text), { file: "id_rsa", content: marker("private-key") });
  });

  test("custom patterns from policy are masked under their own name", () => {
    const custom = new Masker([{ name: "employee-id", pattern: "EMP-\\d{6}" }]);
    assert.equal(custom.mask("ask EMP-123456 today").text, "ask [MASKED:employee-id] today");
    const grouped = new Masker([{ name: "ticket-pin", pattern: /PIN:(?<secret>\d{4})/ }]);
    assert.equal(grouped.mask("PIN:1234.").text, "PIN:[MASKED:ticket-pin].");
  });

  test("a custom pattern that is invalid or matches empty text is refused with its name", () => {
    for (const pattern of ["(unclosed", "x*"]) {
      assert.throws(
        () => new Masker([{ name: "bad", pattern }]),
        (e: unknown) =>
          e instanceof GatehouseError && e.code === "GATE_CONFIG_INVALID" && e.message.includes("'bad'"),
      );
    }
    assert.throws(() => new Masker([{ name: "Bad Name", pattern: "x" }]), GatehouseError);
  });

  test("a pushed pattern this engine cannot use is left out, named with why; the others and the built-in ones still mask", () => {
    const { masker: usable, rejected } = usableMasker([
      { name: "broken", pattern: "corp-(" },
      { name: "internal-host", pattern: "corp-[a-z]+\\.internal" },
    ]);
    assert.deepEqual(
      rejected.map((r) => r.name),
      ["broken"],
    );
    assert.match(rejected[0]?.reason ?? "", /not a valid regular expression/);
    const canary = CANARIES[0];
    assert.ok(canary);
    assert.equal(
      usable.mask(`on corp-build.internal: ${canary.text}`).text,
      `on [MASKED:internal-host]: ${masker.mask(canary.text).text}`,
    );
  });
});

describe("StreamMasker", () => {
  const prose = canaryProse();
  const whole = masker.mask(prose).text;

  test("every canary split at every boundary gives the same text as masking it whole", () => {
    for (const canary of CANARIES) {
      const text = `see ${canary.text}.`;
      const expected = masker.mask(text).text;
      for (let cut = 0; cut <= text.length; cut++) {
        const { out } = streamed(masker, text, [cut]);
        assert.equal(out, expected, `${canary.type} split at ${cut}`);
        assert.ok(!out.includes(canary.secret));
      }
    }
  });

  test("any split of any text gives the same output as masking the whole text", () => {
    const pieces = [
      ...CANARIES.map((c) => c.text),
      ...CANARIES.map((c) => c.text.slice(0, Math.ceil(c.text.length / 2))),
      " ",
      "\n",
      "a",
      "-----",
      "=",
      "_",
      ":",
      "@",
      "https://",
      "aws_secret_access_key",
      "-----BEGIN RSA PRIVATE KEY-----",
      "😀",
    ];
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom(...pieces), { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (parts, rawCuts) => {
          const text = parts.join("");
          const cuts = [...new Set(rawCuts.map((c) => c % (text.length + 1)))].sort((a, b) => a - b);
          assert.equal(streamed(masker, text, cuts).out, masker.mask(text).text);
        },
      ),
      { numRuns: 400 },
    );
  });

  test("text is released up to its last whitespace at once; only the tail is held", () => {
    const stream = masker.stream();
    assert.equal(stream.push("Here is the token: gh"), "Here is the token: ");
    assert.equal(stream.held, 2);
    assert.equal(stream.push(`p_${"x".repeat(36)} and more`), `${marker("github-token")} and `);
    assert.equal(stream.flush(), "more");
  });

  test("the hold-back stays bounded on a long run without whitespace (a base64 blob)", () => {
    const blob = "iVBORw0KGgoAAAANSUhEUgAA".repeat(2000);
    const { out, maxHeld } = streamed(
      masker,
      blob,
      Array.from({ length: 400 }, (_, i) => (i + 1) * 113),
    );
    assert.equal(out, blob);
    assert.ok(maxHeld <= masker.maxHold, `held ${maxHeld} > ${masker.maxHold}`);
    assert.ok(masker.maxHold <= 9000, `maxHold ${masker.maxHold}`);
  });

  test("prose with every canary, streamed in small pieces, masks all of them", () => {
    const cuts = Array.from({ length: Math.floor(prose.length / 7) }, (_, i) => (i + 1) * 7);
    const { out } = streamed(masker, prose, cuts);
    assert.equal(out, whole);
    for (const canary of CANARIES) assert.ok(!out.includes(canary.secret), canary.type);
  });
});
