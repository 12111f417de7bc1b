// Runs the compiled test files with node's built-in runner.
// Usage: node test/run.mjs [kind|path-fragment ...]  e.g. `node test/run.mjs unit spool`
// Node 20's runner takes no globs, so the files are listed here.
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { join, relative } from "node:path";

const root = join(import.meta.dirname, "dist");
const filters = process.argv.slice(2);
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith(".test.js"))
  .map((f) => join(root, f))
  .filter((f) => filters.length === 0 || filters.some((x) => relative(root, f).includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no compiled tests match ${filters.join(" ") || "(all)"}; run \`npx tsc -b\` first`);
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  // A test that hangs fails after two minutes, and a file whose test left a server open
  // still ends, instead of holding CI until its limit.
  [
    "--test",
    "--test-concurrency=4",
    "--test-timeout=120000",
    "--test-force-exit",
    "--test-reporter=spec",
    ...files,
  ],
  { stdio: "inherit" },
);
process.exit(result.status ?? 1);
