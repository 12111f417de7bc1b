/**
 * What the benchmarks share: command-line flags (`--name value`, or
 * `BENCH_<NAME>` in the environment with dashes as underscores, or the
 * default; `--help` lists them), the machine line and plain-text table of
 * their reports, percentiles, and how a run ends.
 */
import { arch, availableParallelism, cpus, platform, totalmem } from "node:os";
import { parseArgs } from "node:util";

export interface FlagSpec {
  default: string;
  help: string;
}

/** Every flag's value as text; prints the flags and exits on `--help`. */
export function readFlags<F extends string>(command: string, flags: Record<F, FlagSpec>): Record<F, string> {
  const names = Object.keys(flags) as F[];
  const { values } = parseArgs({
    options: {
      ...Object.fromEntries(names.map((name) => [name, { type: "string" as const }])),
      help: { type: "boolean" },
    },
  });
  if (values.help) {
    process.stdout.write(`${command} -- [flags]; each flag may also be set as BENCH_<FLAG_IN_CAPS>\n`);
    for (const name of names) {
      process.stdout.write(
        `  --${name.padEnd(20)} ${flags[name].help} (default ${JSON.stringify(flags[name].default)})\n`,
      );
    }
    process.exit(0);
  }
  const given = values as Record<string, string | boolean | undefined>;
  const settings = {} as Record<F, string>;
  for (const name of names) {
    const value = given[name];
    const env = process.env[`BENCH_${name.toUpperCase().replaceAll("-", "_")}`];
    settings[name] = (typeof value === "string" ? value : undefined) ?? env ?? flags[name].default;
  }
  return settings;
}

/** A flag that must be a positive whole number. */
export function positiveInt<F extends string>(settings: Record<F, string>, name: F): number {
  const value = Number(settings[name]);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`--${name} must be a positive integer; got ${JSON.stringify(settings[name])}`);
  }
  return value;
}

/** Rows as columns padded to their widest cell, the first row a heading ruled off below. */
export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i] ?? 0, cell.length);
    });
  }
  const line = (row: string[]) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] ?? 0))
      .join("  ")
      .trimEnd();
  const [head, ...body] = rows;
  return [line(head ?? []), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The `p`th percentile (nearest rank) of `samples`; NaN when there are none. */
export function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] ?? Number.NaN;
}

/** What the figures were measured on: Node, OS, CPUs and memory, for the report's second line. */
export function machineLine(): string {
  const cpu = cpus();
  return (
    `node ${process.version} · ${platform()} ${arch()} · ${cpu.length} CPUs (available parallelism ${availableParallelism()}) · ` +
    `${cpu[0]?.model ?? "unknown CPU"} · ${(totalmem() / 2 ** 30).toFixed(1)} GiB RAM`
  );
}

/** The first lines of a report: what ran and when, the machine, and every setting but `--timeout`. */
export function heading<F extends string>(title: string, settings: Record<F, string>): string[] {
  const given = (Object.keys(settings) as F[]).filter((name) => name !== "timeout");
  return [
    `${title}, ${new Date().toISOString()}`,
    machineLine(),
    `settings: ${given.map((name) => `${name}=${settings[name]}`).join(" ")}`,
  ];
}

/**
 * What other processes took of the machine while the benchmark measured (a share of all
 * CPUs' time, null when unknown), with a warning above 5%: then the figures are disturbed.
 */
export function otherLoadNote(load: number | null): string {
  if (load === null) return "other processes' CPU use during the measurement: unknown (no /proc)";
  return (
    `other processes used ${(Math.max(0, load) * 100).toFixed(0)}% of the machine's CPU time during the measurement` +
    (load > 0.05 ? " — WARNING: the figures above are disturbed; run again on a quiet machine." : ".")
  );
}

/**
 * A module of test/support, e.g. `testSupport<typeof OidcIssuerModule>("oidc-issuer")`. It is
 * compiled in the test project (test/dist), which the benchmarks' output does not sit beside,
 * so its runtime path is resolved from here.
 */
export async function testSupport<M>(name: string): Promise<M> {
  return (await import(new URL(`../../test/dist/support/${name}.js`, import.meta.url).href)) as M;
}

/** Ends the process (exit 1) if the benchmark is still running after `seconds` (its `--timeout`). */
export function giveUpAfter(seconds: number): void {
  const watchdog = setTimeout(() => {
    process.stderr.write(`benchmark did not finish within ${seconds} s (--timeout); giving up\n`);
    process.exit(1);
  }, seconds * 1000);
  watchdog.unref();
}

/** Runs a benchmark's `main` and exits with its code, or 1 with the stack if it fails. */
export function run(main: () => Promise<number>): void {
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(
        `benchmark failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      );
      process.exit(1);
    },
  );
}
