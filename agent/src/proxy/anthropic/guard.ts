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

/** The most of what is held that approvers and the record are shown. */
const MAX_PREVIEW = 4096;

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
  return text.length <= MAX_PREVIEW ? text : `${text.slice(0, MAX_PREVIEW - 1)}…`;
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
  const verdict = policy.judgeRequest(request, (hit, piece) =>
    desk.wasApproved(sessionId, hit.policy, hit.rule, piece),
  );
  for (const flag of verdict.flags) recorder.decision(decisionEvent(flag));
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
  await approval(guard, hit, shown);
  desk.remember(sessionId, hit.policy, hit.rule, hit.pieces);
}

function denied(hit: RuleHit, what: string): GatehouseError {
  return new GatehouseError(
    "GATE_POLICY_DENIED",
    `${what} was denied by ${ruleName(hit)}${hit.message ? `: ${hit.message}` : ""}`,
  );
}

/**
 * Asks for approval and waits. Resolves when approved; otherwise throws the
 * error the client gets (or the stop signal's reason, when the exchange stopped).
 */
async function approval(guard: Guard, hit: RuleHit, shown: string, call?: ToolCall): Promise<void> {
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
      return;
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
  index: number;
  id: string;
  name: string;
  json: string;
}

/**
 * Holds streamed tool calls a response rule could apply to until they are
 * judged; wraps the masking rewriter, so what is judged and released is masked.
 */
export class ToolCallGate implements ResponseRewriter {
  /** Blocks held back, in order, from the start of the held call; empty when none is held. */
  private held: SseBlock[] = [];
  private call: HeldCall | null = null;

  constructor(
    private readonly inner: ResponseMasking,
    private readonly guard: Guard,
    /** The model the request asked for. */
    private readonly model: string,
  ) {}

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
      if (b.type !== "tool_use" || typeof b.name !== "string") continue;
      if (!this.guard.policy.watchesToolCall(b.name, model)) continue;
      await judgeToolCall(this.guard, { id: String(b.id ?? ""), name: b.name, input: b.input ?? {} }, model);
    }
    return masked;
  }

  /** Blocks to relay now; waits only when a held call's end arrives among them. */
  private pass(blocks: SseBlock[]): SseBlock[] | Promise<SseBlock[]> {
    const out: SseBlock[] = [];
    for (let i = 0; i < blocks.length; i++) {
      const block = blocks[i] as SseBlock;
      if (this.call === null) {
        const start = block.event === "content_block_start" ? this.toolStart(block) : null;
        if (start === null) {
          out.push(block);
          continue;
        }
        this.call = start;
        this.held = [block];
        continue;
      }
      this.held.push(block);
      if (block.event === "content_block_delta") this.collect(block);
      if (block.event === "content_block_stop" && indexOf(block) === this.call.index) {
        const rest = blocks.slice(i + 1);
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

  /** A tool call to hold, from its content_block_start; null when no rule could apply to it. */
  private toolStart(block: SseBlock): HeldCall | null {
    let start: { index?: unknown; content_block?: { type?: unknown; id?: unknown; name?: unknown } };
    try {
      start = JSON.parse(block.data) as typeof start;
    } catch {
      return null;
    }
    const cb = start.content_block;
    if (cb?.type !== "tool_use" || typeof cb.name !== "string" || typeof start.index !== "number")
      return null;
    if (!this.guard.policy.watchesToolCall(cb.name, this.model)) return null;
    return { index: start.index, id: String(cb.id ?? ""), name: cb.name, json: "" };
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
      // Cut off mid-input: judged on the text that arrived, as one string value.
      input = { partial_input: call.json };
    }
    await judgeToolCall(this.guard, { id: call.id, name: call.name, input }, this.model);
    const held = this.held;
    this.held = [];
    this.call = null;
    return held;
  }
}

function indexOf(block: SseBlock): number | undefined {
  try {
    const index = (JSON.parse(block.data) as { index?: unknown }).index;
    return typeof index === "number" ? index : undefined;
  } catch {
    return undefined;
  }
}
