/**
 * Policy evaluation: which rule of the pushed policies applies to a request, or to a tool call
 * in the model's answer.
 *
 * Policies are taken in order, and their rules in order; `flag` rules that match are recorded
 * and evaluation goes on; the first matching `allow`, `deny` or `require_approval` rule decides.
 * All the match fields a rule sets must hold; text fields are regular expressions (no flags)
 * searched in each candidate string.
 *
 * Cost: each distinct pattern is compiled once per `PolicySet`; per request, the prompt is
 * collected once (each distinct string once), only when a rule asks about it, and each pattern
 * is tested at most once against each distinct string, however many rules and fields share it.
 * The number of candidates is not capped, as a cap would let a client hide text behind padding;
 * the proxy's body size limit bounds the work instead. Patterns come from administrators, who
 * are trusted not to write ones that backtrack catastrophically.
 *
 * Pure code: no I/O.
 */
import type { Policy__Output, PolicyMatch__Output, PolicyRule__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import {
  FROM_ANYWHERE,
  FROM_SYSTEM,
  FROM_TOOL_RESULT,
  inputStrings,
  type PromptText,
  promptText,
  requestMaxTokens,
  requestModel,
  toolNames,
} from "./candidates.js";

/** What a rule does when it matches. */
export type PolicyAction = "allow" | "deny" | "require_approval" | "flag";

/** Whether a rule judges the request sent to the model, or the tool calls in its answer. */
export type PolicyStage = "request" | "response";

/** One rule that matched. */
export interface RuleHit {
  policy: string;
  rule: string;
  action: PolicyAction;
  stage: PolicyStage;
  message: string;
  /** Match field names that matched, in a fixed order (text, system, model, tool, toolInput, toolResult, maxTokensAbove). */
  matched: string[];
  /**
   * The strings that matched (each candidate string a text regex matched; model name; tool
   * name), without repeats, for approval memory and previews. Never logged.
   */
  pieces: string[];
}

/** The outcome of judging one request or one tool call. */
export interface Verdict {
  /** flag rules that matched before the decision (or all of them, when nothing decided). */
  flags: RuleHit[];
  /** The first allow / deny / require_approval rule that matched; null: allowed, nothing decisive matched. */
  decision: RuleHit | null;
}

/** The rules of a policy set that apply to one connection. */
export interface ConnectionPolicy {
  /** Whether any request rule applies at all (lets the proxy skip work). */
  readonly hasRequestRules: boolean;
  /** Whether any response rule applies at all (lets the proxy skip work). */
  readonly hasResponseRules: boolean;
  /**
   * Judges a Messages API request body (already `JSON.parse`d; may be any JSON: missing or odd
   * fields contribute nothing).
   *
   * `alreadyApproved(hit, piece)`: when given, a `require_approval` hit all of whose pieces are
   * already approved does not apply, and evaluation goes on to the next rule. A hit without
   * pieces (a rule on `maxTokensAbove` only, or one with no match fields) is never skipped,
   * since there is nothing to have approved.
   *
   * @see https://docs.anthropic.com/en/api/messages
   */
  judgeRequest(request: unknown, alreadyApproved?: (hit: RuleHit, piece: string) => boolean): Verdict;
  /**
   * Whether a response rule could apply to a call of this tool from this model (its tool and
   * model patterns allow it): the proxy holds a streamed tool_use block only then.
   */
  watchesToolCall(tool: string, model: string): boolean;
  /** Judges one tool call of the model's answer. `input` is the parsed input object. */
  judgeToolCall(call: { tool: string; input: unknown; model: string }): Verdict;
}

type MatchField = keyof PolicyMatch__Output;
type PatternField = Exclude<MatchField, "maxTokensAbove">;

const PATTERN_FIELDS = ["text", "system", "model", "tool", "toolInput", "toolResult"] as const;
const FIELDS_OF: Record<PolicyStage, ReadonlySet<MatchField>> = {
  request: new Set(["text", "system", "model", "tool", "toolResult", "maxTokensAbove"]),
  response: new Set(["model", "tool", "toolInput"]),
};
const ACTIONS: ReadonlySet<string> = new Set<PolicyAction>(["allow", "deny", "require_approval", "flag"]);

function isAction(value: string): value is PolicyAction {
  return ACTIONS.has(value);
}

/** A compiled pattern; `id` keys the per-evaluation memo, shared by every rule with the same source. */
interface Pattern {
  readonly id: number;
  readonly re: RegExp;
}

interface Rule {
  readonly policy: string;
  readonly rule: string;
  readonly action: PolicyAction;
  readonly stage: PolicyStage;
  readonly message: string;
  readonly text: Pattern | undefined;
  readonly system: Pattern | undefined;
  readonly model: Pattern | undefined;
  readonly tool: Pattern | undefined;
  readonly toolInput: Pattern | undefined;
  readonly toolResult: Pattern | undefined;
  /** 0: not matched on. */
  readonly maxTokensAbove: number;
}

interface CompiledPolicy {
  /** Empty: every connection. */
  readonly connections: ReadonlySet<string>;
  readonly rules: readonly Rule[];
}

function invalid(where: string, what: string): GatehouseError {
  return new GatehouseError("GATE_CONFIG_INVALID", `${where}: ${what}`);
}

function compileRule(
  policy: string,
  raw: PolicyRule__Output,
  index: number,
  pattern: (source: string, where: string, field: PatternField) => Pattern,
): Rule {
  const where = `policy '${policy}' rule '${raw.name}' (rules[${index}])`;
  if (raw.when !== "request" && raw.when !== "response") {
    throw invalid(
      where,
      `when must be "request" or "response", not ${JSON.stringify(raw.when.slice(0, 40))}`,
    );
  }
  const stage: PolicyStage = raw.when;
  const action = raw.action;
  if (!isAction(action)) {
    throw invalid(
      where,
      `action must be "allow", "deny", "require_approval" or "flag", not ${JSON.stringify(raw.action.slice(0, 40))}`,
    );
  }
  const match = raw.match;
  const allowed = FIELDS_OF[stage];
  const patterns: Partial<Record<PatternField, Pattern>> = {};
  for (const field of PATTERN_FIELDS) {
    const source = match?.[field] ?? "";
    if (source === "") continue;
    if (!allowed.has(field)) throw invalid(where, `match.${field} does not apply to ${stage} rules`);
    patterns[field] = pattern(source, where, field);
  }
  const maxTokensAbove = match?.maxTokensAbove ?? 0;
  if (!Number.isSafeInteger(maxTokensAbove) || maxTokensAbove < 0) {
    throw invalid(where, "match.maxTokensAbove must be a whole number of at least 0");
  }
  if (maxTokensAbove > 0 && !allowed.has("maxTokensAbove")) {
    throw invalid(where, `match.maxTokensAbove does not apply to ${stage} rules`);
  }
  return {
    policy,
    rule: raw.name,
    action,
    stage,
    message: raw.message,
    text: patterns.text,
    system: patterns.system,
    model: patterns.model,
    tool: patterns.tool,
    toolInput: patterns.toolInput,
    toolResult: patterns.toolResult,
    maxTokensAbove,
  };
}

/**
 * The policies pushed to this agent, compiled. Immutable: a new push compiles a new set.
 */
export class PolicySet {
  /** No policies: every request and tool call is allowed without a look. */
  static readonly empty: PolicySet = PolicySet.compile([]);

  readonly #policies: readonly CompiledPolicy[];
  readonly #byConnection = new Map<string, ConnectionPolicy>();

  private constructor(policies: readonly CompiledPolicy[]) {
    this.#policies = policies;
  }

  /**
   * Compiles the pushed policies. A rule that the control plane should have refused (unknown
   * `when` or `action`, a match field of the other stage, a pattern that does not compile) throws
   * GATE_CONFIG_INVALID naming the policy, rule and field; the pattern itself is never quoted, as
   * it may be written to match a secret.
   */
  static compile(policies: readonly Policy__Output[]): PolicySet {
    const patterns = new Map<string, Pattern>();
    const pattern = (source: string, where: string, field: PatternField): Pattern => {
      const known = patterns.get(source);
      if (known) return known;
      let re: RegExp;
      try {
        // No flags: without `g` or `y`, `test` keeps no lastIndex between calls.
        re = new RegExp(source);
      } catch {
        // The engine's message quotes the pattern.
        throw invalid(where, `match.${field} is not a valid JavaScript regular expression; check its syntax`);
      }
      const compiled = { id: patterns.size, re };
      patterns.set(source, compiled);
      return compiled;
    };
    return new PolicySet(
      policies.map((policy) => ({
        connections: new Set(policy.connections),
        rules: policy.rules.map((rule, index) => compileRule(policy.name, rule, index, pattern)),
      })),
    );
  }

  /**
   * The rules that apply to one connection: those of the policies that name it, or that name no
   * connection, in order. Kept per connection name; the names come from the agent's own
   * configuration, so the cache stays small.
   */
  forConnection(connection: string): ConnectionPolicy {
    let policy = this.#byConnection.get(connection);
    if (!policy) {
      const rules = this.#policies
        .filter((p) => p.connections.size === 0 || p.connections.has(connection))
        .flatMap((p) => p.rules);
      policy = new ConnectionRules(
        rules.filter((r) => r.stage === "request"),
        rules.filter((r) => r.stage === "response"),
      );
      this.#byConnection.set(connection, policy);
    }
    return policy;
  }
}

/** What a rule's fields found: the field names in fixed order, and the matched strings. */
interface Found {
  matched: string[];
  pieces: string[];
}

function hitOf(rule: Rule, found: Found): RuleHit {
  return {
    policy: rule.policy,
    rule: rule.rule,
    action: rule.action,
    stage: rule.stage,
    message: rule.message,
    matched: found.matched,
    pieces: found.pieces,
  };
}

/** Runs rules in order: flags accumulate, the first decisive match that is not skipped decides. */
function judge(
  rules: readonly Rule[],
  find: (rule: Rule) => Found | null,
  skip?: (hit: RuleHit) => boolean,
): Verdict {
  const flags: RuleHit[] = [];
  for (const rule of rules) {
    const found = find(rule);
    if (!found) continue;
    const hit = hitOf(rule, found);
    if (rule.action === "flag") {
      flags.push(hit);
      continue;
    }
    if (skip?.(hit)) continue;
    return { flags, decision: hit };
  }
  return { flags, decision: null };
}

/** Adds each field's pieces once, in field order. */
function collect(parts: ReadonlyArray<readonly [string, readonly string[] | undefined]>): Found {
  const matched: string[] = [];
  const pieces = new Set<string>();
  for (const [field, found] of parts) {
    if (!found) continue;
    matched.push(field);
    for (const piece of found) pieces.add(piece);
  }
  return { matched, pieces: [...pieces] };
}

const NONE: readonly string[] = [];

/**
 * One request under judgement: its parts are read only when a rule asks, and each pattern's
 * result on each prompt string is remembered, so rules and fields sharing a pattern cost one test.
 */
class RequestUnderJudgement {
  readonly #request: unknown;
  readonly model: string | undefined;
  readonly maxTokens: number | undefined;
  #prompt: PromptText | undefined;
  #tools: string[] | undefined;
  /** Per pattern id, per prompt string: 0 untested, 1 matches, 2 does not. */
  readonly #tested = new Map<number, Uint8Array>();
  /** Per pattern id and source set (`id * 8 + from`): the strings it matched. */
  readonly #found = new Map<number, readonly string[]>();
  readonly #toolsFound = new Map<number, readonly string[]>();

  constructor(request: unknown) {
    this.#request = request;
    this.model = requestModel(request);
    this.maxTokens = requestMaxTokens(request);
  }

  /** The prompt strings from `from` (FROM_* bits) that `pattern` matches. */
  prompt(pattern: Pattern, from: number): readonly string[] {
    const key = pattern.id * 8 + from;
    const known = this.#found.get(key);
    if (known) return known;
    this.#prompt ??= promptText(this.#request);
    const { strings, sources } = this.#prompt;
    let tested = this.#tested.get(pattern.id);
    if (!tested) {
      tested = new Uint8Array(strings.length);
      this.#tested.set(pattern.id, tested);
    }
    const found: string[] = [];
    for (let i = 0; i < strings.length; i++) {
      if (((sources[i] ?? 0) & from) === 0) continue;
      const text = strings[i] ?? "";
      let result = tested[i] ?? 0;
      if (result === 0) {
        result = pattern.re.test(text) ? 1 : 2;
        tested[i] = result;
      }
      if (result === 1) found.push(text);
    }
    this.#found.set(key, found);
    return found;
  }

  /** The offered tool names that `pattern` matches. */
  tools(pattern: Pattern): readonly string[] {
    const known = this.#toolsFound.get(pattern.id);
    if (known) return known;
    this.#tools ??= toolNames(this.#request);
    const found = this.#tools.filter((name) => pattern.re.test(name));
    this.#toolsFound.set(pattern.id, found);
    return found;
  }

  /** What `rule` finds in this request, or null when one of its fields does not hold. */
  find(rule: Rule): Found | null {
    // Cheap fields first, so a rule that cannot hold never walks the prompt.
    let maxTokens = false;
    if (rule.maxTokensAbove > 0) {
      if (this.maxTokens === undefined || !(this.maxTokens > rule.maxTokensAbove)) return null;
      maxTokens = true;
    }
    let model: readonly string[] | undefined;
    if (rule.model) {
      if (this.model === undefined || !rule.model.re.test(this.model)) return null;
      model = [this.model];
    }
    const tool = rule.tool && this.tools(rule.tool);
    if (tool?.length === 0) return null;
    const system = rule.system && this.prompt(rule.system, FROM_SYSTEM);
    if (system?.length === 0) return null;
    const toolResult = rule.toolResult && this.prompt(rule.toolResult, FROM_TOOL_RESULT);
    if (toolResult?.length === 0) return null;
    const text = rule.text && this.prompt(rule.text, FROM_ANYWHERE);
    if (text?.length === 0) return null;
    return collect([
      ["text", text],
      ["system", system],
      ["model", model],
      ["tool", tool],
      ["toolResult", toolResult],
      ["maxTokensAbove", maxTokens ? NONE : undefined],
    ]);
  }
}

/** One tool call under judgement; its input strings are gathered only when a rule asks. */
class ToolCallUnderJudgement {
  readonly #call: { tool: string; input: unknown; model: string };
  #strings: string[] | undefined;
  readonly #found = new Map<number, readonly string[]>();

  constructor(call: { tool: string; input: unknown; model: string }) {
    this.#call = call;
  }

  #input(pattern: Pattern): readonly string[] {
    const known = this.#found.get(pattern.id);
    if (known) return known;
    this.#strings ??= inputStrings(this.#call.input);
    const found = this.#strings.filter((value) => pattern.re.test(value));
    this.#found.set(pattern.id, found);
    return found;
  }

  find(rule: Rule): Found | null {
    const { tool, model } = this.#call;
    if (rule.tool && !rule.tool.re.test(tool)) return null;
    if (rule.model && !rule.model.re.test(model)) return null;
    const input = rule.toolInput && this.#input(rule.toolInput);
    if (input?.length === 0) return null;
    return collect([
      ["model", rule.model ? [model] : undefined],
      ["tool", rule.tool ? [tool] : undefined],
      ["toolInput", input],
    ]);
  }
}

