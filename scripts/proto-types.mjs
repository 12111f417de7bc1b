// Generates the committed TypeScript types of the AgentLink contract (`write`),
// or fails when the committed ones differ from what the .proto produces (`check`, run in CI).
// The flags must match LOADER_OPTIONS in proto/src/index.ts.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

const mode = process.argv[2];
if (mode !== "write" && mode !== "check") {
  console.error("usage: proto-types.mjs write|check");
  process.exit(2);
}
const committed = "proto/src/generated";
const out = mode === "check" ? mkdtempSync(join(tmpdir(), "gatehouse-proto-")) : committed;

rmSync(out, { recursive: true, force: true });
execFileSync(
  "npx",
  [
    "proto-loader-gen-types",
    "--longs=Number",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--grpcLib=@grpc/grpc-js",
    "--importFileExtension=.js",
    `--outDir=${out}`,
    "proto/gatehouse/v1/agent_link.proto",
  ],
  { stdio: "inherit" },
);
// One index, so that consumers import every message type from one place.
const pkgDir = join(out, "gatehouse/v1");
const index = readdirSync(pkgDir)
  .filter((f) => f.endsWith(".ts"))
  .map((f) => f.slice(0, -3))
  .sort()
  .map((m) => `export type * from "./${m}.js";\n`)
  .join("");
writeFileSync(join(pkgDir, "index.ts"), index);

if (mode === "check") {
  const files = (root) =>
    readdirSync(root, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => relative(root, join(e.parentPath, e.name)))
      .sort();
  const fresh = files(out);
  const old = files(committed);
  const read = (root, rel) => readFileSync(join(root, rel), "utf8");
  const stale = [...new Set([...fresh, ...old])].filter(
    (rel) => !fresh.includes(rel) || !old.includes(rel) || read(out, rel) !== read(committed, rel),
  );
  rmSync(out, { recursive: true, force: true });
  if (stale.length > 0) {
    console.error(`generated proto types are stale (${stale.join(", ")}); run: npm run proto:generate`);
    process.exit(1);
  }
  console.log("generated proto types are current");
}
