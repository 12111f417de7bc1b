import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  type ConnectionPolicy,
  type PolicyAction,
  PolicySet,
  type PolicyStage,
  type RuleHit,
} from "@gatehouse/agent/policy/policy.js";
import type { Policy__Output, PolicyMatch__Output, PolicyRule__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import fc from "fast-check";

// ---- building policies as the agent receives them (proto3 defaults: "" and 0 mean unset) ----

function rule(
  name: string,
  when: PolicyStage,
  match: Partial<PolicyMatch__Output>,
  action: PolicyAction,
  message = `${name} matched`,
): PolicyRule__Output {
  return {
    name,
    when,
    action,
    message,
    match: {
      text: "",
      system: "",
      model: "",
      tool: "",
      toolInput: "",
      toolResult: "",
      maxTokensAbove: 0,
      ...match,
    },
  };
}

function policy(name: string, rules: PolicyRule__Output[], connections: string[] = []): Policy__Output {
  return { name, connections, rules };
}

function on(policies: Policy__Output[], connection = "claude"): ConnectionPolicy {
  return PolicySet.compile(policies).forConnection(connection);
}

/** The one rule, as a request rule, judged against `request`: its decision, or null. */
function requestHit(match: Partial<PolicyMatch__Output>, request: unknown): RuleHit | null {
  return on([policy("p", [rule("r", "request", match, "deny")])]).judgeRequest(request).decision;
}

function toolHit(
  match: Partial<PolicyMatch__Output>,
  call: { tool: string; input: unknown; model: string },
): RuleHit | null {
  return on([policy("p", [rule("r", "response", match, "deny")])]).judgeToolCall(call).decision;
}

/** A request of an agent loop: system prompt, tools, a tool call and its result. */
const REQUEST = {
  model: "claude-sonnet-4-5",
  max_tokens: 1024,
  system: [{ type: "text", text: "You are the deploy bot." }],
  tools: [
    { name: "bash", input_schema: { type: "object" } },
    { name: "read_file", input_schema: { type: "object" } },
  ],
  messages: [
    { role: "user", content: "please deploy to prod" },
    {
      role: "assistant",
      content: [
        { type: "thinking", thinking: "the user wants prod", signature: "sig" },
        { type: "text", text: "Reading the env file." },
        { type: "tool_use", id: "toolu_1", name: "read_file", input: { path: "secrets.env" } },
      ],
    },
    {
      role: "user",
      content: [
        {
          type: "tool_result",
          tool_use_id: "toolu_1",
          content: [
            { type: "text", text: "API_KEY=abc123" },
            { type: "image", source: { type: "base64", media_type: "image/png", data: "UElORw==" } },
          ],
        },
        { type: "text", text: "what next?" },
      ],
    },
  ],
};

describe("request rules: each match field", () => {
  test("text searches the system prompt, message text and tool_result text", () => {
    assert.deepEqual(requestHit({ text: "deploy bot" }, REQUEST)?.pieces, ["You are the deploy bot."]);
    assert.deepEqual(requestHit({ text: "prod" }, REQUEST)?.pieces, ["please deploy to prod"]);
    assert.deepEqual(requestHit({ text: "env file" }, REQUEST)?.pieces, ["Reading the env file."]);
    assert.deepEqual(requestHit({ text: "API_KEY=" }, REQUEST)?.pieces, ["API_KEY=abc123"]);
    assert.deepEqual(requestHit({ text: "deploy" }, REQUEST)?.matched, ["text"]);
  });

  // Regression: plain-text documents and search results reach the model as text too; a key
  // pasted into one must not slip past a `text` rule.
  test("text searches plain-text documents and search results, in messages and tool results", () => {
    const request = {
      messages: [
        {
          role: "user",
          content: [
            { type: "document", source: { type: "text", media_type: "text/plain", data: "KEY-IN-DOC" } },
            {
              type: "document",
              source: { type: "content", content: [{ type: "text", text: "KEY-IN-PARTS" }] },
            },
            { type: "document", source: { type: "base64", media_type: "application/pdf", data: "S0VZ" } },
            {
              type: "tool_result",
              tool_use_id: "toolu_1",
              content: [
                {
                  type: "search_result",
                  source: "s",
                  title: "t",
                  content: [{ type: "text", text: "KEY-IN-RESULT" }],
                },
              ],
            },
          ],
        },
      ],
    };
    assert.deepEqual(requestHit({ text: "KEY-IN" }, request)?.pieces, [
      "KEY-IN-DOC",
      "KEY-IN-PARTS",
      "KEY-IN-RESULT",
      "KEY-IN-DOCKEY-IN-PARTS",
    ]);
    assert.deepEqual(requestHit({ toolResult: "KEY-IN" }, request)?.pieces, ["KEY-IN-RESULT"]);
  });

  // Regression (review): a key cut across two text blocks, put in an earlier tool call's input, a
  // document's title or a tool's description reached the model past a `text` deny rule.
  test("text searches what else the model reads: joined adjacent blocks, earlier tool calls, titles, tool descriptions", () => {
    const split = {
      system: [
        { type: "text", text: "BEGIN PRIV" },
        { type: "text", text: "ATE KEY" },
      ],
      tools: [{ name: "t", description: "use KEY-IN-TOOL", input_schema: {} }],
      messages: [
        {
          role: "user",
          content: [
            { type: "text", text: "-----BEGIN OPENSSH PRIV" },
            { type: "text", text: "ATE KEY-----" },
            { type: "document", title: "KEY-IN-TITLE", source: { type: "base64", data: "eA==" } },
          ],
        },
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "t1", name: "bash", input: { command: "cat KEY-IN-CALL" } }],
        },
      ],
    };
    assert.deepEqual(requestHit({ text: "BEGIN [A-Z ]*PRIVATE KEY" }, split)?.pieces, [
      "BEGIN PRIVATE KEY",
      "-----BEGIN OPENSSH PRIVATE KEY-----KEY-IN-TITLE",
    ]);
    assert.deepEqual(requestHit({ system: "PRIVATE" }, split)?.pieces, ["BEGIN PRIVATE KEY"]);
    for (const where of ["KEY-IN-TOOL", "KEY-IN-TITLE", "KEY-IN-CALL"]) {
      assert.ok(requestHit({ text: where }, split), where);
    }
  });

  test("text does not search thinking, images, tool names or the model", () => {
    for (const text of ["the user wants", "UElORw", "read_file", "sonnet"]) {
      assert.equal(requestHit({ text }, REQUEST), null, text);
    }
  });

  test("text pieces are every prompt string it matched, each once", () => {
    const resent = { ...REQUEST, messages: [...REQUEST.messages, { role: "user", content: "what next?" }] };
    assert.deepEqual(requestHit({ text: "e" }, resent)?.pieces, [
      "You are the deploy bot.",
      "please deploy to prod",
      "Reading the env file.",
      "secrets.env",
      "what next?",
    ]);
  });

  test("system searches only the system prompt, as a string or as text blocks", () => {
    assert.ok(requestHit({ system: "deploy bot" }, REQUEST));
    assert.equal(requestHit({ system: "prod" }, REQUEST), null);
    assert.deepEqual(requestHit({ system: "^Be brief" }, { system: "Be brief.", messages: [] })?.pieces, [
      "Be brief.",
    ]);
    assert.deepEqual(requestHit({ system: "x" }, { system: "x", messages: [] })?.matched, ["system"]);
  });

  test("toolResult searches only tool_result content, as a string or as text blocks", () => {
    assert.deepEqual(requestHit({ toolResult: "API_KEY" }, REQUEST)?.pieces, ["API_KEY=abc123"]);
    assert.equal(requestHit({ toolResult: "prod|deploy|next" }, REQUEST), null);
    const stringResult = {
      messages: [{ role: "user", content: [{ type: "tool_result", tool_use_id: "t", content: "exit 0" }] }],
    };
    assert.deepEqual(requestHit({ toolResult: "exit" }, stringResult)?.matched, ["toolResult"]);
  });

  test("model matches the model asked for, and is its piece", () => {
    const hit = requestHit({ model: "sonnet" }, REQUEST);
    assert.deepEqual(hit?.matched, ["model"]);
    assert.deepEqual(hit?.pieces, ["claude-sonnet-4-5"]);
    assert.equal(requestHit({ model: "opus" }, REQUEST), null);
    assert.equal(requestHit({ model: ".*" }, { messages: [] }), null);
  });

  test("tool matches the name of any offered tool; the matching names are its pieces", () => {
    assert.deepEqual(requestHit({ tool: "^bash$" }, REQUEST)?.pieces, ["bash"]);
    assert.deepEqual(requestHit({ tool: "a" }, REQUEST)?.pieces, ["bash", "read_file"]);
    assert.equal(requestHit({ tool: "^write" }, REQUEST), null);
    assert.equal(requestHit({ tool: ".*" }, { ...REQUEST, tools: undefined }), null);
  });

  test("maxTokensAbove matches when max_tokens is strictly greater; it has no piece", () => {
    const hit = requestHit({ maxTokensAbove: 1000 }, REQUEST);
    assert.deepEqual(hit?.matched, ["maxTokensAbove"]);
    assert.deepEqual(hit?.pieces, []);
    assert.equal(requestHit({ maxTokensAbove: 1024 }, REQUEST), null);
    assert.equal(requestHit({ maxTokensAbove: 1 }, { ...REQUEST, max_tokens: "4096" }), null);
  });

  test("all the fields a rule sets must hold", () => {
    assert.equal(requestHit({ text: "prod", model: "opus" }, REQUEST), null);
    assert.equal(requestHit({ text: "prod", maxTokensAbove: 5000 }, REQUEST), null);
    const hit = requestHit({ text: "prod", model: "sonnet" }, REQUEST);
    assert.deepEqual(hit?.matched, ["text", "model"]);
    assert.deepEqual(hit?.pieces, ["please deploy to prod", "claude-sonnet-4-5"]);
  });

  test("matched fields are listed in the fixed order, whatever the rule", () => {
    const hit = requestHit(
      {
        maxTokensAbove: 10,
        toolResult: "API",
        tool: "bash",
        model: "claude",
        system: "bot",
        text: "bot",
      },
      REQUEST,
    );
    assert.deepEqual(hit?.matched, ["text", "system", "model", "tool", "toolResult", "maxTokensAbove"]);
    assert.deepEqual(hit?.pieces, ["You are the deploy bot.", "claude-sonnet-4-5", "bash", "API_KEY=abc123"]);
  });

  test("a rule without match fields applies to every request", () => {
    const hit = requestHit({}, { messages: [] });
    assert.deepEqual(hit && { matched: hit.matched, pieces: hit.pieces }, { matched: [], pieces: [] });
  });

  test("a hit carries its policy, rule, action, stage and message", () => {
    const set = on([policy("ci", [rule("keys", "request", { text: "API_KEY" }, "deny", "No keys.")])]);
    assert.deepEqual(set.judgeRequest(REQUEST).decision, {
      policy: "ci",
      rule: "keys",
      action: "deny",
      stage: "request",
      message: "No keys.",
      matched: ["text"],
      pieces: ["API_KEY=abc123"],
    });
  });
});

