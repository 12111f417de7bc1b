/**
 * Running a tool through a Gatehouse session: the tool gets the proxy URL and
 * the short-lived session token in the environment variables it already reads,
 * never the real credential.
 */
import { spawn } from "node:child_process";
import { constants } from "node:os";
import type { OpenedSession } from "./client.js";

/**
 * Variables a tool must not see: a real Anthropic credential or base URL (which
 * would send it around the gateway); Gatehouse's own keys, GATEHOUSE_ID_TOKEN among
 * them (which would let it open sessions, read records or manage agents); and what
 * the CI job proves its identity with, so the tool cannot open sessions as the job:
 * GitHub Actions' ID-token request token, Azure Pipelines' System.AccessToken, and
 * the ID tokens GitLab put in every job before 17.0 (CI_JOB_JWT, CI_JOB_JWT_V1,
 * CI_JOB_JWT_V2). Matched without regard to case, as Windows matches names.
 */
const WITHHELD =
  /^(ANTHROPIC_API_KEY|ANTHROPIC_BASE_URL|ANTHROPIC_AUTH_TOKEN|GATEHOUSE_[A-Z0-9_]*(TOKEN|KEY)|ACTIONS_ID_TOKEN_REQUEST_TOKEN|SYSTEM_ACCESSTOKEN|CI_JOB_JWT(_V1|_V2)?)$/i;

/**
 * The environment a tool needs to use `session`: for Anthropic connections the
 * SDK's and Claude Code's ANTHROPIC_BASE_URL and ANTHROPIC_AUTH_TOKEN.
 */
export function sessionEnvironment(session: OpenedSession): Record<string, string> {
  return { ANTHROPIC_BASE_URL: session.proxyUrl, ANTHROPIC_AUTH_TOKEN: session.token };
}

/**
 * `base` with Gatehouse's variables for `session` in place of any the caller had,
 * without the variables a tool must not see, nor those named in `withhold` (e.g. the
 * job's own token variable, `ciTokenVariables`).
 */
export function childEnvironment(
  base: Readonly<Record<string, string | undefined>>,
  session: OpenedSession,
  withhold: readonly string[] = [],
): Record<string, string> {
  const extra = new Set(withhold.map((name) => name.toUpperCase()));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) {
    if (v !== undefined && !WITHHELD.test(k) && !extra.has(k.toUpperCase())) env[k] = v;
  }
  return { ...env, ...sessionEnvironment(session) };
}

/**
 * Signals passed on to the tool, so that stopping the runner stops the tool (and
 * then the session). Not SIGINT: a Ctrl-C at a terminal reaches the tool already
 * (it is in the same process group), and a second one would make tools such as
 * Claude Code quit instead of interrupting; this process just outlives it.
 */
const FORWARDED: NodeJS.Signals[] = ["SIGTERM", "SIGHUP"];
const ignore = () => {};

/**
 * Runs `command` with the session's environment; resolves with its exit code
 * (128+n for a signal). SIGTERM and SIGHUP sent to this process are passed on
 * to the tool; SIGINT is left to reach it from the terminal; either way this
 * process waits for the tool to end.
 */
export function runWithSession(
  session: OpenedSession,
  command: string,
  args: readonly string[],
  options: {
    env: Readonly<Record<string, string | undefined>>;
    cwd?: string;
    /** Further variables the tool must not see; see {@link childEnvironment}. */
    withhold?: readonly string[];
  },
): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: "inherit",
      env: childEnvironment(options.env, session, options.withhold),
      ...(options.cwd ? { cwd: options.cwd } : {}),
    });
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of FORWARDED) process.on(signal, forward);
    process.on("SIGINT", ignore);
    const done = () => {
      for (const signal of FORWARDED) process.off(signal, forward);
      process.off("SIGINT", ignore);
    };
    child.once("error", (error) => {
      done();
      reject(error);
    });
    child.once("exit", (code, signal) => {
      done();
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
