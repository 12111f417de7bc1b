/**
 * The control plane's REST API as its users meet it: the contract in
 * DESIGN.md ("REST"), exercised over real HTTP against a control plane with a
 * real agent linked over gRPC, and checked the way a client would notice —
 * status codes, body shapes, what a verifier can prove, and what never leaks.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { agentConfigSchema, startAgent } from "@gatehouse/agent";
import {
  controlPlaneConfigSchema,
  type RunningControlPlane,
  startControlPlane,
} from "@gatehouse/control-plane";
import { type ApiDeps, createApi } from "@gatehouse/control-plane/api/app.js";
import { hashToken } from "@gatehouse/control-plane/identity/tokens.js";
import { GENESIS_HASH, verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import type { EventKind, StoredEvent } from "@gatehouse/control-plane/store/types.js";
import type { OpenedSession, SessionSummary, SessionView } from "@gatehouse/sdk";
import { Validator } from "@seriousme/openapi-schema-validator";
import { compactVerify, createLocalJWKSet, type JSONWebKeySet, jwtVerify } from "jose";
import { Registry } from "prom-client";
import { gatehouse } from "../support/cli.js";
import { LogCapture, type LogEntry, TestGatehouse } from "../support/gatehouse.js";

/** Strings that must never appear in an error body: tokens, keys and their hashes. */
const secrets = new Set<string>();
/** No run of this many characters of a secret may appear either (JSON.parse quotes ~10 of its input). */
const FRAGMENT = 8;

interface Reply {
  status: number;
  headers: Headers;
  text: string;
}

interface CallOptions {
  /** Bearer API key; null sends no Authorization header. Defaults to the admin key. */
  token?: string | null;
  /** Sent as JSON. */
  json?: unknown;
  /** Sent as it is (with content-type application/json unless `headers` says otherwise). */
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

/** One NDJSON line of `/v1/sessions/{id}/events`. */
interface EventLine {
  seq: number;
  id: string;
  exchangeId: string;
  at: number;
  kind: EventKind;
  attrs: Record<string, unknown>;
  body?: string;
  hash: string;
}

const EVENT_LINE_KEYS = ["seq", "id", "exchangeId", "at", "kind", "attrs", "body", "hash"];

const message = {
  model: "claude-sonnet-4-6",
  max_tokens: 16,
  messages: [{ role: "user" as const, content: "hello" }],
};

/** Reads an NDJSON response line by line, as it arrives. */
class NdjsonReader {
  private buffer = "";
  private readonly reader: ReadableStreamDefaultReader<string>;

  constructor(body: ReadableStream<Uint8Array>) {
    this.reader = body.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** The next event, or null once the server ended the stream. */
  async next(): Promise<EventLine | null> {
    for (;;) {
      const end = this.buffer.indexOf("\n");
      if (end >= 0) {
        const line = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 1);
        return JSON.parse(line) as EventLine;
      }
      const { done, value } = await this.reader.read();
      if (done) {
        assert.equal(this.buffer, "", "the stream ends at a line boundary");
        return null;
      }
      this.buffer += value;
    }
  }
}

/** The value of an unlabelled Prometheus sample, e.g. `gatehouse_cp_connected_agents 1`. */
function sample(metrics: string, name: string): number {
  const line = metrics.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `${name} is exported`);
  return Number(line.slice(name.length + 1));
}

/** The stored form of NDJSON lines, so the hash chain can be recomputed from what the API served. */
function asStored(sessionId: string, lines: EventLine[]): StoredEvent[] {
  return lines.map((l) => ({
    ...l,
    sessionId,
    body: l.body === undefined ? null : Buffer.from(l.body, "base64"),
  }));
}

// A failure that leaves a stream or a log line unawaited fails the suite instead of hanging it.
const timeout = 30_000;