describe("response rules: each match field", () => {
  const call = {
    tool: "bash",
    model: "claude-opus-4-1",
    input: { command: "rm -rf /", options: { env: ["HOME=/root", { cwd: "/srv" }] }, timeout: 30 },
  };

  test("tool matches the name of the tool called", () => {
    const hit = toolHit({ tool: "^bash$" }, call);
    assert.deepEqual(hit?.matched, ["tool"]);
    assert.deepEqual(hit?.pieces, ["bash"]);
    assert.equal(toolHit({ tool: "^read" }, call), null);
  });

  test("toolInput searches every string value at any depth, not keys or numbers", () => {
    assert.deepEqual(toolHit({ toolInput: "^rm " }, call)?.pieces, ["rm -rf /"]);
    assert.deepEqual(toolHit({ toolInput: "^/srv$" }, call)?.pieces, ["/srv"]);
    assert.deepEqual(toolHit({ toolInput: "/" }, call)?.pieces, ["rm -rf /", "HOME=/root", "/srv"]);
    for (const key of ["command", "cwd", "30"]) assert.equal(toolHit({ toolInput: key }, call), null, key);
    assert.deepEqual(toolHit({ toolInput: "x" }, { ...call, input: "xyz" })?.pieces, ["xyz"]);
  });

  test("model matches the model that answered", () => {
    assert.deepEqual(toolHit({ model: "opus" }, call)?.pieces, ["claude-opus-4-1"]);
    assert.equal(toolHit({ model: "haiku" }, call), null);
  });

  test("all fields must hold, and are listed in the fixed order", () => {
    assert.equal(toolHit({ tool: "bash", toolInput: "^ls" }, call), null);
    assert.equal(toolHit({ model: "haiku", toolInput: "rm" }, call), null);
    const hit = toolHit({ toolInput: "rm", tool: "bash", model: "opus" }, call);
    assert.deepEqual(hit?.matched, ["model", "tool", "toolInput"]);
    assert.deepEqual(hit?.pieces, ["claude-opus-4-1", "bash", "rm -rf /"]);
  });

  test("request rules do not judge tool calls, nor response rules requests", () => {
    const set = on([
      policy("p", [rule("req", "request", {}, "deny"), rule("res", "response", { tool: "bash" }, "flag")]),
    ]);
    assert.equal(set.judgeRequest(REQUEST).decision?.rule, "req");
    assert.deepEqual(set.judgeRequest(REQUEST).flags, []);
    const verdict = set.judgeToolCall(call);
    assert.equal(verdict.decision, null);
    assert.deepEqual(
      verdict.flags.map((f) => f.rule),
      ["res"],
    );
  });

  // A model can be steered into emitting deeply nested input; the walk must not overflow the stack.
  test("input nested far deeper than the call stack is still searched", () => {
    let input: unknown = "the needle";
    for (let i = 0; i < 200_000; i++) input = i % 2 === 0 ? [input] : { next: input };
    assert.deepEqual(toolHit({ toolInput: "needle" }, { ...call, input })?.pieces, ["the needle"]);
  });
});