class ConnectionRules implements ConnectionPolicy {
  readonly hasRequestRules: boolean;
  readonly hasResponseRules: boolean;
  readonly #request: readonly Rule[];
  readonly #response: readonly Rule[];

  constructor(request: readonly Rule[], response: readonly Rule[]) {
    this.#request = request;
    this.#response = response;
    this.hasRequestRules = request.length > 0;
    this.hasResponseRules = response.length > 0;
  }

  judgeRequest(request: unknown, alreadyApproved?: (hit: RuleHit, piece: string) => boolean): Verdict {
    if (!this.hasRequestRules) return { flags: [], decision: null };
    const subject = new RequestUnderJudgement(request);
    const skip =
      alreadyApproved &&
      ((hit: RuleHit) =>
        hit.action === "require_approval" &&
        hit.pieces.length > 0 &&
        hit.pieces.every((piece) => alreadyApproved(hit, piece)));
    return judge(this.#request, (rule) => subject.find(rule), skip);
  }

  watchesToolCall(tool: string, model: string): boolean {
    return this.#response.some(
      (rule) => (!rule.tool || rule.tool.re.test(tool)) && (!rule.model || rule.model.re.test(model)),
    );
  }

  judgeToolCall(call: { tool: string; input: unknown; model: string }): Verdict {
    if (!this.hasResponseRules) return { flags: [], decision: null };
    const subject = new ToolCallUnderJudgement(call);
    return judge(this.#response, (rule) => subject.find(rule));
  }
}
