/**
 * The REST API (koa). Routes translate HTTP to calls on the domain services
 * and back; they hold no business logic.
 */
import { Readable } from "node:stream";
import { GatehouseError } from "@gatehouse/proto/errors";
import { bodyParser } from "@koa/bodyparser";
import Router from "@koa/router";
import Koa, { type Context } from "koa";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { AgentAccounts } from "../agents/accounts.js";
import type { Approvals } from "../approvals/service.js";
import type { AuditLog } from "../audit/log.js";
import type { ApiKeys, Principal } from "../identity/api-keys.js";
import type { RunnerGrant, RunnerIdentities, VerifiedRunnerToken } from "../identity/runner-identity.js";
import type { SigningKeys } from "../identity/signing-keys.js";
import type { ControlPlaneMetrics } from "../metrics.js";
import type { Policies } from "../policy/policies.js";
import type { SessionFeed } from "../sessions/feed.js";
import { type SessionService, sessionStatus } from "../sessions/service.js";
import { sessionSummary, sessionView } from "../sessions/view.js";
import type { AgentRecord, ApiKeyRecord, StoredEvent } from "../store/types.js";
import { iso, isoOrNull } from "../time.js";
import { bearerOf, looksLikeJwt, principalWithRole, requireRole } from "./auth.js";
import { errorMiddleware } from "./errors.js";
import { addGuardrailRoutes } from "./guardrails.js";
import { addSignInRoutes, type SignInRouteDeps } from "./login.js";
import { openApiDocument } from "./openapi.js";
import {
  createAgentBody,
  createApiKeyBody,
  eventsQuery,
  listAuditQuery,
  listSessionsQuery,
  openSessionBody,
  parse,
  sessionQuery,
} from "./schemas.js";

export interface ApiDeps {
  sessions: SessionService;
  accounts: AgentAccounts;
  audit: AuditLog;
  keys: SigningKeys;
  apiKeys: ApiKeys;
  runners: RunnerIdentities;
  policies: Policies;
  approvals: Approvals;
  /** People's sign-in through OIDC; undefined when `identity.admin` is not configured. */
  signIn?: SignInRouteDeps | undefined;
  feed: SessionFeed;
  registry: Registry;
  metrics: ControlPlaneMetrics;
  /** Reasons the control plane is not ready; empty when it is. */
  notReadyReasons: () => Promise<string[]>;
  logger: Logger;
  now: () => number;
  /** How often a live tail re-reads the store for events another replica ingested. */
  followPollMs: number;
}

const EVENTS_PAGE = 500;
/** A session view is built in memory; beyond this, it is read as its event stream instead. */
const MAX_VIEW_BODY_BYTES = 256 * 1024 * 1024;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The id in a record's path. Records are named by UUIDs; anything else names
 * none, and is not repeated in the error, as it may be a token pasted in the wrong place.
 */
function recordId(id: string | undefined, what: "session" | "agent" | "api-key"): string {
  if (id !== undefined && UUID.test(id)) return id;
  throw new GatehouseError(
    "GATE_NOT_FOUND",
    `no ${what} has that id; ${what} ids are UUIDs, as GET /v1/${what}s lists them`,
  );
}

/** A runner's OIDC token, verified; refused when no provider is configured. */
function verifiedRunner(runners: RunnerIdentities, bearer: string): Promise<VerifiedRunnerToken> {
  if (!runners.configured) {
    throw new GatehouseError(
      "GATE_TOKEN_INVALID",
      "this control plane accepts no runner tokens (identity.providers is empty); use an API key, or configure a provider",
    );
  }
  return runners.verify(bearer);
}

