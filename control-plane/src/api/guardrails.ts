/**
 * The guardrail routes: policies (`/v1/policies`) and human approvals
 * (`/v1/approvals`). Deciding an approval takes the approver role, and only
 * it: an admin who may change policies does not also wave requests through.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import type Router from "@koa/router";
import type { Context, Next } from "koa";
import type { Approvals } from "../approvals/service.js";
import type { Principal } from "../identity/api-keys.js";
import type { Policies, PolicyView } from "../policy/policies.js";
import { POLICY_NAME } from "../policy/schema.js";
import type { ApprovalRecord } from "../store/types.js";
import { iso, isoOrNull } from "../time.js";
import { decideApprovalBody, listApprovalsQuery, parse } from "./schemas.js";

type Middleware = (ctx: Context, next: Next) => Promise<void>;

export interface GuardrailRouteDeps {
  policies: Policies;
  approvals: Approvals;
  /** Middleware requiring each set of roles (see auth.ts). */
  roles: { admin: Middleware; reader: Middleware; approvalReader: Middleware; approver: Middleware };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function approvalId(id: string | undefined): string {
  if (id !== undefined && UUID.test(id)) return id;
  throw new GatehouseError(
    "GATE_NOT_FOUND",
    "no approval has that id; approval ids are UUIDs, as GET /v1/approvals lists them",
  );
}

function policyName(name: string | undefined): string {
  if (name !== undefined && POLICY_NAME.test(name)) return name;
  throw new GatehouseError(
    "GATE_INVALID_REQUEST",
    "invalid policy name: use lower-case letters, digits, '.', '_' and '-' (max 63)",
  );
}

/** An approval as the API shows it: times as ISO 8601. */
export function approvalJson(a: ApprovalRecord) {
  return {
    id: a.id,
    status: a.status,
    sessionId: a.sessionId,
    exchangeId: a.exchangeId,
    connection: a.connection,
    requester: a.requester,
    policy: a.policy,
    rule: a.rule,
    stage: a.stage,
    message: a.message,
    preview: a.preview,
    matched: a.matched,
    createdAt: iso(a.createdAt),
    expiresAt: iso(a.expiresAt),
    decidedAt: isoOrNull(a.decidedAt),
    decidedBy: a.decidedBy,
    reason: a.reason,
  };
}

function policyJson(p: PolicyView) {
  return {
    ...p,
    ...(p.updatedAt === undefined ? {} : { updatedAt: iso(p.updatedAt) }),
  };
}

export function addGuardrailRoutes(router: Router, deps: GuardrailRouteDeps): void {
  const { policies, approvals, roles } = deps;

  router.get("/v1/policies", roles.reader, (ctx) => {
    ctx.body = { items: policies.list().map(policyJson) };
  });
  router.put("/v1/policies/:name", roles.admin, async (ctx) => {
    const principal = ctx.state.principal as Principal;
    ctx.body = policyJson(await policies.put(principal.id, policyName(ctx.params.name), ctx.request.body));
  });
  router.delete("/v1/policies/:name", roles.admin, async (ctx) => {
    const principal = ctx.state.principal as Principal;
    await policies.delete(principal.id, policyName(ctx.params.name));
    ctx.status = 204;
  });

  router.get("/v1/approvals", roles.approvalReader, async (ctx) => {
    const q = parse(listApprovalsQuery, ctx.query, "query");
    const page = await approvals.list({
      limit: q.limit,
      ...(q.status === undefined ? {} : { status: q.status }),
      ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
    });
    ctx.body = { items: page.items.map(approvalJson), nextCursor: page.nextCursor };
  });
  router.get("/v1/approvals/:id", roles.approvalReader, async (ctx) => {
    ctx.body = approvalJson(await approvals.get(approvalId(ctx.params.id)));
  });
  for (const [verb, verdict] of [
    ["approve", "approved"],
    ["deny", "denied"],
  ] as const) {
    router.post(`/v1/approvals/:id/${verb}`, roles.approver, async (ctx) => {
      const id = approvalId(ctx.params.id);
      const body = parse(decideApprovalBody, ctx.request.body, `${verb} request`);
      const principal = ctx.state.principal as Principal;
      ctx.body = approvalJson(await approvals.decide(principal, id, verdict, body.reason));
    });
  }
}
