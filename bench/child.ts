/**
 * How the benchmark's load generator and its two child processes (the fake
 * upstream and the gateway) talk: each child prints one JSON line on stdout
 * once it listens, then answers commands over the Node IPC channel.
 */
import { type ChildProcess, execFileSync, fork } from "node:child_process";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";

/** `metadata.user_id` of a request whose stream the fake upstream holds mid-way until `release`. */
export const HOLD_USER = "bench-hold";

/** What the fake upstream child announces once it listens. */
export interface UpstreamInfo {
  url: string;
  apiKey: string;
  pid: number;
}

/** What a gateway child announces once ready (an agent: once linked to its control plane). */
export interface GatewayInfo {
  pid: number;
  role: "all" | "control-plane" | "agent";
  /** The control plane's AgentLink address. */
  grpcAddress: string;
  /** The control plane's REST API (`/metrics` among it); "" in an agent-only process. */
  controlPlaneUrl: string;
  /** The token the agent links with (`gatehouse agents create`); a split agent is started with it. */
  agentToken: string;
  dataDir: string;
}

/** What `session` answers: a session on `claude`, as `POST /v1/sessions` hands it to a CI runner. */
export interface SessionGrant {
  /** `<agent proxy URL>/c/claude`. */
  connectionUrl: string;
  token: string;
}

/** What `recording` answers: how far recorded events got towards the store. */
export interface RecordingState {
  /** Events spooled and not yet acknowledged as durable by the control plane. */
  pending: number;
  /** Highest spool seq acknowledged: the number of events stored in this run. */
  ackedSeq: number;
}

/** What `drain` answers: the backlog there was and how long it took to be acknowledged. */
export interface DrainResult {
  pendingBefore: number;
  ms: number;
  ackedSeq: number;
}

/** A command from the load generator; `id` pairs it with its answer. */
export interface Command {
  id: number;
  type: string;
}

/** The answer to one {@link Command}. */
export type Answer = { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string };

/**
 * Answers commands from the parent. `stop` (or the parent going away) runs `stop` once and exits
 * normally, which also lets `--cpu-prof` write its profile.
 */
export function serveCommands(
  handlers: Record<string, () => Promise<unknown>>,
  stop: () => Promise<void>,
): void {
  let stopping = false;
  const stopAndExit = () => {
    if (stopping) return;
    stopping = true;
    stop().then(
      () => process.exit(0),
      (error: unknown) => {
        process.stderr.write(`could not stop cleanly: ${String(error)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("message", (raw: unknown) => {
    const command = raw as Command;
    if (command.type === "stop") return stopAndExit();
    const answer = (message: Answer) => process.send?.(message);
    const handler = handlers[command.type];
    if (handler === undefined) {
      answer({ id: command.id, ok: false, error: `unknown command ${command.type}` });
      return;
    }
    handler().then(
      (value) => answer({ id: command.id, ok: true, value }),
      (error: unknown) => answer({ id: command.id, ok: false, error: String(error) }),
    );
  });
  // An orphaned child must not outlive the benchmark.
  process.on("disconnect", stopAndExit);
}

/** A child process started by the load generator, with what it announced and a way to command it. */
export class BenchChild<Info> {
  #next = 1;
  readonly #pending = new Map<
    number,
    { resolve: (value: unknown) => void; reject: (error: Error) => void }
  >();

  private constructor(
    readonly name: string,
    readonly process: ChildProcess,
    readonly info: Info,
  ) {
    process.on("message", (raw: unknown) => {
      const answer = raw as Answer;
      const waiter = this.#pending.get(answer.id);
      if (waiter === undefined) return;
      this.#pending.delete(answer.id);
      if (answer.ok) waiter.resolve(answer.value);
      else waiter.reject(new Error(`${name}: ${answer.error}`));
    });
    process.on("exit", (code, signal) => {
      for (const waiter of this.#pending.values()) {
        waiter.reject(new Error(`${name} exited (code ${code}, signal ${signal}) before answering`));
      }
      this.#pending.clear();
    });
  }

  /** Forks `script` and resolves with the JSON line it prints once ready. */
  static async start<Info>(
    name: string,
    script: string,
    args: string[],
    execArgv: string[],
  ): Promise<BenchChild<Info>> {
    const child = fork(script, args, { stdio: ["ignore", "pipe", "inherit", "ipc"], execArgv });
    const stdout = child.stdout;
    if (stdout === null) throw new Error(`${name}: no stdout pipe`);
    const lines = createInterface({ input: stdout });
    const info = await new Promise<Info>((resolve, reject) => {
      child.once("exit", (code) => reject(new Error(`${name} exited with code ${code} before it was ready`)));
      lines.once("line", (line) => {
        try {
          resolve(JSON.parse(line) as Info);
        } catch (error) {
          reject(
            new Error(`${name} printed ${JSON.stringify(line)} instead of its JSON ready line`, {
              cause: error,
            }),
          );
        }
      });
    });
    // Anything else the child prints goes to our stderr, out of the results table's way.
    lines.on("line", (line) => process.stderr.write(`[${name}] ${line}\n`));
    return new BenchChild(name, child, info);
  }

  /** Sends a command and resolves with the child's answer. */
  ask<T>(type: string): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: (value) => resolve(value as T), reject });
      this.process.send({ id, type } satisfies Command);
    });
  }

  /** Tells the child to stop and waits for it to exit. */
  async stop(): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.process.once("exit", () => resolve()));
    this.process.send({ id: this.#next++, type: "stop" } satisfies Command);
    await exited;
  }
}

/**
 * Memory of a process in bytes from /proc (Linux): `VmRSS` (resident now) or `VmHWM` (the most it
 * has been resident); null where /proc is not there.
 */
export async function residentBytes(pid: number, field: "VmRSS" | "VmHWM" = "VmRSS"): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const kib = new RegExp(`^${field}:\\s+(\\d+)\\s+kB$`, "m").exec(status)?.[1];
    return kib === undefined ? null : Number(kib) * 1024;
  } catch {
    return null;
  }
}

const CLOCK_TICKS_PER_SECOND = clockTicks();

function clockTicks(): number {
  try {
    const ticks = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    return Number.isSafeInteger(ticks) && ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

/** CPU time a process has used so far (user + system, every thread), in ms, from /proc (Linux); null elsewhere. */
export async function cpuMillis(pid: number): Promise<number | null> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may itself hold spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const user = Number(fields[11]);
    const system = Number(fields[12]);
    return ((user + system) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return null;
  }
}

/** CPU time the whole machine has spent busy so far (every CPU, idle and I/O wait excluded), in ms; null without /proc. */
export async function machineBusyMillis(): Promise<number | null> {
  try {
    const stat = await readFile("/proc/stat", "utf8");
    const fields = (stat.split("\n", 1)[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal (guest time is already counted in user).
    const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
    return ((user + nice + system + irq + softirq + steal) * 1000) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return null;
  }
}
