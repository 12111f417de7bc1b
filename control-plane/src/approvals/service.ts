/**
 * Human approvals. An agent holding a request (or a tool call) that a
 * `require_approval` rule matched asks over its link; the approval is stored,
 * audited and announced to the webhooks; approvers list and decide it over
 * REST; the decision goes back down the link of the agent that asked.
 *
 * Replicas: an agent's link ends at one replica, while an approver may decide
 * at any. The replica that holds the link remembers which of its agents asked
 * for what and looks in the store every {@link APPROVAL_POLL_MS} for decisions
 * made elsewhere; a decision made here is sent at once. Every replica also
 * expires overdue approvals (a conditional update, so only one does). An agent
 * that relinks, wherever, asks again for what it still holds; the stored
 * approval is found and, when decided, answered at once.
 */
import type { ApprovalDecision, ApprovalRequest__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import { inScope } from "../agents/scope.js";
import { type AuditLog, SYSTEM_ACTOR } from "../audit/log.js";
import type { Principal } from "../identity/api-keys.js";
import { Poll } from "../poll.js";
import type { ApprovalRecord, ApprovalStatus, Page, Store } from "../store/types.js";

/** How often this replica looks for decisions made at others, and for overdue approvals. */
export const APPROVAL_POLL_MS = 250;

/** The longest preview kept, in UTF-16 code units (agents send at most 64 Ki and a note of what they cut). */
const MAX_PREVIEW = 70_000;

/** The actor of approvals the agent gave up on (its client went away). */
const AGENT_ACTOR = "agent";

/** What is announced of a new pending approval. There is no preview: held content stays out of chat. */
export interface ApprovalNotice {
  id: string;
  connection: string;
  /** Who opened the session (an API key id, or `<issuer>#<sub>`). */
  requester: { kind: string; id: string };
  policy: string;
  rule: string;
  stage: "request" | "response";
  /** The rule's message. */
  message: string;
  /** Unix ms after which the approval is expired. */
  expiresAt: number;
}

/** Where a new pending approval is announced (webhooks). */
export interface ApprovalAnnouncer {
  notify(notice: ApprovalNotice): Promise<void>;
  /** Gives up on announcements under way. */
  stop(): void;
}

/** The link of the agent that asked: where its decision goes. */
export interface ApprovalLink {
  accountId: string;
  /** The account's scope; null: every connection. */
  connections: readonly string[] | null;
  send(decision: ApprovalDecision): void;
}

export interface ApprovalsDeps {
  store: Pick<
    Store,
    | "getSession"
    | "getApiKey"
    | "insertApproval"
    | "getApproval"
    | "getApprovals"
    | "listApprovals"
    | "decideApproval"
    | "expireApprovals"
  >;
  audit: AuditLog;
  announcer: ApprovalAnnouncer;
  timeoutSeconds: number;
  now: () => number;
  logger: Logger;
  pollMs?: number;
}

export class Approvals {
  /** Approvals asked for over links of this replica and not yet answered: id → the link. */
  private readonly waiting = new Map<string, ApprovalLink>();
  private readonly polling: Poll;

  constructor(private readonly deps: ApprovalsDeps) {
    this.polling = new Poll({
      everyMs: deps.pollMs ?? APPROVAL_POLL_MS,
      run: () => this.poll(),
      logger: deps.logger,
      failing:
        "cannot read approvals from the store; decisions made at other replicas and expiries wait until it is back",
      recovered: "reading approvals from the store again",
    });
  }

  get timeoutSeconds(): number {
    return this.deps.timeoutSeconds;
  }

  start(): void {
    this.polling.start();
  }

  async stop(): Promise<void> {
    this.deps.announcer.stop();
    await this.polling.stop();
  }

  /**
   * An agent asks. Answered on `link` now when the approval cannot be taken or
   * is already decided, else once it is decided. Never rejects: a failure is
   * answered as `unavailable`, so the agent fails the held request closed.
   */
  async ask(link: ApprovalLink, request: ApprovalRequest__Output): Promise<void> {
    const { store, now, logger } = this.deps;
    const refuse = (reason: string) => {
      this.waiting.delete(request.id);
      link.send({
        id: request.id,
        status: "unavailable",
        decidedBy: SYSTEM_ACTOR,
        reason,
        decidedAtUnixMs: now(),
      });
    };
    const problem = malformed(request);
    if (problem) return refuse(problem);
    // Waiting from before the approval can be visible: a decision made here the moment it is
    // stored goes out at once, and one made before this answer is sent only once (deliver).
    this.waiting.set(request.id, link);
    try {
      let approval = await store.getApproval(request.id);
      if (approval === null) {
        const session = await store.getSession(request.sessionId);
        if (session === null) return refuse(`the control plane has no session ${request.sessionId}`);
        if (session.connection !== request.connection || !inScope(link.connections, session.connection)) {
          return refuse(`session ${session.id} is not of a connection this agent may serve`);
        }
        const createdAt = now();
        approval = await store.insertApproval({
          id: request.id,
          sessionId: session.id,
          exchangeId: request.exchangeId,
          connection: session.connection,
          agentAccountId: link.accountId,
          requester: { kind: session.subject.kind, id: session.subject.id },
          policy: request.policy,
          rule: request.rule,
          stage: request.stage as ApprovalRecord["stage"],
          message: request.message,
          preview: request.preview.slice(0, MAX_PREVIEW),
          matched: [...request.matched],
          status: "pending",
          createdAt,
          expiresAt: createdAt + this.deps.timeoutSeconds * 1000,
          decidedAt: null,
          decidedBy: null,
          reason: null,
        });
        if (approval.createdAt === createdAt && approval.agentAccountId === link.accountId) {
          await this.announce(approval);
        }
      } else if (approval.agentAccountId !== link.accountId) {
        return refuse("that approval id was asked for by another agent");
      }
      if (approval.status !== "pending") this.deliver(approval);
    } catch (error) {
      logger.error({ err: error, approval: request.id }, "could not take an approval request");
      refuse("the control plane could not store the approval request (its log says why)");
    }
  }

  /** The agent's client went away: nobody waits for the decision any more. */
  async cancel(link: ApprovalLink, id: string): Promise<void> {
    this.waiting.delete(id);
    try {
      const approval = await this.deps.store.getApproval(id);
      if (approval?.status !== "pending" || approval.agentAccountId !== link.accountId) return;
      await this.deps.audit.record(AGENT_ACTOR, "approval.cancel", id, { sessionId: approval.sessionId });
      await this.deps.store.decideApproval(id, {
        status: "cancelled",
        decidedAt: this.deps.now(),
        decidedBy: AGENT_ACTOR,
        reason: "the client of the held request went away",
      });
    } catch (error) {
      this.deps.logger.warn({ err: error, approval: id }, "could not mark an approval cancelled");
    }
  }

  /** A link ended: its agent asks again, wherever it relinks. */
  forget(link: ApprovalLink): void {
    for (const [id, l] of this.waiting) if (l === link) this.waiting.delete(id);
  }

  list(filter: { status?: ApprovalStatus; limit: number; cursor?: string }): Promise<Page<ApprovalRecord>> {
    return this.deps.store.listApprovals(filter);
  }

  async get(id: string): Promise<ApprovalRecord> {
    const approval = await this.deps.store.getApproval(id);
    if (approval === null) throw notFound();
    return approval;
  }

  /**
   * An approver decides. Refused for the requester themself (the session's
   * subject, or a sign-in of the same person), and once decided or expired.
   */
  async decide(
    approver: Principal,
    id: string,
    verdict: "approved" | "denied",
    reason: string,
  ): Promise<ApprovalRecord> {
    const { store, audit, now } = this.deps;
    const approval = await this.get(id);
    if (approval.status === "pending" && approval.expiresAt <= now()) await this.expireDue();
    const current = approval.status === "pending" ? await this.get(id) : approval;
    if (current.status !== "pending") throw alreadyDecided(current);
    const approverIds = await this.identities(approver.id);
    const requesterIds = await this.identities(current.requester.id);
    if (approverIds.some((a) => requesterIds.includes(a))) {
      throw new GatehouseError(
        "GATE_FORBIDDEN",
        `approval ${id} was asked for by a session you opened; another approver must decide it`,
      );
    }
    await audit.record(approver.id, verdict === "approved" ? "approval.approve" : "approval.deny", id, {
      sessionId: current.sessionId,
      policy: current.policy,
      rule: current.rule,
      reason,
    });
    const decided = await store.decideApproval(id, {
      status: verdict,
      decidedAt: now(),
      decidedBy: approver.id,
      reason,
    });
    if (decided === null) throw notFound();
    if (decided.decidedBy !== approver.id || decided.status !== verdict) throw alreadyDecided(decided);
    this.deliver(decided);
    return decided;
  }

  /** A key id, with the person behind it when it is a sign-in's key. */
  private async identities(id: string): Promise<string[]> {
    const key = await this.deps.store.getApiKey(id);
    return key?.kind === "login" ? [id, key.createdBy] : [id];
  }

  private async announce(approval: ApprovalRecord): Promise<void> {
    await this.deps.audit.record(approval.requester.id, "approval.request", approval.id, {
      sessionId: approval.sessionId,
      connection: approval.connection,
      policy: approval.policy,
      rule: approval.rule,
      stage: approval.stage,
    });
    // Webhooks are told in the background: a slow chat service must not hold the agent's link.
    void this.deps.announcer.notify({
      id: approval.id,
      connection: approval.connection,
      requester: approval.requester,
      policy: approval.policy,
      rule: approval.rule,
      stage: approval.stage,
      message: approval.message,
      expiresAt: approval.expiresAt,
    });
  }

  private deliver(approval: ApprovalRecord): void {
    const link = this.waiting.get(approval.id);
    if (link === undefined) return;
    this.waiting.delete(approval.id);
    link.send(decisionOf(approval));
  }

  private async expireDue(): Promise<void> {
    const expired = await this.deps.store.expireApprovals(
      this.deps.now(),
      `no approver decided within ${this.deps.timeoutSeconds} s (approvals.timeoutSeconds)`,
    );
    for (const approval of expired) {
      await this.deps.audit.record(SYSTEM_ACTOR, "approval.expire", approval.id, {
        sessionId: approval.sessionId,
        policy: approval.policy,
        rule: approval.rule,
      });
      this.deliver(approval);
    }
  }

  /** Expires what is overdue, then passes on decisions made at other replicas. */
  async poll(): Promise<void> {
    await this.expireDue();
    if (this.waiting.size === 0) return;
    for (const approval of await this.deps.store.getApprovals([...this.waiting.keys()])) {
      if (approval.status !== "pending") this.deliver(approval);
    }
  }
}

function decisionOf(approval: ApprovalRecord): ApprovalDecision {
  return {
    id: approval.id,
    status: approval.status,
    decidedBy: approval.decidedBy ?? "",
    reason: approval.reason ?? "",
    decidedAtUnixMs: approval.decidedAt ?? 0,
  };
}

function malformed(r: ApprovalRequest__Output): string | null {
  if (!/^[0-9a-f-]{36}$/i.test(r.id)) return "an approval request needs a UUID id";
  if (r.stage !== "request" && r.stage !== "response")
    return "an approval request's stage is request or response";
  if (!r.sessionId || !r.exchangeId || !r.policy || !r.rule) {
    return "an approval request needs its session, exchange, policy and rule";
  }
  return null;
}

function notFound(): GatehouseError {
  return new GatehouseError("GATE_NOT_FOUND", "no approval has that id; GET /v1/approvals lists them");
}

function alreadyDecided(approval: ApprovalRecord): GatehouseError {
  const by = approval.status === "expired" ? "" : ` by ${approval.decidedBy}`;
  return new GatehouseError(
    "GATE_CONFLICT",
    `approval ${approval.id} is already ${approval.status}${by}; a decision cannot be changed`,
  );
}
