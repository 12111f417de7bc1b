/**
 * Which rule, if any, lets a runner's verified token open a session for a
 * connection. Pure: the claims come from a token that was already verified.
 */
import type { RunnerRule } from "../config.js";

/** A rule, with its globs compiled once. */
export interface CompiledRule {
  name: string;
  rule: RunnerRule;
  match: ReadonlyArray<{ claim: string; regexes: readonly RegExp[] }>;
}

export type RuleDecision =
  | { allowed: true; rule: CompiledRule }
  /** `reason` says, per rule, why it did not apply: fit to show the runner. */
  | { allowed: false; reason: string };

/**
 * A claim glob as a regular expression over the whole value: `**` matches
 * anything, `*` anything but `/`, `?` one character but `/`; everything else is literal.
 */
export function globToRegExp(glob: string): RegExp {
  let source = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === "*" && glob[i + 1] === "*") {
      source += ".*";
      i++;
    } else if (c === "*") source += "[^/]*";
    else if (c === "?") source += "[^/]";
    else source += c.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`, "s");
}

export function compileRules(rules: readonly RunnerRule[]): CompiledRule[] {
  return rules.map((rule, i) => ({
    name: rule.name ?? `rule ${i + 1}`,
    rule,
    match: Object.entries(rule.match).map(([claim, pattern]) => {
      const patterns = typeof pattern === "string" ? [pattern] : pattern;
      return { claim, regexes: patterns.map(globToRegExp) };
    }),
  }));
}

/** A claim's values as text: strings, numbers and booleans; each element of an array. */
function claimValues(value: unknown): string[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((v) => ["string", "number", "boolean"].includes(typeof v)).map(String);
}

/** Long claim values are cut in refusals; the start says enough to tell them apart. */
const shown = (value: string) => JSON.stringify(value.length > 120 ? `${value.slice(0, 120)}…` : value);

/** Why `rule` does not match `claims`, or null when it does. */
function mismatch(rule: CompiledRule, claims: Readonly<Record<string, unknown>>): string | null {
  for (const { claim, regexes } of rule.match) {
    const values = claimValues(claims[claim]);
    if (values.length === 0) return `the token has no ${claim} claim`;
    // The token's own value, not the patterns: whoever holds any token of the issuer must
    // not learn the rule set (organisations, workflow paths, environments) from refusals.
    if (!values.some((v) => regexes.some((r) => r.test(v)))) {
      return `${claim} ${values.map(shown).join(", ")} does not match`;
    }
  }
  return null;
}

/**
 * The first rule that matches `claims` and lists `connection`. When none does,
 * the reason names each rule and what kept it from applying.
 */
export function decide(
  rules: readonly CompiledRule[],
  claims: Readonly<Record<string, unknown>>,
  connection: string,
): RuleDecision {
  const reasons: string[] = [];
  for (const rule of rules) {
    const why =
      mismatch(rule, claims) ??
      (rule.rule.connections.includes(connection) ? null : `it does not allow '${connection}'`);
    if (why === null) return { allowed: true, rule };
    reasons.push(`${rule.name}: ${why}`);
  }
  return { allowed: false, reason: reasons.join("; ") };
}