describe("evaluation order", () => {
  const matching = { text: "deploy" };
  const missing = { text: "no such text" };

  test("the first decisive rule across policies wins; flags before it are kept", () => {
    const set = on([
      policy("first", [
        rule("note", "request", matching, "flag"),
        rule("unrelated", "request", missing, "deny"),
        rule("ok", "request", matching, "allow"),
      ]),
      policy("second", [
        rule("no", "request", matching, "deny"),
        rule("later-note", "request", matching, "flag"),
      ]),
    ]);
    const verdict = set.judgeRequest(REQUEST);
    assert.equal(verdict.decision?.rule, "ok");
    assert.equal(verdict.decision?.action, "allow");
    assert.deepEqual(
      verdict.flags.map((f) => f.rule),
      ["note"],
    );
  });

  test("flags accumulate and do not stop evaluation; all of them are kept when nothing decides", () => {
    const set = on([
      policy("a", [rule("f1", "request", matching, "flag"), rule("f2", "request", missing, "flag")]),
      policy("b", [
        rule("f3", "request", { model: "sonnet" }, "flag"),
        rule("d", "request", missing, "deny"),
      ]),
    ]);
    const verdict = set.judgeRequest(REQUEST);
    assert.equal(verdict.decision, null);
    assert.deepEqual(
      verdict.flags.map((f) => `${f.policy}/${f.rule}`),
      ["a/f1", "b/f3"],
    );
  });

  test("rule order within a policy decides: deny before allow denies", () => {
    const denyFirst = on([
      policy("p", [rule("no", "request", matching, "deny"), rule("yes", "request", matching, "allow")]),
    ]);
    assert.equal(denyFirst.judgeRequest(REQUEST).decision?.action, "deny");
    const approvalFirst = on([
      policy("p", [
        rule("ask", "request", matching, "require_approval"),
        rule("no", "request", matching, "deny"),
      ]),
    ]);
    assert.equal(approvalFirst.judgeRequest(REQUEST).decision?.action, "require_approval");
  });

  test("tool calls follow the same order", () => {
    const set = on([
      policy("p", [
        rule("seen", "response", { tool: "bash" }, "flag"),
        rule("ask", "response", { toolInput: "rm" }, "require_approval"),
        rule("no", "response", { tool: "bash" }, "deny"),
      ]),
    ]);
    const verdict = set.judgeToolCall({ tool: "bash", input: { command: "rm x" }, model: "m" });
    assert.equal(verdict.decision?.rule, "ask");
    assert.deepEqual(
      verdict.flags.map((f) => f.rule),
      ["seen"],
    );
    assert.equal(
      set.judgeToolCall({ tool: "bash", input: { command: "ls" }, model: "m" }).decision?.rule,
      "no",
    );
  });
});

