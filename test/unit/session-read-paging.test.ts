/**
 * Regression: a store may return fewer events than asked for (the SQLite store
 * stops at 64 MiB of bodies per read). Reading a session must go on until an
 * empty page, or a big session's view and event stream are silently cut short.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import { AgentRegistry } from "@gatehouse/control-plane/agents/registry.js";
import { type ApiDeps, createApi } from "@gatehouse/control-plane/api/app.js";
import type { AuditLog } from "@gatehouse/control-plane/audit/log.js";
import { ApiKeys } from "@gatehouse/control-plane/identity/api-keys.js";
import { createControlPlaneMetrics } from "@gatehouse/control-plane/metrics.js";
import { chainEvents, EMPTY_TAIL } from "@gatehouse/control-plane/sessions/chain.js";
import type { SessionService } from "@gatehouse/control-plane/sessions/service.js";
import type { SessionRecord, StoredEvent } from "@gatehouse/control-plane/store/types.js";
import { pino } from "pino";
import { Registry } from "prom-client";

const SESSION: SessionRecord = {
  id: "0199a1b2-0000-7000-8000-0000000000aa",
  connection: "claude",
  subject: { kind: "api-key", id: "k", claims: {} },
  labels: {},
  createdAt: 1_800_000_000_000,
  expiresAt: 1_800_000_900_000,
  closedAt: 1_800_000_100_000,
  seal: null,
};

/** 12 exchanges of one request body each. */
const EVENTS: StoredEvent[] = chainEvents(
  EMPTY_TAIL,
  Array.from({ length: 12 }, (_, i) => ({
    id: `x${i}:0`,
    sessionId: SESSION.id,
    exchangeId: `x${i}`,
    at: 1_800_000_000_000_000 + i,
    kind: "request.body" as const,
    attrs: {},
    body: Buffer.from(`{"n":${i}}`),
  })),
).stored;

let server: Server;
let base: string;

before(async () => {
  const sessions = {
    get: async () => SESSION,
    // Three events per read, whatever the limit: a store under its byte budget.
    events: async (_id: string, afterSeq: number, _limit: number) =>
      EVENTS.filter((e) => e.seq > afterSeq).slice(0, 3),
  } as unknown as SessionService;
  const registry = new Registry();
  const deps = {
    sessions,
    apiKeys: new ApiKeys({
      store: {} as never,
      audit: {} as AuditLog,
      bootstrapAdminToken: "admin-token",
      logger: pino({ level: "silent" }),
      now: Date.now,
    }),
    registry,
    metrics: createControlPlaneMetrics(registry, new AgentRegistry()),
    logger: pino({ level: "silent" }),
    now: () => SESSION.createdAt,
    followPollMs: 50,
  } as unknown as ApiDeps;
  server = createServer(createApi(deps).callback());
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => server.close());

const get = (path: string) => fetch(`${base}${path}`, { headers: { authorization: "Bearer admin-token" } });

test("the session view holds every exchange when the store answers in short pages", async () => {
  const view = (await (await get(`/v1/sessions/${SESSION.id}`)).json()) as { exchanges: unknown[] };
  assert.equal(view.exchanges.length, 12);
});

test("the event stream holds every event when the store answers in short pages", async () => {
  const lines = (await (await get(`/v1/sessions/${SESSION.id}/events`)).text()).trim().split("\n");
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { seq: number }).seq),
    EVENTS.map((e) => e.seq),
  );
});
