/**
 * Policies on the Anthropic path. Request rules judge the Messages request
 * before it goes upstream; response rules judge each `tool_use` block of the
 * model's answer before the client gets it. A streamed tool call is held from
 * its `content_block_start` to its `content_block_stop` (only when some rule
 * could apply to that tool), then released, refused with an Anthropic `error`
 * event that ends the stream, or held on while an approver decides. Text and
 * every other block pass at once. Every rule that matches is recorded as a
 * decision event; matched text never is (it is in the recorded request, or, for
 * a refused tool call, in the decision's masked preview).
 *
 * @see https://docs.anthropic.com/en/api/messages-streaming
 */
import type { PolicyDecision } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { ApprovalDesk } from "../../approvals/desk.js";
import type { Masker } from "../../masking/masker.js";
import type { ConnectionPolicy, RuleHit } from "../../policy/policy.js";
import type { ResponseRewriter } from "../forward.js";
import type { ExchangeRecorder } from "../recorder.js";
import type { SseBlock } from "../sse.js";
import type { ResponseMasking } from "./masking.js";

/**
 * The most of what is held that approvers and the record are shown (64 KiB): enough for any
 * command or ordinary file write; beyond it, the preview says how much is not shown.
 */
export const MAX_PREVIEW = 64 * 1024;

/** What judging one exchange needs. */
export interface Guard {
  policy: ConnectionPolicy;
  desk: ApprovalDesk;
  recorder: ExchangeRecorder;
  connection: string;
  /** Masks previews: approvers see what the client would, never a secret the masker knows. */
  masker: Masker;
  /** Aborted when the exchange stops (client gone, session closed): a wait for approval ends with it. */
  stopped: AbortSignal;
}

interface ToolCall {
  id: string;
  name: string;
  input: unknown;
}

function preview(text: string): string {
  if (text.length <= MAX_PREVIEW) return text;
  return `${text.slice(0, MAX_PREVIEW)}… [${text.length - MAX_PREVIEW} more characters not shown: deny unless what is shown is enough to judge]`;
}

function decisionEvent(hit: RuleHit, call?: ToolCall, shown?: string): PolicyDecision {
  return {
    policy: hit.policy,
    rule: hit.rule,
    action: hit.action,
    stage: hit.stage,
    message: hit.message,
    matched: hit.matched,
    ...(call ? { toolUseId: call.id, toolName: call.name, preview: shown ?? "" } : {}),
  };
}

/** Who and what, for the client: `policy 'ci-default', rule 'no-curl-sh'`. */
function ruleName(hit: RuleHit): string {
  return `policy '${hit.policy}', rule '${hit.rule}'`;
}

/**
 * Judges a Messages request (its parsed body). Resolves when it may go upstream;
 * throws GatehouseError when a rule denies it or its approval is not given.
 */
export async function judgeRequest(guard: Guard, request: unknown): Promise<void> {
  const { policy, desk, recorder } = guard;
  if (!policy.hasRequestRules) return;
  const sessionId = recorder.sessionId;
  // Rules whose matching text was all approved earlier in the session: recorded as such.
  const remembered = new Map<string, { hit: RuleHit; approvalId: string }>();
  const unapproved = new Set<string>();
  const verdict = policy.judgeRequest(request, (hit, piece) => {
    const key = `${hit.policy}\0${hit.rule}`;
    const approvalId = desk.approvalOf(sessionId, hit.policy, hit.rule, piece);
    if (approvalId === undefined) unapproved.add(key);
    else remembered.set(key, { hit, approvalId });
    return approvalId !== undefined;
  });
  for (const flag of verdict.flags) recorder.decision(decisionEvent(flag));
  for (const [key, { hit, approvalId }] of remembered) {
    if (unapproved.has(key)) continue;
    recorder.decision({
      ...decisionEvent(hit),
      approvalId,
      approvalStatus: "approved",
      reason: "the same text was approved earlier in this session",
    });
  }
  const hit = verdict.decision;
  if (hit === null) return;
  if (hit.action === "allow") {
    recorder.decision(decisionEvent(hit));
    return;
  }
  if (hit.action === "deny") {
    recorder.decision(decisionEvent(hit));
    throw denied(hit, "the request");
  }
  const shown = preview(guard.masker.mask(hit.pieces.join("\n…\n")).text);
  const approvalId = await approval(guard, hit, shown);
  desk.remember(sessionId, hit.policy, hit.rule, hit.pieces, approvalId);
}

function denied(hit: RuleHit, what: string): GatehouseError {
  return new GatehouseError(
    "GATE_POLICY_DENIED",
    `${what} was denied by ${ruleName(hit)}${hit.message ? `: ${hit.message}` : ""}`,
  );
}