/** An API key as the API shows it: never the key or its hash. */
function apiKeyJson(key: ApiKeyRecord, now: number) {
  const status =
    key.revokedAt !== null
      ? "revoked"
      : key.expiresAt !== null && key.expiresAt <= now
        ? "expired"
        : "active";
  return {
    id: key.id,
    name: key.name,
    role: key.role,
    kind: key.kind,
    status,
    createdBy: key.createdBy,
    createdAt: iso(key.createdAt),
    expiresAt: isoOrNull(key.expiresAt),
    revokedAt: isoOrNull(key.revokedAt),
    lastUsedAt: isoOrNull(key.lastUsedAt),
  };
}

/** An agent account as the API shows it: no token hash, times as ISO 8601. */
function agentJson(agent: Omit<AgentRecord, "tokenHash"> & { tokenHash?: string }) {
  return {
    id: agent.id,
    name: agent.name,
    createdAt: iso(agent.createdAt),
    revokedAt: isoOrNull(agent.revokedAt),
    lastSeenAt: isoOrNull(agent.lastSeenAt),
    connections: agent.connections,
  };
}

/** Error codes of a response cut short because its client went away (closed, reset, left mid-write). */
const CLIENT_GONE = new Set(["ERR_STREAM_PREMATURE_CLOSE", "ECONNRESET", "EPIPE"]);

function clientWentAway(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && CLIENT_GONE.has(code);
}

/** One NDJSON line of the raw event stream. */
function eventLine(e: StoredEvent): string {
  return `${JSON.stringify({
    seq: e.seq,
    id: e.id,
    exchangeId: e.exchangeId,
    at: e.at,
    kind: e.kind,
    attrs: e.attrs,
    ...(e.body ? { body: Buffer.from(e.body).toString("base64") } : {}),
    hash: e.hash,
  })}\n`;
}