describe("REST API", { timeout }, () => {
  let gh: TestGatehouse;

  async function call(method: string, path: string, options: CallOptions = {}): Promise<Reply> {
    const headers: Record<string, string> = {};
    const token = options.token === undefined ? gh.adminToken : options.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: string | Buffer | undefined;
    if (options.json !== undefined) body = JSON.stringify(options.json);
    else if (options.raw !== undefined) body = options.raw;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${gh.cp.httpUrl}${path}`, {
      method,
      headers: { ...headers, ...options.headers },
      ...(body === undefined ? {} : { body }),
    });
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  async function json<T>(reply: Reply | Promise<Reply>, status = 200): Promise<T> {
    const r = await reply;
    assert.equal(r.status, status, `expected HTTP ${status}, got ${r.status}: ${r.text}`);
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    return JSON.parse(r.text) as T;
  }

  /**
   * Asserts the error shape every REST error has, its code, that the message
   * names each of `mentions`, and that no secret known so far is in the body.
   */
  async function expectError(
    reply: Reply | Promise<Reply>,
    status: number,
    code: string,
    mentions: string[] = [],
  ): Promise<string> {
    const r = await reply;
    assert.equal(r.status, status, `expected HTTP ${status} ${code}, got ${r.status}: ${r.text}`);
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    const body = JSON.parse(r.text) as { error: { code: string; message: string } };
    assert.deepEqual(Object.keys(body), ["error"]);
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message"]);
    assert.equal(body.error.code, code);
    assert.equal(typeof body.error.message, "string");
    assert.ok(body.error.message.length > 0);
    for (const m of mentions) assert.ok(body.error.message.includes(m), `"${body.error.message}" names ${m}`);
    for (const s of secrets) {
      for (let i = 0; i + FRAGMENT <= s.length; i++) {
        assert.ok(
          !r.text.includes(s.slice(i, i + FRAGMENT)),
          "an error body carries no secret, nor part of one",
        );
      }
    }
    return body.error.message;
  }

  async function openSession(request: Record<string, unknown> = { connection: "claude" }) {
    const opened = await json<OpenedSession>(call("POST", "/v1/sessions", { json: request }), 201);
    secrets.add(opened.token);
    return opened;
  }

  const getSession = (id: string) => json<SessionView>(call("GET", `/v1/sessions/${id}`));

  async function events(id: string, query = ""): Promise<EventLine[]> {
    const r = await call("GET", `/v1/sessions/${id}/events${query}`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get("content-type"), "application/x-ndjson");
    if (r.text === "") return [];
    assert.ok(r.text.endsWith("\n"), "every line, the last included, ends with a newline");
    return r.text
      .slice(0, -1)
      .split("\n")
      .map((line) => JSON.parse(line) as EventLine);
  }

  /** Every page of a listing, from `cursor` (or the newest session) on. */
  async function listAll(
    query: string,
    limit: number,
    cursor: string | null = null,
  ): Promise<{ ids: string[]; pages: number }> {
    const ids: string[] = [];
    let pages = 0;
    do {
      const q: string = `${query}&limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const page: { items: SessionSummary[]; nextCursor: string | null } = await json(
        call("GET", `/v1/sessions?${q}`),
      );
      assert.ok(page.items.length <= limit);
      ids.push(...page.items.map((s) => s.id));
      cursor = page.nextCursor;
      pages += 1;
    } while (cursor !== null);
    return { ids, pages };
  }

  /** One Messages API request through the agent, recorded and durable in the store when this resolves. */
  async function exchange(session: OpenedSession): Promise<void> {
    await gh.anthropic(session).messages.create(message);
    await gh.agent.link.whenDrained();
  }

  before(async () => {
    gh = await TestGatehouse.start({
      controlPlane: { sessions: { defaultTtlSeconds: 300, maxTtlSeconds: 600 } },
      connections: [
        { name: "ledger", type: "anthropic", upstream: "http://127.0.0.1:9", credential: { env: "UNUSED" } },
      ],
    });
    for (const s of [gh.adminToken, gh.agentToken, hashToken(gh.agentToken), gh.fake.apiKey]) secrets.add(s);
  });
  after(() => gh.stop());

  describe("POST /v1/sessions", () => {
    test("opens a session: 201 with a token for the connection and its proxy URL at the agent", async () => {
      const before = Date.now();
      const opened = await openSession({ connection: "claude", labels: { pipeline: "build-42" } });
      assert.deepEqual(Object.keys(opened).sort(), ["connection", "expiresAt", "id", "proxyUrl", "token"]);
      assert.equal(opened.connection, "claude");
      assert.equal(opened.proxyUrl, `${gh.agent.proxyUrl}/c/claude`);
      assert.match(opened.proxyUrl, /^http:\/\/127\.0\.0\.1:\d+\/c\/claude$/);
      // No ttlSeconds: the configured default (300 s).
      const lifetime = Date.parse(opened.expiresAt) - before;
      assert.ok(lifetime > 290_000 && lifetime <= 301_000, `default lifetime, got ${lifetime} ms`);

      const jwks = await json<JSONWebKeySet>(call("GET", "/v1/.well-known/jwks.json", { token: null }));
      const { payload } = await jwtVerify(opened.token, createLocalJWKSet(jwks), {
        issuer: "gatehouse",
        audience: "gatehouse-agent",
      });
      assert.equal(payload.sid, opened.id);
      assert.equal(payload.cnx, "claude");
      assert.equal(payload.exp, Math.floor(Date.parse(opened.expiresAt) / 1000));

      const session = await getSession(opened.id);
      assert.equal(session.status, "open");
      assert.deepEqual(session.labels, { pipeline: "build-42" });
      assert.deepEqual(session.subject, {
        kind: "api-key",
        id: "bootstrap-admin",
        claims: { name: "GATEHOUSE_ADMIN_TOKEN" },
      });
    });

    test("ttlSeconds is honoured up to sessions.maxTtlSeconds and capped there", async () => {
      for (const [asked, granted] of [
        [60, 60],
        [600, 600],
        [601, 600],
        [86_400, 600],
      ] as const) {
        const opened = await openSession({ connection: "claude", ttlSeconds: asked });
        const session = await getSession(opened.id);
        assert.equal(session.expiresAt, opened.expiresAt);
        assert.equal(
          Date.parse(session.expiresAt) - Date.parse(session.createdAt),
          granted * 1000,
          `asked ${asked} s`,
        );
      }
    });

    test("an unknown connection is 404 GATE_CONNECTION_NOT_FOUND naming the known ones", async () => {
      await expectError(
        call("POST", "/v1/sessions", { json: { connection: "cluade" } }),
        404,
        "GATE_CONNECTION_NOT_FOUND",
        ["'cluade'", "claude", "ledger"],
      );
    });

    test("an invalid body is 400 GATE_INVALID_REQUEST naming the field", async () => {
      const cases: Array<[unknown, string]> = [
        [{ connection: "claude", ttlSeconds: "600" }, "ttlSeconds"],
        [{ connection: "claude", ttlSeconds: 10 }, "ttlSeconds"],
        [{ connection: "claude", ttlSeconds: 90.5 }, "ttlSeconds"],
        [{ connection: "claude", ttlSeconds: 86_401 }, "ttlSeconds"],
        [{ connection: "claude", owner: "me" }, "owner"],
        [{ connection: "claude", labels: { run: 42 } }, "labels.run"],
        [{ connection: "claude", labels: ["a"] }, "labels"],
        [{ ttlSeconds: 60 }, "connection"],
        [{ connection: "" }, "connection"],
        [[{ connection: "claude" }], "(body)"],
      ];
      for (const [body, field] of cases) {
        await expectError(call("POST", "/v1/sessions", { json: body }), 400, "GATE_INVALID_REQUEST", [field]);
      }
    });

    test("malformed JSON is 400 GATE_INVALID_JSON, and the message does not echo the body", async () => {
      await expectError(
        call("POST", "/v1/sessions", { raw: '{"connection": "claude",' }),
        400,
        "GATE_INVALID_JSON",
      );
      // Regression: the parser's own message quotes the input, so part of a key
      // pasted into a broken body came back in the error (and into whatever logs it).
      const pasted = `{"connection": "claude", "note": ${gh.adminToken}}`;
      const said = await expectError(call("POST", "/v1/sessions", { raw: pasted }), 400, "GATE_INVALID_JSON");
      assert.ok(!said.includes("note"), "nothing of the body is quoted");
    });

    test("a body over 1 MiB is 413 GATE_BODY_TOO_LARGE; one just under it is read", async () => {
      const padded = (size: number) => {
        const head = '{"connection":"claude","labels":{"x":"';
        const tail = '"}}';
        return head + "a".repeat(size - head.length - tail.length) + tail;
      };
      await expectError(
        call("POST", "/v1/sessions", { raw: padded(1024 * 1024 + 1) }),
        413,
        "GATE_BODY_TOO_LARGE",
        ["1 MiB"],
      );
      // Read and validated, so the complaint is about the label, not the size.
      await expectError(
        call("POST", "/v1/sessions", { raw: padded(1024 * 1024) }),
        400,
        "GATE_INVALID_REQUEST",
        ["labels.x"],
      );
    });

    test("no API key is 401 GATE_UNAUTHENTICATED; a wrong one is 401 GATE_TOKEN_INVALID", async () => {
      const body = { json: { connection: "claude" } };
      const missing = await call("POST", "/v1/sessions", { ...body, token: null });
      await expectError(missing, 401, "GATE_UNAUTHENTICATED", ["Authorization: Bearer"]);
      assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer\b/, "RFC 6750 §3");
      await expectError(
        call("POST", "/v1/sessions", { ...body, token: null, headers: { authorization: "Basic YTpi" } }),
        401,
        "GATE_UNAUTHENTICATED",
      );
      const wrong = await call("POST", "/v1/sessions", { ...body, token: `${gh.adminToken}x` });
      await expectError(wrong, 401, "GATE_TOKEN_INVALID");
      assert.match(wrong.headers.get("www-authenticate") ?? "", /^Bearer\b.*invalid_token/);
      // A session token opens a connection at the agent, not the API.
      const opened = await openSession();
      await expectError(
        call("POST", "/v1/sessions", { ...body, token: opened.token }),
        401,
        "GATE_TOKEN_INVALID",
      );
      for (const path of ["/v1/sessions", `/v1/sessions/${opened.id}`, "/v1/agents"]) {
        await expectError(call("GET", path, { token: null }), 401, "GATE_UNAUTHENTICATED");
      }
    });
  });

  describe("GET /v1/sessions", () => {
    const oidcSubject = {
      kind: "oidc" as const,
      id: "https://token.actions.githubusercontent.com#repo:contoso/app:ref:refs/heads/main",
      claims: { repository: "contoso/app" },
    };
    /** Sessions of the `ledger` connection, by what they are. */
    const ledger = { open: [] as string[], closed: [] as string[], expired: [] as string[], oidc: "" };

    before(async () => {
      for (let i = 0; i < 5; i++) {
        const opened = await openSession({ connection: "ledger", labels: { n: String(i) } });
        ledger.open.push(opened.id);
      }
      for (const id of ledger.open.splice(1, 2)) {
        await json(call("DELETE", `/v1/sessions/${id}`));
        ledger.closed.push(id);
      }
      // Opened two hours ago for one minute: expired now, and the oldest.
      gh.clockOffsetMs = -2 * 3600_000;
      try {
        ledger.expired.push((await openSession({ connection: "ledger", ttlSeconds: 60 })).id);
      } finally {
        gh.clockOffsetMs = 0;
      }
      // Runners will authenticate with OIDC; until the REST API accepts it, open one as the service would.
      const byRunner = await gh.cp.sessions.open(oidcSubject, { connection: "ledger" });
      secrets.add(byRunner.token);
      ledger.oidc = byRunner.session.id;
    });

    const all = () => [...ledger.open, ...ledger.closed, ...ledger.expired, ledger.oidc];

    test("lists sessions newest first, as summaries", async () => {
      const page = await json<{ items: SessionSummary[]; nextCursor: string | null }>(
        call("GET", "/v1/sessions?connection=ledger"),
      );
      assert.equal(page.nextCursor, null);
      assert.deepEqual(page.items.map((s) => s.id).sort(), all().sort());
      // Newest first; sessions opened in the same millisecond are ordered by id.
      const newestFirst = [...page.items].sort(
        (a, b) => Date.parse(b.createdAt) - Date.parse(a.createdAt) || (a.id < b.id ? 1 : -1),
      );
      assert.deepEqual(
        page.items.map((s) => s.id),
        newestFirst.map((s) => s.id),
      );
      assert.equal(page.items.at(-1)?.id, ledger.expired[0], "the one opened two hours ago is last");
      for (const item of page.items) {
        assert.deepEqual(Object.keys(item).sort(), [
          "closedAt",
          "connection",
          "createdAt",
          "expiresAt",
          "id",
          "labels",
          "seal",
          "status",
          "subject",
        ]);
        // A list item carries the seal, so a verifier never has to read the session's exchanges.
        assert.equal(item.seal !== null, ledger.closed.includes(item.id), `only closed sessions are sealed`);
      }
    });

    test("filters by connection, status and subject", async () => {
      const ids = async (query: string) =>
        (await json<{ items: SessionSummary[] }>(call("GET", `/v1/sessions?${query}`))).items
          .map((s) => s.id)
          .sort();
      assert.deepEqual(await ids("connection=ledger&status=open"), [...ledger.open, ledger.oidc].sort());
      assert.deepEqual(await ids("connection=ledger&status=closed"), [...ledger.closed].sort());
      assert.deepEqual(await ids("connection=ledger&status=expired"), ledger.expired);
      assert.deepEqual(await ids(`subject=${encodeURIComponent(oidcSubject.id)}`), [ledger.oidc]);
      assert.deepEqual(
        await ids(`subject=bootstrap-admin&connection=ledger`),
        [...ledger.open, ...ledger.closed, ...ledger.expired].sort(),
      );
      assert.deepEqual(
        await ids(`subject=bootstrap-admin&connection=ledger&status=closed`),
        ledger.closed.sort(),
      );
      const claude = await ids("connection=claude");
      assert.ok(claude.length > 0 && claude.every((id) => !all().includes(id)));
      const statuses = (await json<{ items: SessionSummary[] }>(call("GET", "/v1/sessions?status=expired")))
        .items;
      assert.ok(statuses.every((s) => s.status === "expired"));
      assert.ok(statuses.some((s) => s.id === ledger.expired[0]));
    });

    test("cursor pagination visits every session exactly once, in order", async () => {
      const unpaged = (
        await json<{ items: SessionSummary[] }>(call("GET", "/v1/sessions?connection=ledger"))
      ).items.map((s) => s.id);
      for (const limit of [1, 2, 3, 7, 8]) {
        const { ids, pages } = await listAll("connection=ledger", limit);
        assert.deepEqual(ids, unpaged, `limit ${limit}`);
        assert.equal(pages, Math.max(1, Math.ceil(unpaged.length / limit)), `limit ${limit}`);
      }
      const open = await listAll("connection=ledger&status=open", 2);
      assert.deepEqual(open.ids.sort(), [...ledger.open, ledger.oidc].sort());
    });

    test("a session opened while a client pages appears neither twice nor shifts later pages", async () => {
      const first = await json<{ items: SessionSummary[]; nextCursor: string }>(
        call("GET", "/v1/sessions?connection=ledger&limit=3"),
      );
      const newcomer = await openSession({ connection: "ledger" });
      const rest = await listAll("connection=ledger", 3, first.nextCursor);
      const seen = [...first.items.map((s) => s.id), ...rest.ids];
      assert.deepEqual([...seen].sort(), all().sort());
      assert.ok(!seen.includes(newcomer.id), "pages already begun do not take in newer sessions");
      assert.ok((await listAll("connection=ledger", 3)).ids.includes(newcomer.id), "a new listing shows it");
      await json(call("DELETE", `/v1/sessions/${newcomer.id}`));
      ledger.closed.push(newcomer.id);
    });

    test("invalid queries are 400 naming the parameter and what it accepts", async () => {
      await expectError(call("GET", "/v1/sessions?status=running"), 400, "GATE_INVALID_REQUEST", [
        "status",
        "open",
        "closed",
        "expired",
      ]);
      for (const limit of ["0", "501", "ten", "2.5"]) {
        await expectError(call("GET", `/v1/sessions?limit=${limit}`), 400, "GATE_INVALID_REQUEST", ["limit"]);
      }
      await expectError(call("GET", "/v1/sessions?cursor=not-a-cursor"), 400, "GATE_INVALID_REQUEST", [
        "cursor",
      ]);
      await expectError(call("GET", "/v1/sessions?state=open"), 400, "GATE_INVALID_REQUEST", ["state"]);
    });
  });

  describe("a session's record", () => {
    test("GET /v1/sessions/{id} shows the session with its exchanges, credentials never", async () => {
      const opened = await openSession({ connection: "claude", labels: { job: "lint" } });
      await exchange(opened);
      gh.fake.reply({ content: [{ type: "text", text: "streamed" }], streaming: { pieces: 3 } });
      try {
        await gh.anthropic(opened).messages.stream(message).finalMessage();
      } finally {
        gh.fake.reply(null);
      }
      await gh.agent.link.whenDrained();

      const r = await call("GET", `/v1/sessions/${opened.id}`);
      const session = await json<SessionView>(r);
      assert.deepEqual(Object.keys(session).sort(), [
        "closedAt",
        "connection",
        "createdAt",
        "exchanges",
        "expiresAt",
        "id",
        "labels",
        "seal",
        "status",
        "subject",
      ]);
      assert.equal(session.id, opened.id);
      assert.equal(session.connection, "claude");
      assert.equal(session.status, "open");
      assert.equal(session.closedAt, null);
      assert.equal(session.seal, null);
      assert.equal(session.exchanges.length, 2);
      const [plain, streamed] = session.exchanges;
      for (const x of [plain, streamed]) {
        assert.ok(x);
        assert.deepEqual(Object.keys(x).sort(), [
          "decision",
          "decisions",
          "endedAt",
          "error",
          "id",
          "kind",
          "masked",
          "method",
          "outcome",
          "path",
          "request",
          "response",
          "startedAt",
          "status",
        ]);
        assert.equal(x.kind, "anthropic.messages");
        assert.equal(x.method, "POST");
        assert.equal(x.path, "/v1/messages");
        assert.equal(x.status, 200);
        assert.equal(x.decision, "allow");
        assert.deepEqual(x.decisions, []);
        // No secret in these replies: the masking summary is there, and empty.
        assert.deepEqual(x.masked, {});
        assert.ok(Date.parse(x.startedAt) <= Date.parse(x.endedAt ?? ""));
        assert.deepEqual(Object.keys(x.request).sort(), ["body", "headers"]);
        assert.equal(x.request.headers.authorization, "[REDACTED]");
      }
      assert.deepEqual(plain?.request.body, message);
      assert.deepEqual(Object.keys(plain?.response ?? {}).sort(), ["body", "headers", "status"]);
      assert.equal((plain?.response?.body as { role?: string } | undefined)?.role, "assistant");
      assert.equal(streamed?.response?.status, 200);
      assert.equal(streamed?.response?.body, undefined);
      assert.equal(
        (streamed?.response?.message as { content: Array<{ text: string }> } | undefined)?.content[0]?.text,
        "streamed",
      );
      for (const s of [opened.token, gh.fake.apiKey, gh.adminToken]) assert.ok(!r.text.includes(s));
    });

    test("recorded headers named __proto__ or constructor show as ordinary headers", async () => {
      // Regression: the view gathered headers into a plain object, where `__proto__` set the
      // prototype instead of a key, so a header of that name vanished from the record's view.
      const opened = await openSession();
      const exchangeId = randomUUID();
      const event = (index: number, kind: EventKind, attrs: Record<string, unknown>) => ({
        id: `${exchangeId}:${index}`,
        sessionId: opened.id,
        exchangeId,
        at: Date.now() * 1000,
        kind,
        attrs,
        body: null,
      });
      await gh.cp.store.appendEvents([
        event(0, "request.head", {
          connection: "claude",
          kind: "anthropic.models",
          method: "GET",
          path: "/v1/models",
          headers: [
            ["__proto__", "p1"],
            ["constructor", "c1"],
            ["constructor", "c2"],
            ["tostring", "t"],
          ],
        }),
        event(1, "response.head", { status: 200, headers: [["__proto__", "from upstream"]] }),
        event(2, "exchange.end", { outcome: "completed", status: 200, errorCode: "", errorMessage: "" }),
      ]);
      const r = await call("GET", `/v1/sessions/${opened.id}`);
      const [x] = (await json<SessionView>(r)).exchanges;
      assert.ok(x?.response);
      assert.equal(Object.getPrototypeOf(x.request.headers), Object.prototype, "parsed JSON, not polluted");
      assert.deepEqual(Object.entries(x.request.headers), [
        ["__proto__", "p1"],
        ["constructor", "c1, c2"],
        ["tostring", "t"],
      ]);
      assert.deepEqual(Object.entries(x.response.headers), [["__proto__", "from upstream"]]);
      assert.match(r.text, /"headers":\{"__proto__":"p1","constructor":"c1, c2"/);
    });

    test("an unknown session id is 404 GATE_NOT_FOUND", async () => {
      const unknown = "01890000-0000-7000-8000-000000000000";
      for (const [method, path] of [
        ["GET", `/v1/sessions/${unknown}`],
        ["DELETE", `/v1/sessions/${unknown}`],
        ["GET", `/v1/sessions/${unknown}/events`],
        ["GET", `/v1/sessions/${unknown}/events?follow=1`],
      ] as const) {
        await expectError(call(method, path), 404, "GATE_NOT_FOUND", [`session '${unknown}' not found`]);
      }
      // What is not a session id at all is not repeated back: it may be a token pasted in the wrong place.
      for (const [method, path] of [
        ["GET", "/v1/sessions/%20%27%3B--"],
        ["DELETE", "/v1/sessions/latest"],
        ["GET", "/v1/sessions/latest/events"],
      ] as const) {
        const said = await expectError(call(method, path), 404, "GATE_NOT_FOUND", ["session ids are UUIDs"]);
        assert.ok(!said.includes("latest"));
      }
    });

    test("DELETE closes a session and seals its record; the seal verifies with the published keys", async () => {
      const opened = await openSession();
      await exchange(opened);
      await exchange(opened);

      const closed = await json<SessionSummary>(call("DELETE", `/v1/sessions/${opened.id}`));
      assert.equal(closed.status, "closed");
      assert.ok(closed.closedAt);
      assert.ok(Date.parse(closed.closedAt) <= Date.now());

      const session = await getSession(opened.id);
      assert.equal(session.status, "closed");
      assert.equal(session.closedAt, closed.closedAt);
      const seal = session.seal;
      assert.ok(seal, "a closed session has a seal");
      const lines = await events(opened.id);
      assert.ok(lines.length >= 10, "two exchanges, five or more events each");
      assert.equal(seal.count, lines.length);
      assert.equal(seal.lastHash, lines.at(-1)?.hash);

      // What `gatehouse sessions verify` does: recompute the chain from what
      // the API served, and check the signature with the published keys only.
      const chain = verifyChain(asStored(opened.id, lines));
      assert.equal(chain.break, null);
      assert.equal(chain.tail.lastHash, seal.lastHash);
      assert.match(seal.jws, /^[\w-]+\.[\w-]+\.[\w-]+$/, "compact JWS");
      const jwks = await json<JSONWebKeySet>(call("GET", "/v1/.well-known/jwks.json", { token: null }));
      const verified = await compactVerify(seal.jws, createLocalJWKSet(jwks));
      assert.equal(verified.protectedHeader.alg, "EdDSA");
      assert.deepEqual(JSON.parse(new TextDecoder().decode(verified.payload)), {
        sid: opened.id,
        count: lines.length,
        lastHash: seal.lastHash,
        sealedAt: Date.parse(seal.sealedAt),
      });

      // Idempotent: a second close changes nothing.
      const again = await json<SessionSummary>(call("DELETE", `/v1/sessions/${opened.id}`));
      assert.deepEqual(again, closed);
      assert.deepEqual((await getSession(opened.id)).seal, seal);
    });

    test("?view=summary is the session with its seal, without its exchanges, as lists and DELETE show it", async () => {
      // What a verifier needs (status and seal) without the server reading the session's events.
      const opened = await openSession();
      await exchange(opened);
      const open = await json<SessionSummary>(call("GET", `/v1/sessions/${opened.id}?view=summary`));
      assert.equal(open.status, "open");
      assert.equal(open.seal, null);
      assert.ok(!("exchanges" in open));

      const closed = await json<SessionSummary>(call("DELETE", `/v1/sessions/${opened.id}`));
      assert.ok(closed.seal, "DELETE answers with the seal it made");
      const summary = await json<SessionSummary>(call("GET", `/v1/sessions/${opened.id}?view=summary`));
      assert.deepEqual(summary, closed);
      const { exchanges, ...full } = await getSession(opened.id);
      assert.equal(exchanges.length, 1);
      assert.deepEqual(full, summary, "the full view is the summary plus the exchanges");
      const page = await json<{ items: SessionSummary[] }>(
        call("GET", "/v1/sessions?connection=claude&limit=500"),
      );
      assert.deepEqual(
        page.items.find((s) => s.id === opened.id),
        summary,
      );
      await expectError(
        call("GET", `/v1/sessions/${opened.id}?view=exchanges`),
        400,
        "GATE_INVALID_REQUEST",
        ["view"],
      );
    });

    test("`gatehouse sessions verify` streams a large record instead of holding it in memory", async () => {
      // Regression: verify read the whole session view and the whole event stream into memory,
      // so a large session ran the CLI out of memory. It reads the summary (with the seal) and
      // verifies events line by line as they stream in, so what it holds stays bounded.
      // A Gatehouse of its own: a large record slows every later read of a FerretDB database.
      const big = await TestGatehouse.start();
      try {
        const opened = await big.openSession();
        const exchangeId = randomUUID();
        const body = Buffer.alloc(256 * 1024, "a");
        let index = 0;
        for (let batch = 0; batch < 4; batch++) {
          await big.cp.store.appendEvents(
            Array.from({ length: 16 }, () => ({
              id: `${exchangeId}:${index++}`,
              sessionId: opened.id,
              exchangeId,
              at: Date.now() * 1000,
              kind: "request.body" as const,
              attrs: {},
              body,
            })),
          );
        }
        await big.admin.closeSession(opened.id);
        // 16 MiB of bodies (about 22 MB of NDJSON) for a CLI allowed a 32 MB heap, some 12 MB of
        // which it needs for itself: holding the view and the stream whole, it failed at 8 MiB.
        const verified = await gatehouse(["sessions", "verify", opened.id, "--json"], {
          env: {
            GATEHOUSE_URL: big.cp.httpUrl,
            GATEHOUSE_TOKEN: big.adminToken,
            NODE_OPTIONS: "--max-old-space-size=32",
          },
        });
        assert.equal(verified.code, 0, verified.stderr);
        const verdict = JSON.parse(verified.stdout) as { intact: boolean; events: number };
        assert.equal(verdict.intact, true);
        assert.equal(verdict.events, index);
      } finally {
        await big.stop();
      }
    });

    test("a session closed with no exchanges is sealed as empty", async () => {
      const opened = await openSession();
      await json(call("DELETE", `/v1/sessions/${opened.id}`));
      const { seal } = await getSession(opened.id);
      assert.equal(seal?.count, 0);
      assert.equal(seal?.lastHash, GENESIS_HASH);
      assert.deepEqual(await events(opened.id), []);
    });
  });

  describe("GET /v1/sessions/{id}/events", () => {
    test("is NDJSON: one event per line, in order, bodies in base64, resumable with after=N", async () => {
      const opened = await openSession();
      await exchange(opened);
      const lines = await events(opened.id);
      assert.deepEqual(
        lines.map((l) => l.seq),
        lines.map((_, i) => i + 1),
      );
      for (const line of lines) {
        for (const key of Object.keys(line)) assert.ok(EVENT_LINE_KEYS.includes(key), `unexpected ${key}`);
        for (const key of EVENT_LINE_KEYS.filter((k) => k !== "body"))
          assert.ok(key in line, `${key} present`);
        assert.match(line.hash, /^[0-9a-f]{64}$/);
        assert.equal(line.exchangeId, lines[0]?.exchangeId);
      }
      assert.equal(lines[0]?.kind, "request.head");
      assert.equal(lines.at(-1)?.kind, "exchange.end");
      const requestBody = lines
        .filter((l) => l.kind === "request.body")
        .map((l) => Buffer.from(l.body ?? "", "base64").toString("utf8"))
        .join("");
      assert.deepEqual(JSON.parse(requestBody), message);
      assert.equal(verifyChain(asStored(opened.id, lines)).break, null);

      assert.deepEqual(await events(opened.id, "?after=2"), lines.slice(2));
      assert.deepEqual(await events(opened.id, `?after=${lines.length}`), []);
      await expectError(
        call("GET", `/v1/sessions/${opened.id}/events?after=-1`),
        400,
        "GATE_INVALID_REQUEST",
        ["after"],
      );
      await expectError(
        call("GET", `/v1/sessions/${opened.id}/events?follow=yes`),
        400,
        "GATE_INVALID_REQUEST",
        ["follow"],
      );
    });

    test("follow=1 tails live: an exchange's events arrive on the open stream, and closing ends it", async () => {
      const opened = await openSession();
      // The response starts before there is anything to send, so a client knows it is following.
      const res = await fetch(`${gh.cp.httpUrl}/v1/sessions/${opened.id}/events?follow=1`, {
        headers: { authorization: `Bearer ${gh.adminToken}` },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("content-type"), "application/x-ndjson");
      assert.ok(res.body);
      const tail = new NdjsonReader(res.body);

      const arrived: EventLine[] = [];
      const done = gh.anthropic(opened).messages.create(message);
      for (let line = await tail.next(); line; line = await tail.next()) {
        arrived.push(line);
        if (line.kind === "exchange.end") break;
      }
      await done;
      assert.equal(arrived[0]?.kind, "request.head");
      assert.equal(arrived.at(-1)?.kind, "exchange.end");

      // Regression: closing woke no follower, so the stream ran on until the
      // next periodic re-read (1 s) noticed. It ends at the close now.
      const closedAt = performance.now();
      await json(call("DELETE", `/v1/sessions/${opened.id}`));
      assert.equal(await tail.next(), null, "the stream ends once the session is closed");
      assert.ok(performance.now() - closedAt < 500, "the end follows the close, not the next re-read");
      assert.deepEqual(arrived, await events(opened.id), "the live tail saw exactly the stored record");
    });

    test("follow=1 on a closed session sends the record and ends at once", async () => {
      const opened = await openSession();
      await exchange(opened);
      await json(call("DELETE", `/v1/sessions/${opened.id}`));
      const started = performance.now();
      const res = await fetch(`${gh.cp.httpUrl}/v1/sessions/${opened.id}/events?follow=1&after=1`, {
        headers: { authorization: `Bearer ${gh.adminToken}` },
      });
      assert.ok(res.body);
      const tail = new NdjsonReader(res.body);
      const lines: EventLine[] = [];
      for (let line = await tail.next(); line; line = await tail.next()) lines.push(line);
      // Regression: a short last page made the tail wait for a re-read before it saw the session was over.
      assert.ok(performance.now() - started < 500, "no wait after the last event");
      assert.deepEqual(lines, (await events(opened.id)).slice(1));
    });

    test("followers that disconnect are let go, and the server keeps working", async () => {
      const logFrom = gh.logs.lines.length;
      // Regression: koa printed every stream cut short by its client to stderr ("Premature close"),
      // bypassing the logger; a client that leaves is routine, logged at debug.
      const printed: unknown[] = [];
      const consoleError = console.error;
      console.error = (...args: unknown[]) => printed.push(args);
      const opened = await openSession();
      const followers = await Promise.all(
        Array.from({ length: 20 }, async () => {
          const abort = new AbortController();
          const res = await fetch(`${gh.cp.httpUrl}/v1/sessions/${opened.id}/events?follow=1`, {
            headers: { authorization: `Bearer ${gh.adminToken}` },
            signal: abort.signal,
          });
          assert.equal(res.status, 200);
          return { abort, res };
        }),
      );
      try {
        for (const { abort, res } of followers) {
          abort.abort();
          await assert.rejects(res.text(), { name: "AbortError" });
        }
        const gone: LogEntry[] = [];
        await gh.logs.waitFor((e) => {
          if (e.msg === "client went away before the response was complete") gone.push(e);
          return gone.length === followers.length;
        }, logFrom);
        for (const e of gone) assert.deepEqual([e.component, e.level], ["cp.api", 20], "logged at debug");
      } finally {
        console.error = consoleError;
      }
      assert.deepEqual(printed, [], "nothing printed to the console");
      const res = await fetch(`${gh.cp.httpUrl}/v1/sessions/${opened.id}/events?follow=1`, {
        headers: { authorization: `Bearer ${gh.adminToken}` },
      });
      assert.ok(res.body);
      const tail = new NdjsonReader(res.body);
      await exchange(opened);
      await json(call("DELETE", `/v1/sessions/${opened.id}`));
      const lines: EventLine[] = [];
      for (let line = await tail.next(); line; line = await tail.next()) lines.push(line);
      assert.deepEqual(lines, await events(opened.id));
      await json(call("GET", "/healthz", { token: null }));
      const failures = gh.logs.lines
        .slice(logFrom)
        .filter((l) => (JSON.parse(l) as { level: number }).level >= 50);
      assert.deepEqual(failures, [], "nothing failed on the server");
    });
  });

  describe("operations", () => {
    test("/healthz and /readyz answer without an API key", async () => {
      assert.deepEqual(await json(call("GET", "/healthz", { token: null })), { status: "ok" });
      assert.deepEqual(await json(call("GET", "/readyz", { token: null })), { status: "ready" });
    });

    test("/metrics is Prometheus text; ingested events and linked agents are counted", async () => {
      await gh.agent.link.whenDrained();
      const before = await call("GET", "/metrics", { token: null });
      assert.equal(before.status, 200);
      assert.match(before.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      assert.match(before.text, /^# HELP gatehouse_cp_events_ingested_total /m);
      assert.match(before.text, /^# TYPE gatehouse_cp_events_ingested_total counter$/m);
      assert.equal(sample(before.text, "gatehouse_cp_connected_agents"), 1);

      const opened = await openSession();
      await exchange(opened);
      const after = (await call("GET", "/metrics", { token: null })).text;
      assert.equal(
        sample(after, "gatehouse_cp_events_ingested_total") -
          sample(before.text, "gatehouse_cp_events_ingested_total"),
        (await events(opened.id)).length,
        "grows by the events of the exchange",
      );
      assert.match(
        after,
        /^gatehouse_cp_http_request_duration_seconds_count\{method="POST",route="\/v1\/sessions",status="201"\} \d+$/m,
      );
    });

    test("/v1/.well-known/jwks.json publishes public keys only", async () => {
      const r = await call("GET", "/v1/.well-known/jwks.json", { token: null });
      const jwks = await json<{ keys: Array<Record<string, unknown>> }>(r);
      assert.ok(jwks.keys.length >= 1);
      for (const key of jwks.keys) {
        assert.equal(key.kty, "OKP");
        assert.equal(key.crv, "Ed25519");
        assert.equal(key.alg, "EdDSA");
        assert.equal(key.use, "sig");
        assert.equal(typeof key.kid, "string");
        assert.equal(key.d, undefined, "no private key material");
      }
      assert.match(r.headers.get("cache-control") ?? "", /max-age=\d+/);
    });

    test("/v1/openapi.json is a valid OpenAPI 3.1 document listing every route the API serves", async () => {
      const document = await json<{
        openapi: string;
        paths: Record<string, Record<string, { security?: unknown; responses: Record<string, unknown> }>>;
      }>(call("GET", "/v1/openapi.json", { token: null }));
      assert.match(document.openapi, /^3\.1\./);
      const validator = new Validator();
      const result = await validator.validate(document);
      assert.deepEqual(result.errors, undefined);
      assert.equal(result.valid, true);

      // The routes the router really has (built without serving anything).
      const app = createApi({} as ApiDeps);
      const router = app.middleware
        .map((m) => (m as { router?: { stack: Array<{ path: string; methods: string[] }> } }).router)
        .find((r) => r !== undefined);
      assert.ok(router, "the API mounts a router");
      const served = router.stack
        .flatMap((layer) =>
          layer.methods
            .filter((m) => m !== "HEAD")
            .map((m) => `${m} ${layer.path.replace(/:(\w+)/g, "{$1}")}`),
        )
        .sort();
      const documented = Object.entries(document.paths)
        .flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path}`))
        .sort();
      assert.deepEqual(documented, served);
      for (const [path, ops] of Object.entries(document.paths)) {
        for (const [method, op] of Object.entries(ops)) {
          if (path.startsWith("/v1/sessions") || path.startsWith("/v1/agents")) {
            assert.ok(op.security, `${method} ${path} declares its API key`);
            assert.ok(op.responses["401"], `${method} ${path} documents 401`);
          }
        }
      }
    });
  });

  describe("agents", () => {
    test("POST /v1/agents shows the token once; GET /v1/agents never shows it, and shows live links", async () => {
      const created = await json<{ id: string; name: string; token: string; connections: unknown }>(
        call("POST", "/v1/agents", { json: { name: "build-host-7" } }),
        201,
      );
      secrets.add(created.token);
      secrets.add(hashToken(created.token));
      assert.deepEqual(Object.keys(created).sort(), ["connections", "id", "name", "token"]);
      assert.equal(created.name, "build-host-7");
      assert.equal(created.connections, null, "by default an agent may serve every connection");
      assert.match(created.token, /^gat_/);

      const linked = await gh.startExtraAgent("build-host-7", { token: created.token });
      const r = await call("GET", "/v1/agents");
      const { items } = await json<{ items: Array<Record<string, unknown> & { live: unknown[] }> }>(r);
      for (const s of secrets) assert.ok(!r.text.includes(s), "no token nor token hash in the listing");
      for (const item of items) {
        assert.equal(item.token, undefined);
        assert.equal(item.tokenHash, undefined);
      }
      const mine = items.find((a) => a.id === created.id);
      assert.deepEqual(
        mine?.live.map((l) => (l as { proxyUrl: string }).proxyUrl),
        [linked.proxyUrl],
      );
      const harness = items.find((a) => a.name === "test-agent");
      assert.deepEqual(
        harness?.live.map((l) => (l as { proxyUrl: string }).proxyUrl),
        [gh.agent.proxyUrl],
      );

      // Revoking the account ends its link at once.
      const from = gh.logs.lines.length;
      const revoked = await json<Record<string, unknown>>(call("DELETE", `/v1/agents/${created.id}`));
      assert.equal(revoked.tokenHash, undefined);
      assert.ok(!Number.isNaN(Date.parse(String(revoked.revokedAt))), "times are ISO 8601, as for sessions");
      await gh.logs.waitFor(
        (e) => e.component === "cp.link" && e.msg === "agent disconnected" && e.agent === "build-host-7",
        from,
      );
      const after = await json<{ items: Array<{ id: string; live: unknown[]; revokedAt: unknown }> }>(
        call("GET", "/v1/agents"),
      );
      const gone = after.items.find((a) => a.id === created.id);
      assert.deepEqual(gone?.live, []);
      assert.ok(gone?.revokedAt);
    });

    test("POST /v1/agents with connections scopes the account; its agent serves those only", async () => {
      const created = await json<{ id: string; token: string; connections: unknown }>(
        call("POST", "/v1/agents", { json: { name: "ledger-only", connections: ["ledger", "ledger"] } }),
        201,
      );
      secrets.add(created.token);
      secrets.add(hashToken(created.token));
      assert.deepEqual(created.connections, ["ledger"], "named once each");
      // An agent that names no connections serves its account's whole scope, not every connection.
      const agent = await gh.startExtraAgent("ledger-only", { token: created.token });
      const { items } = await json<{
        items: Array<{
          id: string;
          name: string;
          connections: unknown;
          live: Array<{ connections: string[] }>;
        }>;
      }>(call("GET", "/v1/agents"));
      const mine = items.find((a) => a.id === created.id);
      assert.deepEqual(mine?.connections, ["ledger"]);
      assert.deepEqual(
        mine?.live.map((l) => l.connections),
        [["ledger"]],
      );
      assert.equal(items.find((a) => a.name === "test-agent")?.connections, null);
      await agent.stop();
    });

    test("bad agent requests are 400 or 404 with the usual error body", async () => {
      await expectError(
        call("POST", "/v1/agents", { json: { name: "scoped", connections: ["claude", "nope"] } }),
        404,
        "GATE_CONNECTION_NOT_FOUND",
        ["'nope'", "claude", "ledger"],
      );
      await expectError(
        call("POST", "/v1/agents", { json: { name: "scoped", connections: [] } }),
        400,
        "GATE_INVALID_REQUEST",
        ["connections"],
      );
      await expectError(
        call("POST", "/v1/agents", { json: { name: "no spaces" } }),
        400,
        "GATE_INVALID_REQUEST",
        ["name"],
      );
      await expectError(call("POST", "/v1/agents", { json: {} }), 400, "GATE_INVALID_REQUEST", ["name"]);
      await expectError(
        call("DELETE", "/v1/agents/01890000-0000-7000-8000-000000000000"),
        404,
        "GATE_NOT_FOUND",
      );
    });
  });

  describe("GET /v1/audit", () => {
    interface AuditEntry {
      id: string;
      at: string;
      actor: string;
      action: string;
      target: string | null;
      details: Record<string, unknown>;
    }
    type AuditPage = { items: AuditEntry[]; nextCursor: string | null };

    test("agent accounts made and revoked and sessions closed are listed, newest first, once each", async () => {
      const created = await json<{ id: string; token: string }>(
        call("POST", "/v1/agents", { json: { name: "audited", connections: ["ledger"] } }),
        201,
      );
      secrets.add(created.token);
      const session = await openSession();
      await json(call("DELETE", `/v1/sessions/${session.id}`));
      await json(call("DELETE", `/v1/agents/${created.id}`));
      // Repeating a change that already took effect changes nothing, and so logs nothing.
      await json(call("DELETE", `/v1/sessions/${session.id}`));
      await json(call("DELETE", `/v1/agents/${created.id}`));

      const newest = await json<AuditPage>(call("GET", "/v1/audit?limit=3"));
      assert.deepEqual(
        newest.items.map(({ actor, action, target, details }) => ({ actor, action, target, details })),
        [
          {
            actor: "bootstrap-admin",
            action: "agent.revoke",
            target: created.id,
            details: { name: "audited" },
          },
          {
            actor: "bootstrap-admin",
            action: "session.close",
            target: session.id,
            details: { connection: "claude" },
          },
          {
            actor: "bootstrap-admin",
            action: "agent.create",
            target: created.id,
            details: { name: "audited", connections: ["ledger"] },
          },
        ],
      );
      for (const e of newest.items) assert.ok(!Number.isNaN(Date.parse(e.at)), "times are ISO 8601");
      assert.ok(newest.nextCursor, "older entries (the harness's own agent) are on the next page");

      // Paging visits every entry once, in order, as far back as the log goes.
      const seen: AuditEntry[] = [];
      let cursor: string | null = null;
      do {
        const q: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
        const page: AuditPage = await json<AuditPage>(call("GET", `/v1/audit?limit=2${q}`));
        seen.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor !== null);
      assert.deepEqual(seen.slice(0, 3), newest.items);
      assert.equal(new Set(seen.map((e) => e.id)).size, seen.length);
      assert.deepEqual(
        seen.map((e) => e.at),
        seen
          .map((e) => e.at)
          .sort()
          .reverse(),
      );
    });

    test("the audit log needs an API key, and a bad cursor or limit is a 400", async () => {
      await expectError(call("GET", "/v1/audit", { token: null }), 401, "GATE_UNAUTHENTICATED");
      await expectError(call("GET", "/v1/audit?cursor=not-a-cursor"), 400, "GATE_INVALID_REQUEST");
      await expectError(call("GET", "/v1/audit?limit=0"), 400, "GATE_INVALID_REQUEST", ["limit"]);
    });
  });

  describe("errors", () => {
    test("an unknown route is 404 JSON pointing at the list of routes", async () => {
      for (const path of ["/v1/nope", "/v2/sessions", "/", "/v1/sessions/a/b/c"]) {
        await expectError(call("GET", path), 404, "GATE_NOT_FOUND", ["GET", "/v1/openapi.json"]);
      }
      await expectError(call("POST", "/v1/session", { json: {} }), 404, "GATE_NOT_FOUND", ["POST"]);
    });

    test("a method a route does not have is 405, naming the ones it has", async () => {
      const r = await call("PUT", "/v1/sessions", { json: { connection: "claude" } });
      await expectError(r, 405, "GATE_INVALID_REQUEST", ["PUT", "GET", "POST"]);
      assert.deepEqual(r.headers.get("allow")?.split(", ").sort(), ["GET", "HEAD", "POST"]);
      const id = (await openSession()).id;
      const patch = await call("PATCH", `/v1/sessions/${id}`, { json: {} });
      await expectError(patch, 405, "GATE_INVALID_REQUEST", ["PATCH", "DELETE"]);
      assert.deepEqual(patch.headers.get("allow")?.split(", ").sort(), ["DELETE", "GET", "HEAD"]);
    });

    test("no error body carries a token or the upstream key, whatever the request held", async () => {
      const opened = await openSession();
      const hostile = [opened.token, gh.adminToken, gh.fake.apiKey];
      for (const secret of hostile) {
        await expectError(
          call("GET", "/v1/sessions", { token: secret.slice(0, -1) }),
          401,
          "GATE_TOKEN_INVALID",
        );
        await expectError(call("GET", `/v1/sessions/${encodeURIComponent(secret)}`), 404, "GATE_NOT_FOUND");
        await expectError(call("DELETE", `/v1/agents/${encodeURIComponent(secret)}`), 404, "GATE_NOT_FOUND");
        await expectError(call("GET", `/v1/${encodeURIComponent(secret)}/x`), 404, "GATE_NOT_FOUND");
        await expectError(
          call("PUT", `/v1/sessions/${encodeURIComponent(secret)}`),
          405,
          "GATE_INVALID_REQUEST",
        );
        await expectError(
          call("POST", "/v1/sessions", { raw: `{"connection": ${secret}}` }),
          400,
          "GATE_INVALID_JSON",
        );
      }
    });
  });
});

/** A control plane of its own, on free ports, whose one connection no agent will serve. */
function standaloneConfig() {
  return controlPlaneConfigSchema.parse({
    connections: [
      { name: "claude", type: "anthropic", upstream: "http://127.0.0.1:9", credential: { env: "UNUSED" } },
    ],
    http: { listen: "127.0.0.1:0" },
    grpc: { listen: "127.0.0.1:0" },
  });
}

describe("a control plane with no agent linked", { timeout }, () => {
  const adminToken = "adm_test_no_agent_0123456789abcdef";
  const logs = new LogCapture();
  let dir: string;
  let cp: RunningControlPlane;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-rest-"));
    cp = await startControlPlane({
      config: standaloneConfig(),
      dataDir: dir,
      adminToken,
      log: logs.log,
      registry: new Registry(),
      readyNeedsAgent: true,
    });
  });
  after(async () => {
    await cp.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const post = () =>
    fetch(`${cp.httpUrl}/v1/sessions`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ connection: "claude" }),
    });

  async function expectNoAgent(): Promise<void> {
    const ready = await fetch(`${cp.httpUrl}/readyz`);
    assert.equal(ready.status, 503);
    assert.deepEqual(await ready.json(), { status: "not ready", reasons: ["no agent is linked yet"] });
    const res = await post();
    assert.equal(res.status, 503);
    const body = (await res.json()) as { error: { code: string; message: string } };
    assert.equal(body.error.code, "GATE_NO_AGENT");
    assert.match(body.error.message, /no connected agent serves connection 'claude'/);
  }

  test("is not ready and refuses sessions with 503 GATE_NO_AGENT until an agent links, and again after", async () => {
    await expectNoAgent();

    const { token } = await cp.accounts.create("test", "late-agent");
    const agent = await startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: cp.grpcAddress },
        proxy: { listen: "127.0.0.1:0" },
      }),
      token,
      dataDir: dir,
      env: {},
      log: logs.log,
      registry: new Registry(),
    });
    await agent.link.whenState("ready");
    assert.deepEqual(await (await fetch(`${cp.httpUrl}/readyz`)).json(), { status: "ready" });
    const opened = (await (await post()).json()) as OpenedSession;
    assert.equal(opened.proxyUrl, `${agent.proxyUrl}/c/claude`);

    const from = logs.lines.length;
    await agent.stop(1000);
    // The control plane learns of the closed link asynchronously; it says so in its log.
    await logs.waitFor((e) => e.component === "cp.link" && e.msg === "agent disconnected", from);
    assert.equal(cp.agents.size, 0);
    await expectNoAgent();
  });
});

describe("the control plane's data directory", { timeout }, () => {
  test("is made 0700 at start, and a signing key file others can read is warned about", async () => {
    // Regression: a data dir made earlier with a looser mode stayed readable by every local user,
    // and a signing key file they could read (so forge tokens and seals with) went unremarked.
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-rest-"));
    const logs = new LogCapture();
    const start = () =>
      startControlPlane({
        config: standaloneConfig(),
        dataDir: dir,
        log: logs.log,
        registry: new Registry(),
      });
    const keyWarnings = () => logs.lines.filter((l) => l.includes('"component":"cp.keys"'));
    try {
      await chmod(dir, 0o755);
      await (await start()).stop();
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      assert.deepEqual(keyWarnings(), [], "the key file it made is its own");

      await chmod(dir, 0o755);
      await chmod(join(dir, "signing-key.jwk"), 0o644);
      await (await start()).stop();
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
      const warned = await logs.waitFor((e) => e.component === "cp.keys");
      assert.equal(warned.level, 40, "a warning");
      assert.equal(warned.mode, "0644");
      assert.match(String(warned.msg), /open to group or others.*chmod 600/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