/**
 * Asks for approval and waits. Resolves with the approval's id when approved; otherwise throws
 * the error the client gets (or the stop signal's reason, when the exchange stopped).
 */
async function approval(guard: Guard, hit: RuleHit, shown: string, call?: ToolCall): Promise<string> {
  const { desk, recorder, stopped } = guard;
  const { id, answer } = desk.ask(
    {
      sessionId: recorder.sessionId,
      exchangeId: recorder.exchangeId,
      connection: guard.connection,
      policy: hit.policy,
      rule: hit.rule,
      stage: hit.stage,
      message: hit.message,
      preview: shown,
      matched: hit.matched,
    },
    stopped,
  );
  recorder.decision({ ...decisionEvent(hit, call, shown), approvalId: id, approvalStatus: "pending" });
  const a = await answer;
  recorder.decision({
    ...decisionEvent(hit, call, shown),
    approvalId: id,
    approvalStatus: a.status,
    decidedBy: a.decidedBy,
    reason: a.reason,
  });
  const what = call ? `the tool call ${call.name} (${call.id})` : "the request";
  switch (a.status) {
    case "approved":
      return id;
    case "denied":
      throw new GatehouseError(
        "GATE_APPROVAL_DENIED",
        `${what} needed approval under ${ruleName(hit)} and was denied by ${a.decidedBy}: ${a.reason}`,
      );
    case "expired":
      throw new GatehouseError(
        "GATE_APPROVAL_EXPIRED",
        `${what} needed approval under ${ruleName(hit)} (approval ${id}), which expired: ${a.reason}. Ask an approver to watch \`gatehouse approvals list\`, then retry`,
      );
    case "cancelled":
      throw stopped.reason instanceof GatehouseError
        ? stopped.reason
        : new GatehouseError(
            "GATE_CLIENT_GONE",
            "the client went away while the request waited for approval",
          );
    default:
      throw new GatehouseError(
        "GATE_APPROVAL_UNAVAILABLE",
        `${what} needs approval under ${ruleName(hit)}, which could not be asked for: ${a.reason}`,
      );
  }
}

/** Judges one tool call of the answer; resolves when the client may have it. */
async function judgeToolCall(guard: Guard, call: ToolCall, model: string): Promise<void> {
  const verdict = guard.policy.judgeToolCall({ tool: call.name, input: call.input, model });
  const hits = verdict.decision ? [...verdict.flags, verdict.decision] : verdict.flags;
  if (hits.length === 0) return;
  // The input as the client would get it: masked already, since masking runs first.
  const shown = preview(`${call.name} ${JSON.stringify(call.input)}`);
  for (const flag of verdict.flags) guard.recorder.decision(decisionEvent(flag, call, shown));
  const hit = verdict.decision;
  if (hit === null) return;
  if (hit.action === "allow") {
    guard.recorder.decision(decisionEvent(hit, call, shown));
    return;
  }
  if (hit.action === "deny") {
    guard.recorder.decision(decisionEvent(hit, call, shown));
    throw denied(hit, `the tool call ${call.name} (${call.id})`);
  }
  await approval(guard, hit, shown, call);
}

interface HeldCall {
  /** The block's `index` as sent (any JSON value): its deltas and stop carry the same. */
  index: unknown;
  id: string;
  name: string;
  json: string;
}

/**
 * Holds streamed tool calls a response rule could apply to until they are
 * judged; wraps the masking rewriter, so what is judged and released is masked.
 * Fails closed on odd streams: a tool call whose start cannot be read is held
 * and judged on what arrives, a new tool call while one is held first ends the
 * held one (it is judged), and a stream that ends inside a held call is judged
 * on what arrived.
 */
export class ToolCallGate implements ResponseRewriter {
  /** Blocks held back, in order, from the start of the held call; empty when none is held. */
  private held: SseBlock[] = [];
  private call: HeldCall | null = null;
  /** The model that answers (from `message_start`), else the one asked for. */
  private model: string;

  constructor(
    private readonly inner: ResponseMasking,
    private readonly guard: Guard,
    /** The model the request asked for. */
    model: string,
  ) {
    this.model = model;
  }

  event(block: SseBlock): SseBlock[] | Promise<SseBlock[]> {
    return this.pass(this.inner.event(block));
  }

  async endOfEvents(): Promise<SseBlock[]> {
    const rest = this.pass(this.inner.endOfEvents());
    const out = Array.isArray(rest) ? rest : await rest;
    // A stream cut off inside a held call: judged on what arrived, then released.
    if (this.call !== null) out.push(...(await this.release()));
    return out;
  }