export function createApi(deps: ApiDeps): Koa {
  const { sessions, accounts, apiKeys, runners, now } = deps;
  const app = new Koa({ proxy: false });
  const router = new Router();
  // Approvers read sessions to judge what they are asked to approve; only admins change things.
  const sessionReader = requireRole(apiKeys, "admin", "auditor", "approver");
  const anyReader = requireRole(apiKeys, "admin", "auditor");
  const admin = requireRole(apiKeys, "admin");

  router.get("/healthz", (ctx) => {
    ctx.body = { status: "ok" };
  });
  router.get("/readyz", async (ctx) => {
    const reasons = await deps.notReadyReasons();
    ctx.status = reasons.length === 0 ? 200 : 503;
    ctx.body = reasons.length === 0 ? { status: "ready" } : { status: "not ready", reasons };
  });
  router.get("/metrics", async (ctx) => {
    ctx.type = deps.registry.contentType;
    ctx.body = await deps.registry.metrics();
  });
  router.get("/v1/openapi.json", (ctx) => {
    ctx.body = openApiDocument();
  });
  router.get("/v1/.well-known/jwks.json", (ctx) => {
    // Shorter than the time a new key is published before it signs (PUBLISH_LEAD_MS).
    ctx.set("cache-control", "public, max-age=60");
    ctx.body = { keys: deps.keys.publicJwks };
  });

  // A CI runner opens a session with its platform's OIDC token; an admin key may open one too.
  router.post("/v1/sessions", async (ctx) => {
    const bearer = bearerOf(ctx);
    // Who is asking is settled before the body is read: a stranger learns nothing of the schema.
    const runner = looksLikeJwt(bearer) ? await verifiedRunner(runners, bearer) : null;
    const principal = runner ? null : await principalWithRole(apiKeys, bearer, ["admin"]);
    const body = parse(openSessionBody, ctx.request.body, "session request");
    const grant: RunnerGrant = principal
      ? {
          subject: { kind: "api-key", id: principal.id, claims: { name: principal.name } },
          maxTtlSeconds: undefined,
          labels: {},
        }
      : runners.grant(runner as VerifiedRunnerToken, body.connection);
    const opened = await sessions.open(grant.subject, body, grant);
    ctx.status = 201;
    ctx.body = {
      id: opened.session.id,
      token: opened.token,
      expiresAt: iso(opened.session.expiresAt),
      connection: opened.session.connection,
      proxyUrl: opened.proxyUrl,
    };
  });
  router.get("/v1/sessions", sessionReader, async (ctx) => {
    const q = parse(listSessionsQuery, ctx.query, "query");
    const page = await sessions.list({
      connection: q.connection,
      status: q.status,
      subjectId: q.subject,
      limit: q.limit,
      cursor: q.cursor,
    });
    const at = now();
    ctx.body = { items: page.items.map((s) => sessionSummary(s, at)), nextCursor: page.nextCursor };
  });
  router.get("/v1/sessions/:id", sessionReader, async (ctx) => {
    const q = parse(sessionQuery, ctx.query, "query");
    const session = await sessions.get(recordId(ctx.params.id, "session"));
    if (q.view === "summary") {
      ctx.body = sessionSummary(session, now());
      return;
    }
    const events: StoredEvent[] = [];
    let bodyBytes = 0;
    // A store may return short pages (it bounds the bytes it reads at once); only an empty page ends.
    for (let after = 0; ; ) {
      const page = await sessions.events(session.id, after, EVENTS_PAGE);
      const last = page.at(-1);
      if (last === undefined) break;
      for (const event of page) bodyBytes += event.body?.byteLength ?? 0;
      if (bodyBytes > MAX_VIEW_BODY_BYTES) {
        throw new GatehouseError(
          "GATE_RECORD_TOO_LARGE",
          `session ${session.id} holds more than ${MAX_VIEW_BODY_BYTES / 1024 / 1024} MiB of bodies, too much to render as one document; read it as events with GET /v1/sessions/${session.id}/events`,
        );
      }
      events.push(...page);
      after = last.seq;
    }
    ctx.body = sessionView(session, events, now());
  });
  // An admin may close any session; a session's own token may close it (how `gatehouse exec` ends one).
  router.delete("/v1/sessions/:id", async (ctx) => {
    const bearer = bearerOf(ctx);
    const id = recordId(ctx.params.id, "session");
    let actor: string;
    if (looksLikeJwt(bearer)) {
      const token = await deps.keys.readSessionToken(bearer);
      if (token.sessionId !== id) {
        throw new GatehouseError(
          "GATE_FORBIDDEN",
          "a session token may close only its own session; use an admin API key to close others",
        );
      }
      actor = token.subject;
    } else {
      actor = (await principalWithRole(apiKeys, bearer, ["admin"])).id;
    }
    ctx.body = sessionSummary(await sessions.close(actor, id), now());
  });
  router.get("/v1/sessions/:id/events", sessionReader, async (ctx) => {
    const q = parse(eventsQuery, ctx.query, "query");
    const session = await sessions.get(recordId(ctx.params.id, "session"));
    const follow = q.follow === "1" || q.follow === "true";
    const abort = new AbortController();
    // The response closes when it is done or when the client goes away, whichever comes first.
    ctx.res.on("close", () => abort.abort());
    ctx.type = "application/x-ndjson";
    ctx.set("cache-control", "no-store");
    ctx.body = Readable.from(tail(deps, session.id, q.after, follow, abort.signal));
    if (follow) ctx.flushHeaders();
  });

  router.post("/v1/agents", admin, async (ctx) => {
    const body = parse(createAgentBody, ctx.request.body, "agent request");
    const principal = ctx.state.principal as Principal;
    const { agent, token } = await accounts.create(principal.id, body.name, body.connections ?? null);
    ctx.status = 201;
    ctx.body = { id: agent.id, name: agent.name, connections: agent.connections, token };
  });
  router.get("/v1/agents", anyReader, async (ctx) => {
    ctx.body = {
      items: (await accounts.list()).map((a) => ({
        ...agentJson(a),
        live: a.live.map((l) => ({ ...l, connectedAt: iso(l.connectedAt) })),
      })),
    };
  });
  router.delete("/v1/agents/:id", admin, async (ctx) => {
    const principal = ctx.state.principal as Principal;
    ctx.body = agentJson(await accounts.revoke(principal.id, recordId(ctx.params.id, "agent")));
  });

  router.post("/v1/api-keys", admin, async (ctx) => {
    const body = parse(createApiKeyBody, ctx.request.body, "API key request");
    const principal = ctx.state.principal as Principal;
    const { record, key } = await apiKeys.create(principal.id, body);
    ctx.status = 201;
    ctx.set("cache-control", "no-store");
    ctx.body = { ...apiKeyJson(record, now()), key };
  });
  router.get("/v1/api-keys", anyReader, async (ctx) => {
    const q = parse(listAuditQuery, ctx.query, "query");
    const page = await apiKeys.list(q.limit, q.cursor);
    const at = now();
    ctx.body = { items: page.items.map((k) => apiKeyJson(k, at)), nextCursor: page.nextCursor };
  });
  router.delete("/v1/api-keys/:id", admin, async (ctx) => {
    const principal = ctx.state.principal as Principal;
    ctx.body = apiKeyJson(await apiKeys.revoke(principal.id, recordId(ctx.params.id, "api-key")), now());
  });

  addSignInRoutes(router, deps.signIn);
  addGuardrailRoutes(router, {
    policies: deps.policies,
    approvals: deps.approvals,
    roles: {
      admin,
      reader: anyReader,
      approvalReader: sessionReader,
      approver: requireRole(apiKeys, "approver"),
    },
  });

  router.get("/v1/audit", anyReader, async (ctx) => {
    const q = parse(listAuditQuery, ctx.query, "query");
    const page = await deps.audit.list(q.limit, q.cursor);
    ctx.body = {
      items: page.items.map((e) => ({ ...e, at: iso(e.at) })),
      nextCursor: page.nextCursor,
    };
  });

  // What fails once a response has begun (a streamed body whose client left) reaches koa's
  // "error" event, not errorMiddleware; koa's own handler would print it to stderr.
  app.on("error", (error: unknown, ctx?: Context) => {
    const fields = { err: error, method: ctx?.method, path: ctx?.path };
    if (clientWentAway(error)) deps.logger.debug(fields, "client went away before the response was complete");
    else deps.logger.error(fields, "response failed");
  });
  app.use(async (ctx: Context, next) => {
    const stop = deps.metrics.httpRequests.startTimer({ method: ctx.method });
    try {
      await next();
    } finally {
      stop({
        route: (ctx as { _matchedRoute?: string })._matchedRoute ?? "unmatched",
        status: String(ctx.status),
      });
    }
  });
  app.use(errorMiddleware(deps.logger));
  app.use(bodyParser({ enableTypes: ["json"], jsonLimit: "1mb", encoding: "utf-8" }));
  app.use(router.routes());
  // 405/501 with an Allow header; errorMiddleware adds the error body.
  app.use(router.allowedMethods());
  return app;
}

/**
 * The events of a session from `after` on; with `follow`, keeps going as new
 * ones arrive, until the session is over and its events are all sent, or the client left.
 */
async function* tail(
  deps: ApiDeps,
  id: string,
  after: number,
  follow: boolean,
  signal: AbortSignal,
): AsyncGenerator<string> {
  let cursor = after;
  while (!signal.aborted) {
    // Read the status before the events: whatever was stored before the session
    // ended is then in the read that follows, and the tail can stop right after it.
    const over = follow && sessionStatus(await deps.sessions.get(id), deps.now()) !== "open";
    let page: StoredEvent[];
    do {
      page = await deps.sessions.events(id, cursor, EVENTS_PAGE);
      for (const event of page) {
        cursor = event.seq;
        yield eventLine(event);
      }
      // Short pages are possible (a store bounds the bytes it reads at once); an empty one ends.
    } while (page.length > 0 && !signal.aborted);
    if (!follow || over) return;
    await deps.feed.wait(id, deps.followPollMs, signal);
  }
}
