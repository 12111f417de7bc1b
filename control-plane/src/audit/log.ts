/**
 * The audit log: every administrative change (agent accounts and API keys
 * made and revoked, sign-ins, sessions closed, records purged, signing keys
 * rotated, policies set, approvals asked for and decided) is served at
 * `GET /v1/audit`. An entry is written before its change is made, so no change
 * is ever unaudited: if the entry cannot be written the change is not made,
 * and a change that fails after its entry leaves an entry for the attempt,
 * which the caller's retry completes. Purges, whose sessions are known only
 * once removed, are written right after each batch.
 */
import { v7 as uuidv7 } from "uuid";
import type { AuditRecord, Page, Store } from "../store/types.js";

/** What an entry says was done. */
export type AuditAction =
  | "agent.create"
  | "agent.revoke"
  | "api-key.create"
  | "api-key.revoke"
  | "approval.request"
  | "approval.approve"
  | "approval.deny"
  | "approval.expire"
  | "approval.cancel"
  | "auth.login"
  | "policy.set"
  | "policy.delete"
  | "session.close"
  | "sessions.purge"
  | "signing.rotate";

/** The actor of changes the control plane makes by itself (retention). */
export const SYSTEM_ACTOR = "system";

export class AuditLog {
  constructor(
    private readonly deps: {
      store: Pick<Store, "appendAudit" | "listAudit">;
      now: () => number;
    },
  ) {}

  async record(
    actor: string,
    action: AuditAction,
    target: string | null,
    details: Record<string, unknown> = {},
  ): Promise<AuditRecord> {
    const entry: AuditRecord = { id: uuidv7(), at: this.deps.now(), actor, action, target, details };
    await this.deps.store.appendAudit(entry);
    return entry;
  }

  /** Newest first. */
  list(limit: number, cursor?: string): Promise<Page<AuditRecord>> {
    return this.deps.store.listAudit({ limit, cursor });
  }
}