describe("connection scoping", () => {
  const set = PolicySet.compile([
    policy("claude-only", [rule("c", "request", {}, "deny")], ["claude"]),
    policy("everyone", [rule("e", "response", {}, "flag")]),
    policy("two", [rule("t", "request", {}, "flag")], ["claude", "bedrock"]),
  ]);

  test("a policy applies to the connections it names, or to all when it names none", () => {
    const claude = set.forConnection("claude").judgeRequest(REQUEST);
    assert.equal(claude.decision?.rule, "c");
    const bedrock = set.forConnection("bedrock").judgeRequest(REQUEST);
    assert.equal(bedrock.decision, null);
    assert.deepEqual(
      bedrock.flags.map((f) => f.rule),
      ["t"],
    );
    const other = set.forConnection("other");
    assert.equal(other.hasRequestRules, false);
    assert.equal(other.hasResponseRules, true);
    assert.deepEqual(other.judgeRequest(REQUEST), { flags: [], decision: null });
  });

  test("hasRequestRules and hasResponseRules say whether any rule of the stage applies", () => {
    assert.equal(set.forConnection("claude").hasRequestRules, true);
    assert.equal(set.forConnection("claude").hasResponseRules, true);
    assert.equal(PolicySet.empty.forConnection("claude").hasRequestRules, false);
    assert.equal(PolicySet.empty.forConnection("claude").hasResponseRules, false);
  });

  test("with no policies, everything is allowed", () => {
    const none = PolicySet.empty.forConnection("claude");
    assert.deepEqual(none.judgeRequest(REQUEST), { flags: [], decision: null });
    assert.deepEqual(none.judgeToolCall({ tool: "bash", input: {}, model: "m" }), {
      flags: [],
      decision: null,
    });
    assert.equal(none.watchesToolCall("bash", "m"), false);
  });
});

