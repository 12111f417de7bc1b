/**
 * Reads a YAML configuration file and validates it against the schema of the
 * process being started: unknown keys are rejected by name, every problem is
 * listed with where it is, and the result is frozen.
 */
import { readFile } from "node:fs/promises";
import { parse as parseYaml } from "yaml";
import { z } from "zod";

/** Logging, common to every process: a level, and levels per component. */
export const logSchema = z
  .strictObject({
    /** trace | debug | info | warn | error | fatal | silent */
    level: z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]).default("info"),
    /** Per-component levels, e.g. { "agent.link": "debug" }. */
    components: z
      .record(z.string(), z.enum(["trace", "debug", "info", "warn", "error", "fatal", "silent"]))
      .default({}),
  })
  .default({ level: "info", components: {} });

export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

export async function loadConfig<S extends z.ZodType>(schema: S, file: string): Promise<z.infer<S>> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new ConfigError(
      `cannot read configuration file ${file}: ${(error as NodeJS.ErrnoException).code ?? error}`,
    );
  }
  let document: unknown;
  try {
    document = parseYaml(text);
  } catch (error) {
    throw new ConfigError(`configuration file ${file} is not valid YAML: ${(error as Error).message}`);
  }
  return validateConfig(schema, document, file);
}

export function validateConfig<S extends z.ZodType>(
  schema: S,
  document: unknown,
  source: string,
): z.infer<S> {
  const result = schema.safeParse(document ?? {});
  if (!result.success) {
    throw new ConfigError(`invalid configuration in ${source}:\n${z.prettifyError(result.error)}`);
  }
  return deepFreeze(result.data);
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
