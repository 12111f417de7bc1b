/**
 * docs/errors.md is where users look codes up; it must list every code the
 * catalogue has, with the status the catalogue gives it.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { ERROR_CODES } from "@gatehouse/proto/errors";

test("docs/errors.md lists every error code with its HTTP status", async () => {
  const doc = await readFile(new URL("../../../docs/errors.md", import.meta.url), "utf8");
  const rows = new Map(
    doc
      .split("\n")
      .filter((line) => line.startsWith("|"))
      .map((line) => line.split("|").map((cell) => cell.trim()))
      .map((cells) => [cells[1]?.replaceAll("`", ""), cells[2]] as const),
  );
  for (const [code, { status }] of Object.entries(ERROR_CODES)) {
    assert.ok(rows.has(code), `${code} is missing from docs/errors.md`);
    assert.equal(
      rows.get(code)?.replace(/[()]/g, ""),
      String(status),
      `${code} should be documented with status ${status}`,
    );
  }
});