describe("approval memory", () => {
  const set = on([
    policy("p", [
      rule("ask", "request", { text: "prod|API_KEY" }, "require_approval"),
      rule("big", "request", { maxTokensAbove: 100_000 }, "require_approval"),
      rule("after", "request", { text: "deploy" }, "deny"),
    ]),
  ]);

  test("a require_approval hit whose pieces are all approved does not apply; the next rule decides", () => {
    const approved = new Set(["please deploy to prod", "API_KEY=abc123"]);
    const seen: string[] = [];
    const verdict = set.judgeRequest(REQUEST, (hit, piece) => {
      seen.push(`${hit.rule}:${piece}`);
      return approved.has(piece);
    });
    assert.equal(verdict.decision?.rule, "after");
    assert.deepEqual(seen, ["ask:please deploy to prod", "ask:API_KEY=abc123"]);
  });

  test("one new unapproved piece asks again, naming every piece", () => {
    const approved = new Set(["please deploy to prod"]);
    const verdict = set.judgeRequest(REQUEST, (_hit, piece) => approved.has(piece));
    assert.equal(verdict.decision?.rule, "ask");
    assert.deepEqual(verdict.decision?.pieces, ["please deploy to prod", "API_KEY=abc123"]);
  });

  // An agent loop resends its history: an approved prompt must not be asked about on every turn,
  // but a new matching message in the next turn must be.
  test("an agent loop that resends approved history is not asked again until new matching text", () => {
    const approved = new Set<string>();
    const remember = (_hit: RuleHit, piece: string) => approved.has(piece);
    const first = set.judgeRequest({ messages: [{ role: "user", content: "prod status?" }] }, remember);
    assert.equal(first.decision?.rule, "ask");
    for (const piece of first.decision?.pieces ?? []) approved.add(piece);
    const history = [
      { role: "user", content: "prod status?" },
      { role: "assistant", content: "All green." },
    ];
    const second = set.judgeRequest(
      { messages: [...history, { role: "user", content: "thanks" }] },
      remember,
    );
    assert.equal(second.decision, null);
    const third = set.judgeRequest(
      { messages: [...history, { role: "user", content: "restart prod" }] },
      remember,
    );
    assert.deepEqual(third.decision?.pieces, ["prod status?", "restart prod"]);
  });

  test("without pieces there is nothing approved, so the rule applies every time", () => {
    const verdict = set.judgeRequest({ max_tokens: 200_000, messages: [] }, () => true);
    assert.equal(verdict.decision?.rule, "big");
  });

  test("approval memory never skips deny or allow rules, nor applies without a callback", () => {
    const deny = on([policy("p", [rule("no", "request", { text: "prod" }, "deny")])]);
    assert.equal(deny.judgeRequest(REQUEST, () => true).decision?.rule, "no");
    assert.equal(set.judgeRequest(REQUEST).decision?.rule, "ask");
  });
});

