// Runs the compiled test files with node's built-in runner.
// Usage: node test/run.mjs [kind|path-fragment ...]  e.g. `node test/run.mjs unit spool`
// Node 20's runner takes no globs, so the files are listed here.
//
// The tests that run a whole Gatehouse through the harness (test/support/gatehouse.ts) run
// twice: on the embedded SQLite store, then on the MongoDB store (GATEHOUSE_TEST_STORE=mongodb,
// against FerretDB or MONGODB_URI), so the spine is proven on both.
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
/** Files whose Gatehouse comes from the harness, so the store under it is the harness's choice. */
const onBothStores = files.filter((f) =>
  /[/\\](e2e[/\\]anthropic|integration[/\\](proxy-|link|rest-api|retention|identity-|approvals))/.test(f),
);

function run(label, list, env) {
  if (list.length === 0) return 0;
  console.log(`\n# ${label}: ${list.length} files\n`);
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
      ...list,
    ],
    { stdio: "inherit", env: { ...process.env, ...env } },
  );
  return result.status ?? 1;
}

const embedded = run("every test (harness on the embedded SQLite store)", files, {});
const mongo = run("harness tests again, on the MongoDB store", onBothStores, {
  GATEHOUSE_TEST_STORE: "mongodb",
});
process.exit(embedded || mongo);
