/**
 * The agent's Vault session in a process of its own, so that what it prints can be seen: the
 * production node-vault client against the Vault HTTP API double.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { startVaultDouble } from "../support/vault-double.js";

/** Logs in with the session module (argv[1]) to Vault (argv[2]) with the secret id file (argv[3]), then stops. */
const LOGIN = `
const { VaultSession } = await import(process.argv[1]);
const quiet = { debug() {}, info() {}, warn() {}, error() {} };
const session = await VaultSession.start(
  { address: process.argv[2], auth: { approle: { roleId: "role", secretIdFile: process.argv[3] } }, timeoutSeconds: 5 },
  { logger: quiet },
);
session.stop();
`;

describe("Vault session", () => {
  test("with DEBUG=*, the login's secret id is not printed", async () => {
    // Regression: node-vault's `debug` printed every request body, secret ids and JWTs included.
    const canary = "secret-id-canary-4f1d";
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-vault-debug-"));
    const vault = await startVaultDouble();
    try {
      vault.addAppRole({ name: "agent", roleId: "role", secretId: canary });
      const secretIdFile = join(dir, "secret-id");
      await writeFile(secretIdFile, canary);
      const session = fileURLToPath(import.meta.resolve("@gatehouse/agent/vault/session.js"));
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        ["--input-type=module", "-e", LOGIN, session, vault.url, secretIdFile],
        { env: { ...process.env, DEBUG: "*", DEBUG_COLORS: "0" } },
      );
      assert.equal(vault.requestCount("POST", "/v1/auth/approle/login"), 1);
      assert.ok(!`${stdout}${stderr}`.includes(canary), "the secret id was printed");
    } finally {
      await vault.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