describe("malformed requests", () => {
  const set = on([
    policy("p", [
      rule("text", "request", { text: "." }, "flag"),
      rule("system", "request", { system: "." }, "flag"),
      rule("result", "request", { toolResult: "." }, "flag"),
      rule("tool", "request", { tool: "." }, "flag"),
      rule("model", "request", { model: "." }, "flag"),
      rule("tokens", "request", { maxTokensAbove: 1 }, "flag"),
      rule("always", "request", {}, "deny"),
    ]),
  ]);
  const shapes: Array<[string, unknown]> = [
    ["null", null],
    ["undefined", undefined],
    ["a number", 42],
    ["a string", "deploy"],
    ["an array", [{ messages: [{ role: "user", content: "x" }] }]],
    ["an empty object", {}],
    ["no messages", { model: 5, system: 7, tools: "bash", max_tokens: "9000" }],
    ["messages not an array", { messages: { 0: { role: "user", content: "x" } } }],
    [
      "content not a string or array",
      { messages: [null, 1, "x", { content: 5 }, { content: { text: "x" } }] },
    ],
    [
      "odd blocks",
      {
        messages: [
          {
            role: "user",
            content: [
              null,
              7,
              "text",
              { type: "text" },
              { type: "text", text: 5 },
              { text: "no type" },
              { type: "tool_result", content: { text: "x" } },
              { type: "tool_result", content: [null, { type: "text", text: 3 }, { type: "image" }] },
            ],
          },
        ],
      },
    ],
    [
      "odd system and tools",
      { system: [null, { text: "no type" }, { type: "text" }], tools: [null, { name: 5 }] },
    ],
    ["empty strings", { system: "", messages: [{ role: "user", content: "" }] }],
  ];
  for (const [what, request] of shapes) {
    test(`${what}: no field matches and the rule without fields still decides`, () => {
      const verdict = set.judgeRequest(request);
      assert.deepEqual(verdict.flags, []);
      assert.equal(verdict.decision?.rule, "always");
    });
  }

  test("odd tool call input is searched for what strings it has", () => {
    const res = on([policy("p", [rule("r", "response", { toolInput: "." }, "deny")])]);
    for (const input of [null, undefined, 5, true, [], {}, [null, [7]]]) {
      assert.equal(res.judgeToolCall({ tool: "t", input, model: "m" }).decision, null);
    }
  });
});

describe("compiling", () => {
  function compileError(policies: Policy__Output[]): GatehouseError {
    try {
      PolicySet.compile(policies);
    } catch (error) {
      assert.ok(error instanceof GatehouseError);
      assert.equal(error.code, "GATE_CONFIG_INVALID");
      return error;
    }
    assert.fail("compiled");
  }

  test("a pattern that does not compile is named by policy, rule and field, and not quoted", () => {
    const cases: Array<[PolicyStage, keyof PolicyMatch__Output]> = [
      ["request", "text"],
      ["request", "system"],
      ["request", "model"],
      ["request", "tool"],
      ["request", "toolResult"],
      ["response", "toolInput"],
      ["response", "tool"],
      ["response", "model"],
    ];
    for (const [stage, field] of cases) {
      const bad = rule("keys", stage, { [field]: "(sk-live-0123" }, "deny");
      const error = compileError([policy("ci", [rule("fine", stage, {}, "flag"), bad])]);
      assert.match(error.message, /policy 'ci' rule 'keys' \(rules\[1\]\)/);
      assert.ok(
        error.message.includes(`match.${field} is not a valid JavaScript regular expression`),
        error.message,
      );
      assert.ok(!error.message.includes("sk-live"), error.message);
    }
  });

  test("a match field of the other stage is refused by name", () => {
    for (const field of ["text", "system", "toolResult"] as const) {
      const error = compileError([policy("p", [rule("r", "response", { [field]: "x" }, "deny")])]);
      assert.ok(error.message.includes(`match.${field} does not apply to response rules`), error.message);
    }
    const tokens = compileError([policy("p", [rule("r", "response", { maxTokensAbove: 9 }, "deny")])]);
    assert.ok(tokens.message.includes("match.maxTokensAbove does not apply to response rules"));
    const input = compileError([policy("p", [rule("r", "request", { toolInput: "x" }, "deny")])]);
    assert.ok(input.message.includes("match.toolInput does not apply to request rules"));
  });

  test("an unknown stage or action is refused by name", () => {
    const when = compileError([
      { name: "p", connections: [], rules: [{ ...rule("r", "request", {}, "deny"), when: "" }] },
    ]);
    assert.ok(when.message.includes("when must be"), when.message);
    const action = compileError([
      { name: "p", connections: [], rules: [{ ...rule("r", "request", {}, "deny"), action: "block" }] },
    ]);
    assert.ok(action.message.includes('action must be "allow"'), action.message);
  });

  test("a rule whose match is absent applies to every exchange of its stage", () => {
    const set = on([
      { name: "p", connections: [], rules: [{ ...rule("r", "request", {}, "deny"), match: null }] },
    ]);
    assert.equal(set.judgeRequest({}).decision?.rule, "r");
  });

  test("patterns take no flags: a pattern is case-sensitive and its test keeps no state", () => {
    const set = on([policy("p", [rule("r", "request", { text: "Prod" }, "deny")])]);
    assert.equal(set.judgeRequest(REQUEST).decision, null);
    const shared = on([
      policy("p", [
        rule("a", "request", { text: "x" }, "flag"),
        rule("b", "request", { system: "x" }, "flag"),
      ]),
    ]);
    for (let i = 0; i < 3; i++) {
      const verdict = shared.judgeRequest({ system: "x", messages: [{ role: "user", content: "x" }] });
      assert.deepEqual(
        verdict.flags.map((f) => f.rule),
        ["a", "b"],
      );
    }
  });
});

