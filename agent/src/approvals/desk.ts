/**
 * Where the proxy asks for human approval of what it holds. A question goes to
 * the control plane over the link; the answer comes back on the same link. The
 * desk fails closed: with the link down when it is asked, the answer is
 * `unavailable` at once; with no answer by the time the approval expires at the
 * control plane (plus a margin for the decision to travel), it is `expired`.
 * Questions still open when the link comes back are asked again (the control
 * plane stores each once and answers at once when it was decided meanwhile).
 *
 * It also remembers, per session, what was approved, so that an agent loop that
 * resends its whole history is not asked about the same text on every turn.
 */
import { createHash, randomUUID } from "node:crypto";
import type { AgentMessage, ApprovalDecision__Output, ApprovalRequest } from "@gatehouse/proto";

/** How the desk reaches the control plane (the link). */
export interface ApprovalChannel {
  /** Sends at once; false when the link is not ready (nothing was sent). */
  sendNow(message: AgentMessage): boolean;
}

export type ApprovalStatus = "approved" | "denied" | "expired" | "cancelled" | "unavailable";

export interface ApprovalAnswer {
  id: string;
  status: ApprovalStatus;
  decidedBy: string;
  reason: string;
}

/** Default {@link ApprovalDeskOptions.timeoutSeconds}: the control plane's default `approvals.timeoutSeconds`. */
export const DEFAULT_APPROVAL_TIMEOUT_SECONDS = 300;

/** How long after the control plane's expiry the desk waits for its word before deciding itself. */
export const DECISION_MARGIN_MS = 5000;

/** Sessions whose approvals are remembered, at most; the oldest is forgotten first. */
const REMEMBERED_SESSIONS = 1000;

export interface ApprovalDeskOptions {
  channel: ApprovalChannel;
  /** The control plane's `approvals.timeoutSeconds`, as last pushed (0: the default). */
  timeoutSeconds: () => number;
  /** Before {@link DECISION_MARGIN_MS}; for tests. */
  marginMs?: number;
}

interface Open {
  request: ApprovalRequest;
  resolve: (answer: ApprovalAnswer) => void;
  timer: NodeJS.Timeout;
}

export class ApprovalDesk {
  private readonly open = new Map<string, Open>();
  /** Per session: what was approved (policy, rule and a hash of the text) → the approval's id. */
  private readonly approved = new Map<string, Map<string, string>>();

  constructor(private readonly options: ApprovalDeskOptions) {}

  /** The link is back: asks again what is still open (a decision made meanwhile then arrives at once). */
  relinked(): void {
    for (const { request } of this.open.values()) this.options.channel.sendNow({ approvalRequest: request });
  }

  /** Questions waiting for an answer. */
  get waiting(): number {
    return this.open.size;
  }

  /**
   * Asks for approval. `answer` resolves with the answer and never rejects. When
   * `signal` aborts (the client left), the control plane is told and the answer is `cancelled`.
   */
  ask(
    question: Omit<ApprovalRequest, "id">,
    signal: AbortSignal,
  ): { id: string; answer: Promise<ApprovalAnswer> } {
    const id = randomUUID();
    return { id, answer: this.asked(id, question, signal) };
  }

  private asked(
    id: string,
    question: Omit<ApprovalRequest, "id">,
    signal: AbortSignal,
  ): Promise<ApprovalAnswer> {
    const request: ApprovalRequest = { ...question, id };
    const answer = (status: ApprovalStatus, reason: string): ApprovalAnswer => ({
      id,
      status,
      decidedBy: "agent",
      reason,
    });
    if (signal.aborted) return Promise.resolve(answer("cancelled", "the client went away"));
    if (!this.options.channel.sendNow({ approvalRequest: request })) {
      return Promise.resolve(
        answer(
          "unavailable",
          "this agent's link to the control plane is down, and requests that need approval fail closed; retry once the link is back (the agent's /readyz and log say why it is down)",
        ),
      );
    }
    const seconds = this.options.timeoutSeconds() || DEFAULT_APPROVAL_TIMEOUT_SECONDS;
    return new Promise((resolve) => {
      const finish = (a: ApprovalAnswer) => {
        const open = this.open.get(id);
        if (open === undefined) return;
        this.open.delete(id);
        clearTimeout(open.timer);
        signal.removeEventListener("abort", onAbort);
        resolve(a);
      };
      const onAbort = () => {
        this.options.channel.sendNow({ approvalCancel: { id } });
        finish(answer("cancelled", "the client went away"));
      };
      const timer = setTimeout(
        () => {
          // Nobody waits any more: the control plane is told, so approvers are not asked in vain.
          this.options.channel.sendNow({ approvalCancel: { id } });
          finish(
            answer(
              "expired",
              `no decision reached this agent within ${seconds} s (approvals.timeoutSeconds); the control plane was unreachable or no approver decided`,
            ),
          );
        },
        seconds * 1000 + (this.options.marginMs ?? DECISION_MARGIN_MS),
      );
      this.open.set(id, { request, resolve: finish, timer });
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A decision arrived from the control plane. */
  decided(decision: ApprovalDecision__Output): void {
    const open = this.open.get(decision.id);
    if (open === undefined) return;
    const status = (["approved", "denied", "expired", "cancelled", "unavailable"] as const).find(
      (s) => s === decision.status,
    );
    open.resolve({
      id: decision.id,
      // A status this agent does not know is not a yes.
      status: status ?? "denied",
      decidedBy: decision.decidedBy,
      reason: decision.reason,
    });
  }

  /** The approval that approved `piece` for this rule in this session, if one did. */
  approvalOf(sessionId: string, policy: string, rule: string, piece: string): string | undefined {
    return this.approved.get(sessionId)?.get(approvalKey(policy, rule, piece));
  }

  /** Remembers `pieces` as approved by `approvalId` for this rule in this session. */
  remember(
    sessionId: string,
    policy: string,
    rule: string,
    pieces: readonly string[],
    approvalId: string,
  ): void {
    let keys = this.approved.get(sessionId);
    if (keys === undefined) {
      if (this.approved.size >= REMEMBERED_SESSIONS) {
        const oldest = this.approved.keys().next();
        if (!oldest.done) this.approved.delete(oldest.value);
      }
      keys = new Map();
      this.approved.set(sessionId, keys);
    }
    for (const piece of pieces) keys.set(approvalKey(policy, rule, piece), approvalId);
  }
}

function approvalKey(policy: string, rule: string, piece: string): string {
  return createHash("sha256")
    .update(policy)
    .update("\0")
    .update(rule)
    .update("\0")
    .update(piece)
    .digest("base64");
}
