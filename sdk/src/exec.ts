/**
 * Running a tool through a Gatehouse session: the tool gets the proxy URL and
 * the short-lived session token in the environment variables it already reads,
 * never the real credential.
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { OpenedSession } from "./client.js";

/** Variables that would hand a tool a real credential or send it around the gateway. */
const WITHHELD = ["ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"];

/**
 * The environment a tool needs to use `session`: for Anthropic connections the
 * SDK's and Claude Code's ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN.
 */
export function sessionEnvironment(session: OpenedSession): Record<string, string> {
  return { ANTHROPIC_BASE_URL: session.proxyUrl, ANTHROPIC_AUTH_TOKEN: session.token };
}

/** `base` with Gatehouse's variables for `session` in place of any the caller had. */
export function childEnvironment(
  base: Readonly<Record<string, string | undefined>>,
  session: OpenedSession,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined && !WITHHELD.includes(k)) env[k] = v;
  return { ...env, ...sessionEnvironment(session) };
}

/** Runs `command` with the session's environment; resolves with its exit code (128+n for a signal). */
export function runWithSession(
  session: OpenedSession,
  command: string,
  args: readonly string[],
  options: { env: Readonly<Record<string, string | undefined>>; cwd?: string },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: "inherit",
      env: childEnvironment(options.env, session),
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