describe("watchesToolCall", () => {
  const set = PolicySet.compile([
    policy("p", [
      rule("shell", "response", { tool: "^bash$", model: "opus" }, "deny"),
      rule("prompt", "request", { tool: "^write$" }, "deny"),
    ]),
    policy("files", [rule("paths", "response", { toolInput: "/etc/" }, "require_approval")], ["files-only"]),
  ]);

  test("a tool call is watched only when a response rule's tool and model patterns allow it", () => {
    const claude = set.forConnection("claude");
    assert.equal(claude.watchesToolCall("bash", "claude-opus-4-1"), true);
    assert.equal(claude.watchesToolCall("bash", "claude-sonnet-4-5"), false);
    assert.equal(claude.watchesToolCall("write", "claude-opus-4-1"), false);
  });

  test("a rule on tool input alone watches every tool call", () => {
    assert.equal(set.forConnection("files-only").watchesToolCall("anything", "any-model"), true);
  });
});

// ---- properties ----

/** An oracle independent of the code under test: each text string of a request, with its place. */
interface Candidate {
  text: string;
  from: "system" | "message" | "toolResult";
}

const alphabet = fc.constantFrom("a", "b", "(", "*", "\\", ".", "$", "\n");
const piece = fc.string({ unit: alphabet, maxLength: 8 });
/** Short, so that it often occurs in some piece and both sides of "iff" are exercised. */
const literal = fc.string({ unit: alphabet, minLength: 1, maxLength: 3 });

const textBlock = piece.map((text) => ({ type: "text", text }));
const toolResultBlock = fc
  .oneof(piece, fc.array(fc.oneof(textBlock, fc.constant({ type: "image" }))))
  .map((content) => ({ type: "tool_result", tool_use_id: "t", content }));
const otherBlock = fc.oneof(
  piece.map((data) => ({ type: "image", source: { type: "base64", data } })),
  piece.map((command) => ({ type: "tool_use", id: "t", name: "bash", input: { command } })),
  piece.map((thinking) => ({ type: "thinking", thinking })),
);
const message = fc.record({
  role: fc.constantFrom("user", "assistant"),
  content: fc.oneof(piece, fc.array(fc.oneof(textBlock, toolResultBlock, otherBlock), { maxLength: 4 })),
});
const request = fc.record(
  {
    system: fc.oneof(piece, fc.array(textBlock, { maxLength: 3 })),
    messages: fc.array(message, { maxLength: 6 }),
  },
  { requiredKeys: ["messages"] },
);

type ArbitraryRequest = { system?: string | Array<{ text: string }>; messages: Array<{ content: unknown }> };

function candidates(req: ArbitraryRequest): Candidate[] {
  const out: Candidate[] = [];
  /** Each text, and, when there are several, their join: how the model reads adjacent blocks. */
  const push = (texts: string[], from: Candidate["from"]) => {
    for (const text of texts) out.push({ text, from });
    if (texts.length > 1) out.push({ text: texts.join(""), from });
  };
  if (typeof req.system === "string") out.push({ text: req.system, from: "system" });
  else
    push(
      (req.system ?? []).map((b) => b.text),
      "system",
    );
  for (const { content } of req.messages) {
    if (typeof content === "string") {
      out.push({ text: content, from: "message" });
      continue;
    }
    const texts: string[] = [];
    for (const block of content as Array<{
      type: string;
      text?: string;
      content?: unknown;
      input?: { command: string };
    }>) {
      if (block.type === "text") texts.push(block.text ?? "");
      if (block.type === "tool_use") out.push({ text: block.input?.command ?? "", from: "message" });
      if (block.type !== "tool_result") continue;
      if (typeof block.content === "string") out.push({ text: block.content, from: "toolResult" });
      else {
        const parts = (block.content as Array<{ type: string; text?: string }>)
          .filter((part) => part.type === "text")
          .map((part) => part.text ?? "");
        push(parts, "toolResult");
      }
    }
    push(texts, "message");
  }
  return out;
}

function escapeRegExp(literal: string): string {
  return literal.replace(/[\\^$.*+?()[\]{}|/]/g, "\\$&");
}

function sorted(values: Iterable<string>): string[] {
  return [...new Set(values)].sort();
}

