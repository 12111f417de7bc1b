/**
 * What a policy may say, checked where it enters (the config file at start-up,
 * `PUT /v1/policies/{name}`), so that agents are only ever pushed policies they
 * can evaluate. Errors name the field; compiler messages are not repeated, since
 * they quote the pattern.
 */
import { z } from "zod";

export const POLICY_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/**
 * A JavaScript regular expression source, without flags, that compiles and cannot match empty
 * text; `emptyMessage` says why the latter matters where it is used. Compiler messages are not
 * repeated: they quote the pattern, which may itself be close to a secret.
 */
export function regexSource(emptyMessage: string) {
  return z
    .string()
    .min(1)
    .max(4096)
    .superRefine((source, ctx) => {
      let compiled: RegExp;
      try {
        compiled = new RegExp(source);
      } catch {
        ctx.addIssue({
          code: "custom",
          message: "not a valid JavaScript regular expression; check its syntax",
        });
        return;
      }
      if (compiled.test("")) ctx.addIssue({ code: "custom", message: emptyMessage });
    });
}

const pattern = regexSource(
  "matches empty text, so it would match everything; make it match at least one character",
);

/** The match fields each stage looks at; any other field is refused by name. */
const STAGE_FIELDS = {
  request: ["text", "system", "model", "tool", "toolResult", "maxTokensAbove"],
  response: ["tool", "toolInput", "model"],
} as const;

const match = z
  .strictObject({
    /** Request: all prompt text (system prompt, message text, tool_result content). */
    text: pattern.optional(),
    /** Request: the system prompt only. */
    system: pattern.optional(),
    /** The model asked for (request) or that answered (response). */
    model: pattern.optional(),
    /** Request: the name of any tool offered; response: the name of the tool called. */
    tool: pattern.optional(),
    /** Response: any string value in the tool call's input (a shell command, a file path). */
    toolInput: pattern.optional(),
    /** Request: the content of any tool_result block. */
    toolResult: pattern.optional(),
    /** Request: max_tokens greater than this. */
    maxTokensAbove: z.int().min(1).max(10_000_000).optional(),
  })
  .refine((m) => Object.values(m).some((v) => v !== undefined), "a rule must match on at least one field");

const rule = z
  .strictObject({
    /** Named in records, in approvals and in what the client is told. */
    name: z.string().regex(POLICY_NAME, "use lower-case letters, digits, '.', '_' and '-' (max 63)"),
    when: z.enum(["request", "response"]),
    match,
    action: z.enum(["allow", "deny", "require_approval", "flag"]),
    /** Told to the client on deny, and to approvers. */
    message: z.string().trim().min(1).max(1000).optional(),
  })
  .superRefine((r, ctx) => {
    const allowed: readonly string[] = STAGE_FIELDS[r.when];
    for (const field of Object.keys(r.match)) {
      if (allowed.includes(field)) continue;
      ctx.addIssue({
        code: "custom",
        path: ["match", field],
        message: `${r.when} rules match on ${allowed.join(", ")}; ${field} is matched in ${r.when === "request" ? "responses (the model's tool calls)" : "requests"}`,
      });
    }
  });

/** A policy without its name: the body of `PUT /v1/policies/{name}`. */
export const policyBody = z.strictObject({
  /** The connections it applies to; omitted: every connection. */
  connections: z.array(z.string().min(1)).min(1).optional(),
  rules: z
    .array(rule)
    .min(1, "a policy needs at least one rule")
    .max(200)
    .refine((rules) => new Set(rules.map((r) => r.name)).size === rules.length, "rule names must be unique"),
});

export const policySchema = policyBody.extend({
  name: z.string().regex(POLICY_NAME, "use lower-case letters, digits, '.', '_' and '-' (max 63)"),
});

export type PolicyBody = z.infer<typeof policyBody>;
export type PolicyConfig = z.infer<typeof policySchema>;
export type PolicyRuleConfig = PolicyConfig["rules"][number];
