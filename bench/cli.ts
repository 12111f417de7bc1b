/**
 * What the benchmarks share: command-line flags (`--name value`, or
 * `BENCH_<NAME>` in the environment with dashes as underscores, or the
 * default; `--help` lists them) and the plain-text table of their reports.
 */
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