/** JSON values whose strings and keys come from the same small alphabet, so literals often occur. */
const json = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small" },
    piece,
    fc.integer(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 3 }),
    fc.dictionary(piece, tie("value"), { maxKeys: 3 }),
  ),
}));

describe("properties", () => {
  test("a text, system or toolResult rule on an escaped literal matches iff the literal is in a candidate of its place", () => {
    fc.assert(
      fc.property(request, literal, (req, needle) => {
        const source = escapeRegExp(needle);
        const set = on([
          policy("p", [
            rule("text", "request", { text: source }, "flag"),
            rule("system", "request", { system: source }, "flag"),
            rule("toolResult", "request", { toolResult: source }, "flag"),
          ]),
        ]);
        const verdict = set.judgeRequest(req);
        const all = candidates(req).filter((c) => c.text.includes(needle));
        const expected: Record<string, string[]> = {
          text: sorted(all.map((c) => c.text)),
          system: sorted(all.filter((c) => c.from === "system").map((c) => c.text)),
          toolResult: sorted(all.filter((c) => c.from === "toolResult").map((c) => c.text)),
        };
        for (const [name, pieces] of Object.entries(expected)) {
          const flag = verdict.flags.find((f) => f.rule === name);
          assert.equal(flag !== undefined, pieces.length > 0, name);
          if (flag) assert.deepEqual(sorted(flag.pieces), pieces, name);
        }
      }),
      { numRuns: 500 },
    );
  });

  test("a toolInput rule on an escaped literal matches iff the literal is in a string value at any depth", () => {
    const strings = (value: unknown): string[] =>
      typeof value === "string"
        ? [value]
        : typeof value === "object" && value !== null
          ? Object.values(value).flatMap(strings)
          : [];
    fc.assert(
      fc.property(json.value, literal, (input, needle) => {
        const set = on([policy("p", [rule("r", "response", { toolInput: escapeRegExp(needle) }, "deny")])]);
        const hit = set.judgeToolCall({ tool: "t", input, model: "m" }).decision;
        const expected = sorted(strings(input).filter((s) => s.includes(needle)));
        assert.equal(hit !== null, expected.length > 0);
        if (hit) assert.deepEqual(sorted(hit.pieces), expected);
      }),
      { numRuns: 500 },
    );
  });

  test("the verdict is the first matching decisive rule, with the matching flags before it", () => {
    const ruleSpec = fc.record({
      action: fc.constantFrom<PolicyAction>("allow", "deny", "require_approval", "flag"),
      hits: fc.boolean(),
    });
    fc.assert(
      fc.property(fc.array(fc.array(ruleSpec, { maxLength: 4 }), { maxLength: 4 }), (policies) => {
        const set = on(
          policies.map((rules, p) =>
            policy(
              `p${p}`,
              rules.map((r, i) =>
                rule(`r${i}`, "request", { text: r.hits ? "^hello$" : "^goodbye$" }, r.action),
              ),
            ),
          ),
        );
        const verdict = set.judgeRequest({ messages: [{ role: "user", content: "hello" }] });
        const flat = policies.flatMap((rules, p) => rules.map((r, i) => ({ ...r, id: `p${p}/r${i}` })));
        const decisive = flat.findIndex((r) => r.hits && r.action !== "flag");
        const before = decisive === -1 ? flat : flat.slice(0, decisive);
        assert.equal(
          verdict.decision && `${verdict.decision.policy}/${verdict.decision.rule}`,
          decisive === -1 ? null : flat[decisive]?.id,
        );
        assert.deepEqual(
          verdict.flags.map((f) => `${f.policy}/${f.rule}`),
          before.filter((r) => r.hits && r.action === "flag").map((r) => r.id),
        );
      }),
      { numRuns: 300 },
    );
  });

  test("any JSON value as a request body is judged without throwing", () => {
    const set = on([
      policy("p", [
        rule("a", "request", { text: "a", tool: "." }, "flag"),
        rule("b", "request", { system: ".", model: "." }, "flag"),
        rule("c", "request", { toolResult: ".", maxTokensAbove: 1 }, "deny"),
      ]),
    ]);
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          fc.record({ system: fc.jsonValue(), messages: fc.jsonValue(), tools: fc.jsonValue() }),
          fc.record({ messages: fc.array(fc.record({ content: fc.array(fc.jsonValue()) })) }),
        ),
        (body) => {
          const verdict = set.judgeRequest(body, () => false);
          assert.ok(Array.isArray(verdict.flags));
        },
      ),
      { numRuns: 300 },
    );
  });
});
