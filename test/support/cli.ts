/** Runs the built `gatehouse` command as a child process, as a user would. */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";

export const GATEHOUSE_BIN = fileURLToPath(new URL("../../../cli/dist/main.js", import.meta.url));

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `gatehouse args…` to completion. */
export async function gatehouse(
  args: string[],
  options: { cwd?: string; env?: Record<string, string | undefined> } = {},
): Promise<CliResult> {
  const child = spawn(process.execPath, [GATEHOUSE_BIN, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d;
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d;
  });
  const [code] = (await once(child, "exit")) as [number | null];
  return { code, stdout, stderr };
}

/** A long-running `gatehouse` process (up, control-plane, agent) and what it has printed so far. */
export class CliServer {
  stderr = "";
  private waiters: Array<{ pattern: RegExp; resolve: (m: RegExpMatchArray) => void }> = [];
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess) {
    child.stderr?.on("data", (d: Buffer) => {
      this.stderr += d;
      this.waiters = this.waiters.filter((w) => {
        const m = this.stderr.match(w.pattern);
        if (m) w.resolve(m);
        return !m;
      });
    });
    this.exited = once(child, "exit").then(([code]) => code as number | null);
  }

  static start(
    args: string[],
    options: { cwd?: string; env?: Record<string, string | undefined> } = {},
  ): CliServer {
    return new CliServer(
      spawn(process.execPath, [GATEHOUSE_BIN, ...args], {
        cwd: options.cwd,
        env: { ...process.env, ...options.env },
        stdio: ["ignore", "ignore", "pipe"],
      }),
    );
  }

  /** Resolves with the first match of `pattern` in stderr; rejects if the process exits first. */
  waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    const m = this.stderr.match(pattern);
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      this.waiters.push({ pattern, resolve });
      void this.exited.then((code) =>
        reject(new Error(`gatehouse exited (${code}) before printing ${pattern}:\n${this.stderr}`)),
      );
    });
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    return this.exited;
  }
}