  rewritesBody(contentType: string): boolean {
    return this.inner.rewritesBody(contentType);
  }

  async body(body: Buffer): Promise<Buffer> {
    const masked = this.inner.body(body);
    let message: { content?: unknown; model?: unknown };
    try {
      message = JSON.parse(masked.toString("utf8")) as typeof message;
    } catch {
      return masked;
    }
    const model = typeof message.model === "string" ? message.model : this.model;
    for (const block of Array.isArray(message.content) ? message.content : []) {
      const b = block as { type?: unknown; id?: unknown; name?: unknown; input?: unknown };
      if (b.type !== "tool_use") continue;
      const name = typeof b.name === "string" ? b.name : "";
      if (!this.guard.policy.watchesToolCall(name, model)) continue;
      await judgeToolCall(this.guard, { id: String(b.id ?? ""), name, input: b.input ?? {} }, model);
    }
    return masked;
  }

  /** Blocks to relay now; waits only when a held call ends among them. */
  private pass(blocks: SseBlock[]): SseBlock[] | Promise<SseBlock[]> {
    const out: SseBlock[] = [];
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i] as SseBlock;
      if (block.event === "message_start") this.answeringModel(block);
      const start = block.event === "content_block_start" ? this.toolStart(block) : null;
      if (this.call === null) {
        if (start === null) {
          out.push(block);
        } else {
          this.call = start;
          this.held = [block];
        }
        continue;
      }
      // Another tool call begins while one is held (its stop never came): the held one ends here.
      const ends =
        start !== null || (block.event === "content_block_stop" && sameIndex(block, this.call.index));
      if (start === null) {
        this.held.push(block);
        if (block.event === "content_block_delta") this.collect(block);
      }
      if (ends) {
        const rest = blocks.slice(start === null ? i + 1 : i);
        return this.release().then(async (released) => {
          out.push(...released);
          const more = this.pass(rest);
          out.push(...(Array.isArray(more) ? more : await more));
          return out;
        });
      }
    }
    return out;
  }

  private answeringModel(block: SseBlock): void {
    try {
      const model = (JSON.parse(block.data) as { message?: { model?: unknown } }).message?.model;
      if (typeof model === "string" && model !== "") this.model = model;
    } catch {
      // Not JSON: the model asked for stays.
    }
  }

  /**
   * A tool call to hold, from a content_block_start; null when it is no tool call, or no rule
   * could apply to it. A start that cannot be parsed but names tool_use is held (fail closed).
   */
  private toolStart(block: SseBlock): HeldCall | null {
    let start: {
      index?: unknown;
      content_block?: { type?: unknown; id?: unknown; name?: unknown; input?: unknown };
    };
    try {
      start = JSON.parse(block.data) as typeof start;
    } catch {
      return block.data.includes("tool_use")
        ? { index: undefined, id: "", name: "", json: block.data }
        : null;
    }
    const cb = start.content_block;
    if (cb?.type !== "tool_use") return null;
    const name = typeof cb.name === "string" ? cb.name : "";
    if (!this.guard.policy.watchesToolCall(name, this.model)) return null;
    // Anthropic starts with an empty input and streams it; an input given up front is judged too.
    const given = cb.input !== undefined && JSON.stringify(cb.input) !== "{}" ? JSON.stringify(cb.input) : "";
    return { index: start.index, id: String(cb.id ?? ""), name, json: given };
  }

  private collect(block: SseBlock): void {
    try {
      const event = JSON.parse(block.data) as {
        index?: unknown;
        delta?: { type?: unknown; partial_json?: unknown };
      };
      if (
        this.call !== null &&
        event.index === this.call.index &&
        event.delta?.type === "input_json_delta" &&
        typeof event.delta.partial_json === "string"
      ) {
        this.call.json += event.delta.partial_json;
      }
    } catch {
      // Not JSON: nothing of the input in it.
    }
  }

  /** Judges the held call (throws when it is refused) and hands back what was held. */
  private async release(): Promise<SseBlock[]> {
    const call = this.call as HeldCall;
    let input: unknown;
    try {
      input = call.json === "" ? {} : JSON.parse(call.json);
    } catch {
      // Cut off mid-input, or not JSON: judged on the text that arrived, as one string value.
      input = { partial_input: call.json };
    }
    await judgeToolCall(this.guard, { id: call.id, name: call.name, input }, this.model);
    const held = this.held;
    this.held = [];
    this.call = null;
    return held;
  }
}

/** Whether a block's `index` is the one given (compared as JSON values, so "0" is not 0). */
function sameIndex(block: SseBlock, index: unknown): boolean {
  try {
    return (JSON.parse(block.data) as { index?: unknown }).index === index;
  } catch {
    return false;
  }
}
