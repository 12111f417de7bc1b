/**
 * The AgentLink between a real agent and a real control plane over gRPC: what
 * an operator relies on when the control plane restarts, its store fails, the
 * network partitions, or a token is wrong or revoked. Exchanges are made with
 * the real Anthropic SDK and read back over REST.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { EventEmitter } from "node:events";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type Anthropic from "@anthropic-ai/sdk";
import { APIError } from "@anthropic-ai/sdk";
import { agentConfigSchema } from "@gatehouse/agent";
import { MAX_SSE_EVENT_BYTES } from "@gatehouse/agent/config.js";
import { AgentLinkClient, type LinkSpool, MAX_BATCH_BYTES } from "@gatehouse/agent/link/link.js";
import { Spool } from "@gatehouse/agent/spool/spool.js";
import { controlPlaneConfigSchema, startControlPlane } from "@gatehouse/control-plane";
import { buildAgentConfig } from "@gatehouse/control-plane/agents/config.js";
import {
  type AgentLinkDeps,
  createAgentLinkServer,
  listenAgentLink,
  MAX_AGENT_MESSAGE_BYTES,
} from "@gatehouse/control-plane/grpc/agent-link.js";
import { SigningKeys } from "@gatehouse/control-plane/identity/signing-keys.js";
import { createControlPlaneMetrics } from "@gatehouse/control-plane/metrics.js";
import { verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import type { StoredEvent } from "@gatehouse/control-plane/store/types.js";
import { loadAgentLink, type SessionEvent, sessionEventCodec } from "@gatehouse/proto";
import * as grpc from "@grpc/grpc-js";
import { Registry } from "prom-client";
import { type LogEntry, TestGatehouse, UPSTREAM_KEY_ENV } from "../support/gatehouse.js";
import { TcpRelay } from "../support/tcp-relay.js";
import { makeCertificates, type TestCertificates } from "../support/tls.js";

const MODEL = "claude-sonnet-4-6";
/** Tests wait on conditions; a behaviour that breaks must fail the test, not hang the run. */
const LIMIT = { timeout: 10_000 };

async function ask(client: Anthropic, text: string): Promise<string> {
  const message = await client.messages.create({
    model: MODEL,
    max_tokens: 64,
    messages: [{ role: "user", content: text }],
  });
  return message.content[0]?.type === "text" ? message.content[0].text : "";
}

async function askStreamed(client: Anthropic, text: string): Promise<string> {
  const final = await client.messages
    .stream({ model: MODEL, max_tokens: 64, messages: [{ role: "user", content: text }] })
    .finalMessage();
  return final.content[0]?.type === "text" ? final.content[0].text : "";
}

/** A session's events as `GET /v1/sessions/{id}/events` returns them, as store records. */
async function restEvents(gh: TestGatehouse, sessionId: string): Promise<StoredEvent[]> {
  const text = await (await gh.admin.events(sessionId)).text();
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => {
      const e = JSON.parse(line) as Omit<StoredEvent, "sessionId" | "body"> & { body?: string };
      return { ...e, sessionId, body: e.body === undefined ? null : Buffer.from(e.body, "base64") };
    });
}

/** Asserts that events read back are a whole chain: seqs 1..N, ids unique, every hash linked. */
function assertWholeChain(events: StoredEvent[]): void {
  assert.deepEqual(
    events.map((e) => e.seq),
    events.map((_, i) => i + 1),
    "seqs run 1..N with no gap",
  );
  assert.equal(new Set(events.map((e) => e.id)).size, events.length, "no event is stored twice");
  assert.deepEqual(verifyChain(events).break, null, "the hash chain verifies");
}

/** The value of a counter in the control plane's Prometheus metrics. */
async function metric(gh: TestGatehouse, name: string): Promise<number> {
  const text = await (await fetch(`${gh.cp.httpUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  assert.ok(line, `metric ${name} is exported`);
  return Number(line.slice(name.length + 1));
}

const linkLost = (entry: LogEntry): boolean =>
  entry.component === "agent.link" && typeof entry.code === "number";

/**
 * An AgentLinkClient on its own, for what the agent's configuration does not expose
 * (backoff bounds) or what needs a spool the test controls. Its log lines carry `agent: name`.
 */
function bareLink(
  gh: TestGatehouse,
  name: string,
  address: string,
  spool: LinkSpool,
  options: {
    initialBackoffMs?: number;
    maxBackoffMs?: number;
    /** The agent token (default: the harness agent's). */
    token?: string;
    /** Connections the hello asks to serve (default: none named, so all it may). */
    connections?: string[];
    onRefused?: (reason: string) => void;
  } = {},
): AgentLinkClient {
  const { token, connections, ...rest } = options;
  return new AgentLinkClient({
    address,
    token: token ?? gh.agentToken,
    hello: {
      agentId: name,
      version: "test",
      capabilities: [],
      connections: connections ?? [],
      proxyUrl: "http://127.0.0.1:9",
    },
    spool,
    logger: gh.logs.root.child({ component: "agent.link", agent: name }),
    onConfig: () => {},
    onRevocation: () => {},
    onRefused: () => {},
    ...rest,
  });
}

/**
 * A spool in memory that holds encoded events exactly as given, so a test can
 * send what the agent's own spool would never hold: events of a newer agent,
 * corrupt bytes, records above today's limits. Seq n is `records[n - 1]`.
 */
class MemorySpool extends EventEmitter<{ written: [number] }> implements LinkSpool {
  readonly records: Uint8Array[] = [];
  ackedSeq = 0;

  get lastWrittenSeq(): number {
    return this.records.length;
  }

  get pending(): number {
    return this.records.length - this.ackedSeq;
  }

  /** Adds records (encoded events, or any bytes) and tells the link. */
  write(...payloads: Uint8Array[]): void {
    this.records.push(...payloads);
    this.emit("written", this.records.length);
  }

  async read(fromSeq: number, maxRecords: number, maxBytes: number) {
    const out: Array<{ seq: number; payload: Uint8Array }> = [];
    let bytes = 0;
    for (let seq = Math.max(fromSeq, this.ackedSeq + 1); seq <= this.records.length; seq++) {
      const payload = this.records[seq - 1] ?? new Uint8Array();
      if (out.length >= maxRecords || (out.length > 0 && bytes + payload.length + 16 > maxBytes)) break;
      out.push({ seq, payload });
      bytes += payload.length + 16;
    }
    return out;
  }

  async ack(upToSeq: number): Promise<void> {
    this.ackedSeq = Math.max(this.ackedSeq, Math.min(upToSeq, this.records.length));
  }
}

/** An encoded SessionEvent: `payload` is one of its payload fields, e.g. `{ exchangeEnd: {...} }`. */
function encoded(
  sessionId: string,
  exchangeId: string,
  index: number,
  payload: Partial<SessionEvent>,
): Uint8Array {
  return sessionEventCodec.encode({
    id: `${exchangeId}:${index}`,
    sessionId,
    exchangeId,
    timeUnixMicros: Date.now() * 1000,
    ...payload,
  });
}

/** What a replica of the harness's control plane builds agent configurations from: its keys and `claude`. */
async function replicaConfigSources(gh: TestGatehouse) {
  const keys = await SigningKeys.load(join(gh.dir, "signing-key.jwk"), gh.logs.log("cp.keys"));
  const connections = [
    {
      name: "claude",
      type: "anthropic" as const,
      upstream: gh.fake.url,
      credential: { env: UPSTREAM_KEY_ENV },
    },
  ];
  return { keys, connections };
}

/**
 * A second AgentLink server on the harness's store, registry and sessions, as
 * another replica would have, with `overrides` for what a test needs to differ.
 */
async function linkReplica(
  gh: TestGatehouse,
  name: string,
  overrides: Partial<AgentLinkDeps> = {},
): Promise<{ address: string; server: grpc.Server }> {
  const { keys, connections } = await replicaConfigSources(gh);
  const server = createAgentLinkServer({
    store: gh.cp.store,
    sessions: gh.cp.sessions,
    approvals: gh.cp.approvals,
    registry: gh.cp.agents,
    agentConfig: (served) => buildAgentConfig({ connections, keys, store: gh.cp.store }, served, Date.now()),
    controlPlaneId: name,
    heartbeatIntervalMs: 10_000,
    helloTimeoutMs: 10_000,
    metrics: createControlPlaneMetrics(new Registry(), gh.cp.agents),
    logger: gh.logs.root.child({ component: "cp.link", replica: name }),
    now: Date.now,
    ...overrides,
  });
  const port = await listenAgentLink(server, "127.0.0.1:0");
  return { address: `127.0.0.1:${port}`, server };
}

/** A request-head event of a session, as the proxy would record it. */
function requestHead(sessionId: string, exchangeId: string, index: number) {
  return {
    id: `${exchangeId}:${index}`,
    sessionId,
    exchangeId,
    timeUnixMicros: Date.now() * 1000,
    requestHead: {
      connection: "claude",
      method: "GET",
      path: `/v1/models?page=${index}`,
      headers: [],
      kind: "anthropic.models",
    },
  };
}

describe("AgentLink", () => {
  test(
    "after a control-plane restart the agent relinks and every exchange is stored exactly once",
    LIMIT,
    async () => {
      const gh = await TestGatehouse.start();
      try {
        const session = await gh.openSession();
        const client = gh.anthropic(session);
        const answers: string[] = [];
        answers.push(await ask(client, "one"));
        answers.push(await askStreamed(client, "two"));

        // A stream that is still running when the control plane goes away.
        let release = () => {};
        const held = new Promise<void>((resolve) => {
          release = resolve;
        });
        gh.fake.reply({ streaming: { pieces: 8, hold: { afterEvents: 4, until: held } } });
        const third = gh.fake.nextRequest();
        const heldAnswer = askStreamed(client, "three, held across the restart");
        await third;
        gh.fake.reply(null);

        const lost = gh.agent.link.whenState("backoff");
        await gh.cp.stop();
        await lost;
        release();
        answers.push(await heldAnswer);
        // The agent keeps serving while the control plane is away: tokens are verified locally.
        answers.push(await ask(client, "four, while the control plane is down"));
        answers.push(await askStreamed(client, "five, while the control plane is down"));
        assert.notEqual(gh.agent.link.state, "ready");
        assert.ok(gh.agent.spool.pending > 0, "events wait in the spool");

        await gh.startControlPlane();
        await gh.agent.link.whenState("ready");
        await gh.agent.link.whenDrained();
        assert.equal(gh.agent.spool.pending, 0);
        assert.equal(gh.agent.spool.ackedSeq, gh.agent.spool.lastWrittenSeq);

        const record = await gh.admin.getSession(session.id);
        assert.deepEqual(
          record.exchanges.map((x) => [x.outcome, x.request.body]),
          [
            "one",
            "two",
            "three, held across the restart",
            "four, while the control plane is down",
            "five, while the control plane is down",
          ].map((content, i) => [
            "completed",
            {
              model: MODEL,
              max_tokens: 64,
              messages: [{ role: "user", content }],
              ...(i === 0 || i === 3 ? {} : { stream: true }),
            },
          ]),
        );
        assert.deepEqual(
          record.exchanges.map((x) => {
            const message = (x.response?.message ?? x.response?.body) as { content: Array<{ text: string }> };
            return message.content[0]?.text;
          }),
          answers,
        );
        const events = await restEvents(gh, session.id);
        assertWholeChain(events);
        // One session, one agent run: every event the agent recorded is there once.
        assert.equal(events.length, gh.agent.spool.lastWrittenSeq);
        assert.equal(events.filter((e) => e.kind === "exchange.end").length, 5);
      } finally {
        await gh.stop();
      }
    },
  );

  test("events resent after a lost acknowledgement are stored once", LIMIT, async () => {
    const gh = await TestGatehouse.start();
    const backup = join(gh.dir, "spool-before-ack");
    try {
      const session = await gh.openSession();
      await gh.cp.stop();
      const client = gh.anthropic(session);
      await ask(client, "one");
      await askStreamed(client, "two");
      await gh.agent.spool.flushed();
      const written = gh.agent.spool.lastWrittenSeq;
      assert.equal(gh.agent.spool.pending, written);

      // The spool as it was before the control plane acknowledged anything.
      await gh.agent.stop();
      await cp(join(gh.dir, "spool"), backup, { recursive: true });
      await gh.startControlPlane();
      await gh.startAgent();
      await gh.agent.link.whenDrained();
      const stored = await restEvents(gh, session.id);
      assert.equal(stored.length, written);
      const ingested = await metric(gh, "gatehouse_cp_events_ingested_total");

      // The control plane stored the events but its acknowledgement never reached the spool.
      await gh.agent.stop();
      await rm(join(gh.dir, "spool"), { recursive: true });
      await cp(backup, join(gh.dir, "spool"), { recursive: true });
      await gh.startAgent();
      assert.equal(gh.agent.spool.recovery.pendingRecords, written, "the agent resends everything");
      await gh.agent.link.whenDrained();

      assert.deepEqual(await restEvents(gh, session.id), stored, "the record is unchanged");
      assertWholeChain(stored);
      assert.equal(await metric(gh, "gatehouse_cp_event_duplicates_total"), written);
      assert.equal(await metric(gh, "gatehouse_cp_events_ingested_total"), ingested, "none stored anew");
    } finally {
      await gh.stop();
    }
  });

  test(
    "events are acknowledged only once stored: a store failure ends the link, acks nothing, loses nothing",
    LIMIT,
    async () => {
      const gh = await TestGatehouse.start();
      try {
        const session = await gh.openSession();
        const client = gh.anthropic(session);
        await ask(client, "stored");
        await gh.agent.link.whenDrained();
        const acked = gh.agent.spool.ackedSeq;
        assert.equal(acked, gh.agent.spool.lastWrittenSeq);

        await gh.cp.store.close();
        const mark = gh.logs.lines.length;
        await askStreamed(client, "not storable yet");
        const ended = await gh.logs.waitFor(linkLost, mark);
        assert.equal(ended.code, grpc.status.UNAVAILABLE, "the agent is told to come back later");
        assert.match(String(ended.reason), /session store/);
        await gh.agent.spool.flushed();
        assert.equal(gh.agent.spool.ackedSeq, acked, "nothing was acknowledged");
        assert.equal(gh.agent.spool.pending, gh.agent.spool.lastWrittenSeq - acked);
        assert.notEqual(gh.agent.link.state, "ready");

        await gh.cp.stop();
        await gh.startControlPlane();
        await gh.agent.link.whenState("ready");
        await gh.agent.link.whenDrained();
        assert.equal(gh.agent.spool.ackedSeq, gh.agent.spool.lastWrittenSeq);
        const record = await gh.admin.getSession(session.id);
        assert.deepEqual(
          record.exchanges.map((x) => x.outcome),
          ["completed", "completed"],
        );
        const events = await restEvents(gh, session.id);
        assertWholeChain(events);
        assert.equal(events.length, gh.agent.spool.lastWrittenSeq);
      } finally {
        await gh.stop();
      }
    },
  );

  describe("agent tokens", () => {
    let gh: TestGatehouse;
    before(async () => {
      gh = await TestGatehouse.start();
    });
    after(() => gh.stop());

    test(
      "an agent with a wrong token is refused, says which setting to fix, and turns clients away",
      LIMIT,
      async () => {
        const mark = gh.logs.lines.length;
        const agent = await gh.startExtraAgent("wrong-token", {
          token: "gha_not-a-token-the-control-plane-issued",
          waitForLink: false,
        });
        const refused = await gh.logs.waitFor((e) => e.agent === "wrong-token" && linkLost(e), mark);
        assert.equal(refused.code, grpc.status.UNAUTHENTICATED);
        assert.equal(refused.level, 50, "logged as an error");
        assert.match(String(refused.msg), /controlPlane\.tokenFile/);
        assert.ok(!JSON.stringify(refused).includes("gha_not-a-token"), "the token is not logged");
        assert.notEqual(agent.link.state, "ready");

        const ready = await fetch(`${agent.proxyUrl}/readyz`);
        assert.equal(ready.status, 503);
        assert.equal(((await ready.json()) as { status: string }).status, "not ready");

        const session = await gh.openSession();
        const client = gh.anthropic({ ...session, proxyUrl: `${agent.proxyUrl}/c/claude` });
        const error = await ask(client, "hello").then(
          () => assert.fail("an unlinked agent must not serve"),
          (e: unknown) => e,
        );
        assert.ok(error instanceof APIError);
        assert.equal(error.status, 503);
        const body = error.error as { type: string; error: { type: string; message: string } };
        assert.equal(body.type, "error");
        assert.equal(body.error.type, "api_error");
        assert.match(body.error.message, /GATE_NOT_READY.*not ready/);
        assert.equal(gh.fake.requests.length, 0, "nothing went upstream");
      },
    );

    test("revoking an agent over REST ends its live link, and only its own", LIMIT, async () => {
      const account = await gh.admin.createAgent("to-revoke");
      const agent = await gh.startExtraAgent("to-revoke", { token: account.token });
      const live = (await gh.admin.listAgents()).items.find((a) => a.id === account.id);
      assert.equal(live?.live.length, 1);
      assert.equal(live?.live[0]?.proxyUrl, agent.proxyUrl);

      const mark = gh.logs.lines.length;
      const revoked = await gh.admin.revokeAgent(account.id);
      assert.ok(revoked.revokedAt !== null);
      const ended = await gh.logs.waitFor((e) => e.agent === "to-revoke" && linkLost(e), mark);
      assert.equal(ended.code, grpc.status.UNAUTHENTICATED, "the live link ends as refused");
      assert.notEqual(agent.link.state, "ready");
      await gh.logs.waitFor(
        (e) => e.component === "cp.link" && e.msg === "agent disconnected" && e.agent === "to-revoke",
        mark,
      );
      const after = (await gh.admin.listAgents()).items.find((a) => a.id === account.id);
      assert.deepEqual(after?.live, [], "the control plane no longer counts it as linked");
      assert.equal(gh.agent.link.state, "ready", "other agents keep their links");

      // A revoked agent stops spending the connection's credential on its cached configuration.
      const session = await gh.openSession();
      const refused = await fetch(`${agent.proxyUrl}/c/claude/v1/messages`, {
        method: "POST",
        headers: { authorization: `Bearer ${session.token}`, "content-type": "application/json" },
        body: JSON.stringify({
          model: "claude-sonnet-4-6",
          max_tokens: 8,
          messages: [{ role: "user", content: "x" }],
        }),
      });
      assert.equal(refused.status, 503);
      assert.equal(refused.headers.get("x-gatehouse-error"), "GATE_NOT_READY");
      assert.match(await refused.text(), /refused this agent's token/);
      // Regression: the link's own ending used to be reported as a failure of the control plane.
      const errors = gh.logs.lines
        .slice(mark)
        .map((line) => JSON.parse(line) as LogEntry)
        .filter((e) => e.component === "cp.link" && Number(e.level) >= 50);
      assert.deepEqual(errors, [], "ending a revoked agent's link is not logged as an error");
    });
  });

  describe("TLS", () => {
    let certs: TestCertificates;
    before(async () => {
      certs = await makeCertificates();
    });
    after(() => certs.remove());

    test(
      "an agent that trusts the control plane's CA links over TLS and records through it",
      LIMIT,
      async () => {
        const gh = await TestGatehouse.start({
          grpcTls: { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile },
          // The server's address is 127.0.0.1; TLS names it by a DNS name in its certificate.
          linkTls: { caFile: certs.caFile, serverName: "localhost" },
        });
        try {
          const session = await gh.openSession();
          await ask(gh.anthropic(session), "over tls");
          const record = await gh.record(session.id);
          assert.equal(record.exchanges[0]?.outcome, "completed");

          // Neither an agent that does not trust the control plane's CA nor a plaintext one links.
          for (const [name, tls] of [
            ["system-roots", { serverName: "localhost" }],
            ["plaintext", null],
          ] as const) {
            const mark = gh.logs.lines.length;
            const agent = await gh.startExtraAgent(name, { tls, waitForLink: false });
            const ended = await gh.logs.waitFor((e) => e.agent === name && linkLost(e), mark);
            assert.equal(ended.code, grpc.status.UNAVAILABLE, name);
            assert.notEqual(agent.link.state, "ready", name);
          }
          assert.equal(gh.cp.agents.size, 1);
        } finally {
          await gh.stop();
        }
      },
    );

    test("with clientCaFile set, only an agent with a client certificate links", LIMIT, async () => {
      const gh = await TestGatehouse.start({
        grpcTls: {
          certFile: certs.serverCertFile,
          keyFile: certs.serverKeyFile,
          clientCaFile: certs.caFile,
        },
        linkTls: {
          caFile: certs.caFile,
          certFile: certs.clientCertFile,
          keyFile: certs.clientKeyFile,
          serverName: "localhost",
        },
      });
      try {
        const session = await gh.openSession();
        await ask(gh.anthropic(session), "over mtls");
        assert.equal((await gh.record(session.id)).exchanges.length, 1);

        const mark = gh.logs.lines.length;
        const anonymous = await gh.startExtraAgent("no-client-cert", {
          tls: { caFile: certs.caFile, serverName: "localhost" },
          waitForLink: false,
        });
        const ended = await gh.logs.waitFor((e) => e.agent === "no-client-cert" && linkLost(e), mark);
        assert.equal(ended.code, grpc.status.UNAVAILABLE);
        assert.notEqual(anonymous.link.state, "ready");
        assert.equal(gh.cp.agents.size, 1, "only the agent with a certificate is linked");
      } finally {
        await gh.stop();
      }
    });
  });

  test("a session closed while an agent is being welcomed is refused by that agent", LIMIT, async () => {
    const gh = await TestGatehouse.start();
    const session = await gh.openSession();
    // A second AgentLink server on the same store and registry whose welcome is slow
    // to build: the session is closed after its revocation list was read and before
    // the welcome is sent, the window in which the close's broadcast used to miss the agent.
    const keys = await SigningKeys.load(join(gh.dir, "signing-key.jwk"), gh.logs.log("cp.keys"));
    const connections = [
      {
        name: "claude",
        type: "anthropic" as const,
        upstream: gh.fake.url,
        credential: { env: UPSTREAM_KEY_ENV },
      },
    ];
    let closeMidWelcome: (() => Promise<unknown>) | null = () => gh.admin.closeSession(session.id);
    const server = createAgentLinkServer({
      store: gh.cp.store,
      sessions: gh.cp.sessions,
      approvals: gh.cp.approvals,
      registry: gh.cp.agents,
      agentConfig: async (served) => {
        const config = await buildAgentConfig({ connections, keys, store: gh.cp.store }, served, Date.now());
        const close = closeMidWelcome;
        closeMidWelcome = null;
        await close?.();
        return config;
      },
      controlPlaneId: "slow-welcome",
      heartbeatIntervalMs: 10_000,
      helloTimeoutMs: 10_000,
      metrics: createControlPlaneMetrics(new Registry(), gh.cp.agents),
      logger: gh.logs.root.child({ component: "cp.link", replica: "slow-welcome" }),
      now: Date.now,
    });
    try {
      const port = await listenAgentLink(server, "127.0.0.1:0");
      const agent = await gh.startExtraAgent("welcomed", { address: `127.0.0.1:${port}` });
      assert.equal(closeMidWelcome, null, "the session was closed during the welcome");
      const client = gh.anthropic({ ...session, proxyUrl: `${agent.proxyUrl}/c/claude` });
      const error = await ask(client, "after the close").then(
        () => assert.fail("a closed session's token must be refused"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 401);
      assert.equal(gh.fake.requests.length, 0, "nothing went upstream");
    } finally {
      await gh.stop();
      server.forceShutdown();
    }
  });

  test(
    "a backlog whose read was under way when the link dropped is sent after the relink",
    LIMIT,
    async () => {
      const gh = await TestGatehouse.start();
      const relay = await TcpRelay.start(() => gh.cp.grpcAddress);
      const dir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
      const spool = await Spool.open({ dir });
      let link: AgentLinkClient | undefined;
      try {
        const session = await gh.openSession();
        for (let i = 0; i < 3; i++)
          spool.append(requestHead(session.id, "0197f000-0000-7000-8000-000000000001", i));
        await spool.flushed();
        // The first read waits until the test lets it finish: a slow disk.
        let entered = () => {};
        const reading = new Promise<void>((resolve) => {
          entered = resolve;
        });
        let finish = () => {};
        const finished = new Promise<void>((resolve) => {
          finish = resolve;
        });
        let reads = 0;
        const slow: LinkSpool = {
          get ackedSeq() {
            return spool.ackedSeq;
          },
          get lastWrittenSeq() {
            return spool.lastWrittenSeq;
          },
          get pending() {
            return spool.pending;
          },
          read: async (from, max, bytes) => {
            reads += 1;
            if (reads === 1) {
              entered();
              await finished;
            }
            return spool.read(from, max, bytes);
          },
          ack: (upTo) => spool.ack(upTo),
          on: (event, listener) => spool.on(event, listener),
        };
        link = bareLink(gh, "slow-disk", relay.address, slow);
        link.start();
        await reading;
        const lost = link.whenState("backoff");
        relay.cut();
        await lost;
        relay.restore();
        await link.whenState("ready");
        finish();
        // Regression: the relinked stream waited for a new event before sending the backlog.
        await link.whenDrained();
        assert.equal(spool.pending, 0);
        assert.equal((await restEvents(gh, session.id)).length, 3);
      } finally {
        await link?.stop();
        await spool.close();
        await rm(dir, { recursive: true, force: true });
        await gh.stop();
        await relay.close();
      }
    },
  );

  test(
    "however long the control plane is unreachable, the agent retries at its own pace",
    LIMIT,
    async () => {
      const gh = await TestGatehouse.start();
      const relay = await TcpRelay.start(() => gh.cp.grpcAddress);
      const dir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
      const spool = await Spool.open({ dir });
      const link = bareLink(gh, "patient", relay.address, spool, { initialBackoffMs: 20, maxBackoffMs: 100 });
      try {
        relay.cut();
        link.start();
        // With attempts at most ~100 ms apart this takes about a second. Regression: gRPC's own
        // reconnect backoff (1 s, growing by 1.6x to 120 s) held connection attempts back far
        // beyond maxBackoffMs (12 attempts took minutes, failing LIMIT), so after a long outage
        // an agent relinked up to two minutes after the control plane was back.
        await relay.whenConnections(12);
        relay.restore();
        await link.whenState("ready");
      } finally {
        await link.stop();
        await spool.close();
        await rm(dir, { recursive: true, force: true });
        await gh.stop();
        await relay.close();
      }
    },
  );

  test("a session closed while the agent was cut off is refused once the agent relinks", LIMIT, async () => {
    const gh = await TestGatehouse.start();
    const relay = await TcpRelay.start(() => gh.cp.grpcAddress);
    try {
      await gh.agent.stop();
      await gh.startAgent({ address: relay.address });
      const session = await gh.openSession();
      const client = gh.anthropic(session);
      await ask(client, "before the partition");

      const mark = gh.logs.lines.length;
      const lost = gh.agent.link.whenState("backoff");
      relay.cut();
      await lost;
      await gh.logs.waitFor((e) => e.component === "cp.link" && e.msg === "agent disconnected", mark);
      await gh.admin.closeSession(session.id);

      relay.restore();
      await gh.agent.link.whenState("ready");
      const error = await ask(client, "after the close").then(
        () => assert.fail("a closed session's token must be refused"),
        (e: unknown) => e,
      );
      assert.ok(error instanceof APIError);
      assert.equal(error.status, 401);
      assert.match(JSON.stringify(error.error), /was closed/);
      assert.equal(gh.fake.requests.length, 1, "the refused request never went upstream");
    } finally {
      await gh.stop();
      await relay.close();
    }
  });

  describe("event size", () => {
    test("a batch holds at most the byte cap of records, unless it is a single record", LIMIT, async () => {
      // Regression: the spool's read stopped only once it had passed maxBytes, so a large
      // event joined a nearly full batch, and the batch outgrew what the control plane accepts.
      const MB = 1_000_000;
      const sizes = [3 * MB, 6 * MB, 10 * MB, 100];
      for (const memoryBytes of [undefined, 0]) {
        const dir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
        // memoryBytes 0: every read goes to the segment files.
        const spool = await Spool.open({ dir, ...(memoryBytes === undefined ? {} : { memoryBytes }) });
        try {
          sizes.forEach((size, i) => {
            spool.append({
              id: `x:${i}`,
              sessionId: "s",
              exchangeId: "x",
              timeUnixMicros: 1,
              requestBody: { data: Buffer.alloc(size, 97) },
            });
          });
          await spool.flushed();
          const batches: number[][] = [];
          for (let next = 1; next <= spool.lastWrittenSeq; ) {
            const batch = await spool.read(next, 1000, MAX_BATCH_BYTES);
            const bytes = batch.reduce((sum, r) => sum + r.payload.length + 16, 0);
            assert.ok(batch.length === 1 || bytes <= MAX_BATCH_BYTES, `a batch of ${bytes} bytes`);
            batches.push(batch.map((r) => r.seq));
            next = (batch.at(-1)?.seq ?? next) + 1;
          }
          // 3 MB + 6 MB pass the 8 MiB cap, so each leaves alone; 10 MB is over it on its own.
          assert.deepEqual(batches, [[1], [2], [3], [4]], `memoryBytes ${String(memoryBytes)}`);
        } finally {
          await spool.close();
          await rm(dir, { recursive: true, force: true });
        }
      }
    });

    test(
      "an event too large to share a batch is stored, and the events behind it are not held back",
      LIMIT,
      async () => {
        // Regression: a 3.9 MB body chunk and a 15 MB server-sent event (recorded when the
        // agent allowed 16 MiB events) left in one 19 MB batch; the control plane refused
        // it (RESOURCE_EXHAUSTED) on every retry, and nothing recorded after it was stored.
        const gh = await TestGatehouse.start();
        try {
          const session = await gh.openSession();
          const spool = gh.agent.spool;
          const exchangeId = randomUUID();
          const event = (index: number, payload: Partial<SessionEvent>) => ({
            id: `${exchangeId}:${index}`,
            sessionId: session.id,
            exchangeId,
            timeUnixMicros: Date.now() * 1000,
            ...payload,
          });
          // Recorded while the control plane is away, so that the link reads them all at once.
          const lost = gh.agent.link.whenState("backoff");
          await gh.cp.stop();
          await lost;
          spool.append(event(0, { requestBody: { data: Buffer.alloc(3_900_000, 97) } }));
          spool.append(event(1, { sse: { event: "content_block_delta", data: "a".repeat(15_000_000) } }));
          spool.append(event(2, { exchangeEnd: { outcome: "OUTCOME_COMPLETED", status: 200 } }));
          await spool.flushed();
          await gh.startControlPlane();
          await gh.agent.link.whenState("ready");
          await gh.agent.link.whenDrained();
          assert.equal(spool.pending, 0);
          const stored = await gh.cp.store.readEvents(session.id, 0, 10);
          assert.deepEqual(
            stored.map((e) => e.kind),
            ["request.body", "response.sse", "exchange.end"],
          );
          assert.equal(String(stored[1]?.attrs.data).length, 15_000_000);
        } finally {
          await gh.stop();
        }
      },
    );

    test("proxy.maxSseEventBytes is bounded so that its largest event fits one link message", () => {
      // Regression: the default (16 MiB) let one recorded event outgrow the control plane's
      // receive limit, and the agent resent it for ever.
      const base = { controlPlane: { address: "127.0.0.1:7071" } };
      assert.equal(agentConfigSchema.parse(base).proxy.maxSseEventBytes, 4 * 1024 * 1024);
      assert.equal(MAX_SSE_EVENT_BYTES, MAX_BATCH_BYTES);
      const tooBig = agentConfigSchema.safeParse({
        ...base,
        proxy: { maxSseEventBytes: MAX_SSE_EVENT_BYTES + 1 },
      });
      assert.equal(tooBig.success, false);
      assert.deepEqual(tooBig.error?.issues[0]?.path, ["proxy", "maxSseEventBytes"]);
      assert.match(String(tooBig.error?.issues[0]?.message), /8 MiB/);
      // The largest event the proxy may record, with the longest ids it gives, goes as a single record.
      const largest = encoded(randomUUID(), randomUUID(), 2 ** 31, {
        sse: { event: "content_block_delta".padEnd(64, "x"), data: "x".repeat(MAX_SSE_EVENT_BYTES) },
      });
      assert.ok(largest.length + 64 < MAX_AGENT_MESSAGE_BYTES / 2, `${largest.length} bytes`);
    });
  });

  describe("events the control plane cannot translate", () => {
    test(
      "an event with a payload this version does not know is stored as unrecognized, chained, and left out of views",
      LIMIT,
      async () => {
        // Regression: such an event (from a newer agent) was refused with the whole batch,
        // on every retry, so the agent's recording stopped there for good.
        const gh = await TestGatehouse.start();
        const spool = new MemorySpool();
        const link = bareLink(gh, "newer-agent", gh.cp.grpcAddress, spool);
        try {
          const session = await gh.openSession();
          const x = randomUUID();
          // Field 17 of SessionEvent, length-delimited: a payload added after this version.
          const newer = Buffer.concat([encoded(session.id, x, 1, {}), Buffer.from([0x8a, 0x01, 3, 1, 2, 3])]);
          const alone = Buffer.concat([
            encoded(session.id, randomUUID(), 0, {}),
            Buffer.from([0x8a, 0x01, 0]),
          ]);
          spool.write(
            encoded(session.id, x, 0, {
              requestHead: {
                connection: "claude",
                method: "GET",
                path: "/v1/models",
                headers: [],
                kind: "anthropic.models",
              },
            }),
            newer,
            encoded(session.id, x, 2, { exchangeEnd: { outcome: "OUTCOME_COMPLETED", status: 200 } }),
            alone,
          );
          link.start();
          await link.whenState("ready");
          await link.whenDrained();
          assert.equal(spool.pending, 0, "everything was acknowledged");

          const events = await restEvents(gh, session.id);
          assertWholeChain(events);
          assert.deepEqual(
            events.map((e) => e.kind),
            ["request.head", "unrecognized", "exchange.end", "unrecognized"],
          );
          const kept = events[1];
          assert.deepEqual(kept?.attrs, {}, "the payload's name is not known to this version");
          assert.equal(Buffer.from(kept?.body ?? []).toString("hex"), newer.toString("hex"), "kept as sent");
          const view = await gh.admin.getSession(session.id);
          assert.deepEqual(
            view.exchanges.map((e) => [e.id, e.outcome]),
            [[x, "completed"]],
            "views show the exchange and nothing for unrecognized events",
          );
        } finally {
          await link.stop();
          await gh.stop();
        }
      },
    );

    test(
      "refusals that retrying cannot cure are logged as errors saying what to do, and retried slowly",
      LIMIT,
      async () => {
        // Regression: a corrupt event (INVALID_ARGUMENT) or a message over the control plane's
        // limit (RESOURCE_EXHAUSTED) was retried at the quickest pace as if the network had
        // failed, logged as a warning, and did not say which event or what to do.
        const gh = await TestGatehouse.start();
        try {
          const session = await gh.openSession();
          const cases = [
            {
              name: "corrupt",
              // A varint field (4, the time) whose value is missing.
              record: Buffer.from([0x20]),
              code: grpc.status.INVALID_ARGUMENT,
              reason: /event 1 of the batch from spool seq 1 \(seq 2\) is not an encoded SessionEvent/,
              msg: /upgrade the older one/,
            },
            {
              name: "oversized",
              record: encoded(session.id, randomUUID(), 0, {
                requestBody: { data: Buffer.alloc(MAX_AGENT_MESSAGE_BYTES + 1) },
              }),
              code: grpc.status.RESOURCE_EXHAUSTED,
              reason: /larger than max/,
              msg: /control plane at least as new/,
            },
          ];
          for (const c of cases) {
            const spool = new MemorySpool();
            spool.write(
              encoded(session.id, randomUUID(), 0, { exchangeEnd: { outcome: "OUTCOME_COMPLETED" } }),
            );
            spool.write(c.record);
            const link = bareLink(gh, c.name, gh.cp.grpcAddress, spool, {
              initialBackoffMs: 1,
              maxBackoffMs: 60_000,
            });
            const mark = gh.logs.lines.length;
            try {
              link.start();
              const ended = await gh.logs.waitFor((e) => e.agent === c.name && linkLost(e), mark);
              assert.equal(ended.code, c.code, c.name);
              assert.match(String(ended.reason), c.reason, c.name);
              assert.equal(ended.level, 50, `${c.name}: logged as an error`);
              assert.match(String(ended.msg), c.msg, c.name);
              assert.ok(Number(ended.retryInMs) >= 30_000, `${c.name}: retried at the slowest pace`);
              assert.ok(spool.ackedSeq < 2, `${c.name}: the refused event is not acknowledged`);
            } finally {
              await link.stop();
            }
          }
        } finally {
          await gh.stop();
        }
      },
    );
  });

  describe("connection scope", () => {
    let gh: TestGatehouse;
    before(async () => {
      gh = await TestGatehouse.start({
        connections: [
          {
            name: "ledger",
            type: "anthropic",
            upstream: "http://127.0.0.1:9",
            credential: { env: "UNUSED" },
          },
        ],
      });
    });
    after(() => gh.stop());

    test(
      "an agent asking to serve connections outside its account's scope is refused, naming them",
      LIMIT,
      async () => {
        const account = await gh.admin.createAgent("claude-only", { connections: ["claude"] });
        const spool = new MemorySpool();
        let refusedWith = "";
        const greedy = bareLink(gh, "greedy", gh.cp.grpcAddress, spool, {
          token: account.token,
          connections: ["claude", "ledger"],
          onRefused: (reason) => {
            refusedWith = reason;
          },
        });
        const modest = bareLink(gh, "modest", gh.cp.grpcAddress, spool, { token: account.token });
        try {
          const mark = gh.logs.lines.length;
          greedy.start();
          const ended = await gh.logs.waitFor((e) => e.agent === "greedy" && linkLost(e), mark);
          assert.equal(ended.code, grpc.status.PERMISSION_DENIED);
          assert.match(String(ended.reason), /may serve 'claude', not 'ledger'/);
          assert.match(String(ended.msg), /agent\.connections/);
          assert.match(refusedWith, /'ledger'/, "the agent stops serving and says why");
          assert.ok(!gh.cp.agents.list().some((a) => a.agentId === "greedy"), "never registered");

          // Naming nothing, an agent serves its account's scope, not every connection.
          modest.start();
          await modest.whenState("ready");
          const live = gh.cp.agents.list().find((a) => a.agentId === "modest");
          assert.deepEqual(live?.connections, ["claude"]);
        } finally {
          await greedy.stop();
          await modest.stop();
        }
      },
    );

    test(
      "events for a session outside the scope are refused; events for an unknown session are stored and counted",
      LIMIT,
      async () => {
        const account = await gh.admin.createAgent("ledger-recorder", { connections: ["ledger"] });
        const claudeSession = await gh.openSession("claude");
        const outside = new MemorySpool();
        outside.write(
          encoded(claudeSession.id, randomUUID(), 0, { exchangeEnd: { outcome: "OUTCOME_COMPLETED" } }),
        );
        const intruder = bareLink(gh, "intruder", gh.cp.grpcAddress, outside, { token: account.token });
        const ghost = randomUUID();
        const orphans = new MemorySpool();
        const x = randomUUID();
        orphans.write(
          encoded(ghost, x, 0, { requestBody: { data: Buffer.from("kept") } }),
          encoded(ghost, x, 1, { exchangeEnd: { outcome: "OUTCOME_COMPLETED" } }),
        );
        const recorder = bareLink(gh, "recorder", gh.cp.grpcAddress, orphans, { token: account.token });
        try {
          // Regression: any agent account could write into any session's record.
          const mark = gh.logs.lines.length;
          intruder.start();
          const ended = await gh.logs.waitFor((e) => e.agent === "intruder" && linkLost(e), mark);
          // A status of its own (not PERMISSION_DENIED): the agent keeps its configuration and
          // serves on, holding the batch, instead of acting as if its token were refused.
          assert.equal(ended.code, grpc.status.FAILED_PRECONDITION);
          assert.equal(ended.level, 50, "logged as an error saying what to do");
          assert.match(String(ended.msg), /outside this agent's account scope/);
          assert.match(
            String(ended.reason),
            new RegExp(`session ${claudeSession.id} of connection 'claude'`),
          );
          assert.equal(outside.ackedSeq, 0);
          assert.deepEqual(await gh.cp.store.readEvents(claudeSession.id, 0, 10), [], "nothing was stored");

          // Events are never lost for want of a session record, but an operator hears of them.
          const before = await metric(gh, "gatehouse_cp_events_unknown_session_total");
          recorder.start();
          await recorder.whenState("ready");
          await recorder.whenDrained();
          assert.equal(orphans.pending, 0);
          assert.equal((await gh.cp.store.readEvents(ghost, 0, 10)).length, 2);
          assert.equal(await metric(gh, "gatehouse_cp_events_unknown_session_total"), before + 2);
          const warned = await gh.logs.waitFor((e) => e.component === "cp.link" && e.sessionId === ghost);
          assert.equal(warned.level, 40);
          assert.equal(warned.events, 2);
        } finally {
          await intruder.stop();
          await recorder.stop();
        }
      },
    );
  });

  test(
    "a session closed at one control-plane replica is refused by agents linked to another",
    LIMIT,
    async () => {
      // Regression: only the agents of the replica that closed the session were told;
      // an agent linked to another replica accepted the token until it relinked.
      const gh = await TestGatehouse.start();
      const replica = await startControlPlane({
        config: controlPlaneConfigSchema.parse({
          connections: [
            {
              name: "claude",
              type: "anthropic",
              upstream: gh.fake.url,
              credential: { env: UPSTREAM_KEY_ENV },
            },
          ],
          store: gh.storeConfig,
          http: { listen: "127.0.0.1:0" },
          grpc: { listen: "127.0.0.1:0" },
        }),
        // The same store and data directory (signing keys): the replicas share them.
        dataDir: gh.dir,
        log: (component) => gh.logs.root.child({ component, replica: "b" }),
        registry: new Registry(),
      });
      try {
        const agent = await gh.startExtraAgent("on-replica-b", { address: replica.grpcAddress });
        const session = await gh.openSession();
        const client = gh.anthropic({ ...session, proxyUrl: `${agent.proxyUrl}/c/claude` });
        await ask(client, "before the close");
        const revoked = new Promise<void>((resolve) => {
          const listener = (ids: string[]) => {
            if (!ids.includes(session.id)) return;
            agent.verifier.off("revoked", listener);
            resolve();
          };
          agent.verifier.on("revoked", listener);
        });
        await gh.admin.closeSession(session.id);
        await revoked;
        const error = await ask(client, "after the close").then(
          () => assert.fail("a closed session's token must be refused"),
          (e: unknown) => e,
        );
        assert.ok(error instanceof APIError);
        assert.equal(error.status, 401);
        assert.equal(gh.fake.requests.length, 1, "the refused request never went upstream");
      } finally {
        await replica.stop();
        await gh.stop();
      }
    },
  );

  test("an agent token revoked while its link is being set up does not stay linked", LIMIT, async () => {
    // Regression: revoking between the link's token check and its registration ended no
    // stream (none was registered yet), and the link then served on with a revoked token.
    const gh = await TestGatehouse.start();
    const account = await gh.admin.createAgent("revoked-mid-handshake");
    let revokeMidHandshake: (() => Promise<unknown>) | null = () => gh.cp.accounts.revoke("test", account.id);
    const { address, server } = await linkReplica(gh, "racy", {
      store: {
        getSession: (id) => gh.cp.store.getSession(id),
        touchAgent: (id, at) => gh.cp.store.touchAgent(id, at),
        findAgentByTokenHash: async (hash) => {
          const found = await gh.cp.store.findAgentByTokenHash(hash);
          const revoke = revokeMidHandshake;
          revokeMidHandshake = null;
          await revoke?.();
          return found;
        },
      },
    });
    try {
      const mark = gh.logs.lines.length;
      const agent = await gh.startExtraAgent("revoked-mid-handshake", {
        token: account.token,
        address,
        waitForLink: false,
      });
      const linked = agent.link.whenState("ready").then(() => "linked");
      const refused = gh.logs
        .waitFor((e) => e.agent === "revoked-mid-handshake" && linkLost(e), mark)
        .then((e) => e.code);
      assert.equal(await Promise.race([linked, refused]), grpc.status.UNAUTHENTICATED);
      assert.equal(revokeMidHandshake, null, "the token was revoked during the handshake");
      assert.ok(!gh.cp.agents.list().some((a) => a.accountId === account.id), "not registered");
    } finally {
      await gh.stop();
      server.forceShutdown();
    }
  });

  test(
    "an agent account revoked at another replica ends the agent's link within a heartbeat",
    LIMIT,
    async () => {
      // Regression: revoking an account ended only the links of the replica that revoked it;
      // links held by other replicas were authenticated once, at connect, and lived on.
      const gh = await TestGatehouse.start();
      const { address, server } = await linkReplica(gh, "other-replica", { heartbeatIntervalMs: 100 });
      const account = await gh.admin.createAgent("elsewhere");
      const link = bareLink(gh, "elsewhere", address, new MemorySpool(), { token: account.token });
      try {
        link.start();
        await link.whenState("ready");
        const mark = gh.logs.lines.length;
        await gh.admin.revokeAgent(account.id);
        const ended = await gh.logs.waitFor((e) => e.agent === "elsewhere" && linkLost(e), mark);
        assert.equal(ended.code, grpc.status.UNAUTHENTICATED);
        assert.match(String(ended.reason), /agent token revoked/);
      } finally {
        await link.stop();
        server.forceShutdown();
        await gh.stop();
      }
    },
  );

  test("a welcome without a configuration is a protocol error: the agent relinks", LIMIT, async () => {
    // Regression: the link ignored such a welcome and waited on that stream for ever,
    // neither ready nor retrying.
    const gh = await TestGatehouse.start();
    const server = new grpc.Server();
    let calls = 0;
    server.addService(loadAgentLink().AgentLink.service, {
      Connect: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
        calls += 1;
        call.on("error", () => {});
        call.write({
          welcome: {
            controlPlaneId: `answer-${calls}`,
            heartbeatIntervalMs: 10_000,
            ...(calls === 1 ? {} : { config: { connections: [], tokenKeys: [], revoked: [] } }),
          },
        });
      },
    });
    const port = await listenAgentLink(server, "127.0.0.1:0");
    const link = bareLink(gh, "configless", `127.0.0.1:${port}`, new MemorySpool(), { initialBackoffMs: 1 });
    try {
      const mark = gh.logs.lines.length;
      link.start();
      await link.whenState("ready");
      assert.equal(calls, 2, "ready only after a second, complete welcome");
      const logged = await gh.logs.waitFor((e) => e.agent === "configless" && e.level === 50, mark);
      assert.match(String(logged.msg), /welcome carried no configuration/);
    } finally {
      await link.stop();
      server.forceShutdown();
      await gh.stop();
    }
  });

  test(
    "a pushed masking pattern the agent cannot compile is logged and skipped; the link and the other patterns keep working",
    LIMIT,
    async () => {
      // The control plane checks patterns at start-up, but an agent on another Node version may
      // compile them differently: such a pattern must not end the link's message handler.
      const gh = await TestGatehouse.start();
      const { keys, connections } = await replicaConfigSources(gh);
      const maskingPatterns = [
        { name: "unusable", pattern: "corp-(" },
        { name: "internal-host", pattern: "corp-[a-z]+\\.internal" },
      ];
      const { address, server } = await linkReplica(gh, "patterns", {
        agentConfig: (served) =>
          buildAgentConfig({ connections, maskingPatterns, keys, store: gh.cp.store }, served, Date.now()),
      });
      try {
        const mark = gh.logs.lines.length;
        const agent = await gh.startExtraAgent("patterns", { address });
        const skipped = await gh.logs.waitFor(
          (e) => e.agent === "patterns" && e.msg === "skipped a masking pattern this agent cannot use",
          mark,
        );
        assert.equal(skipped.pattern, "unusable");
        assert.equal(agent.link.state, "ready");

        const session = await gh.openSession();
        gh.fake.reply({
          content: [{ type: "text", text: "pushed to corp-build.internal today" }],
          streaming: { pieces: 5 },
        });
        const client = gh.anthropic({ ...session, proxyUrl: `${agent.proxyUrl}/c/claude` });
        assert.equal(await askStreamed(client, "where?"), "pushed to [MASKED:internal-host] today");
      } finally {
        server.forceShutdown();
        await gh.stop();
      }
    },
  );

  test(
    "token keys the agent cannot read are logged and refused; the agent serves on with the last good ones",
    LIMIT,
    async () => {
      // Regression: a pushed key that was not JSON threw inside the link's message handler, an
      // uncaught exception that ended the agent's process.
      const gh = await TestGatehouse.start();
      const { keys, connections } = await replicaConfigSources(gh);
      const good = await buildAgentConfig({ connections, keys, store: gh.cp.store }, [], Date.now());
      const unreadable = (jwkJson: string) => ({
        ...good,
        tokenKeys: [...(good.tokenKeys ?? []), { kid: "bad", jwkJson }],
      });
      const server = new grpc.Server();
      let link: grpc.ServerDuplexStream<unknown, unknown> | undefined;
      server.addService(loadAgentLink().AgentLink.service, {
        Connect: (call: grpc.ServerDuplexStream<unknown, unknown>) => {
          link = call;
          call.on("error", () => {});
          call.write({
            welcome: {
              controlPlaneId: "bad-keys",
              heartbeatIntervalMs: 10_000,
              config: unreadable("{not json"),
            },
          });
        },
      });
      const port = await listenAgentLink(server, "127.0.0.1:0");
      const refusedConfig = (from: number) =>
        gh.logs
          .waitFor((e) => e.agent === "bad-keys" && e.level === 50, from)
          .then((e) => {
            assert.match(String(e.msg), /refused a configuration from the control plane/);
            assert.equal(e.code, "GATE_CONFIG_INVALID");
          });
      try {
        let mark = gh.logs.lines.length;
        const agent = await gh.startExtraAgent("bad-keys", { address: `127.0.0.1:${port}` });
        await refusedConfig(mark);
        assert.equal((await fetch(`${agent.proxyUrl}/readyz`)).status, 503, "nothing to serve with yet");

        mark = gh.logs.lines.length;
        link?.write({ config: good });
        await gh.logs.waitFor((e) => e.agent === "bad-keys" && e.msg === "configuration received", mark);
        assert.equal((await fetch(`${agent.proxyUrl}/readyz`)).status, 200);

        for (const jwkJson of ["[1, 2]", "null", '{"no":"kty"}']) {
          mark = gh.logs.lines.length;
          link?.write({ config: unreadable(jwkJson) });
          await refusedConfig(mark);
        }
        // Still up, still serving: a token it has not seen before verifies with the keys it kept.
        assert.equal((await fetch(`${agent.proxyUrl}/readyz`)).status, 200);
        const session = await gh.openSession();
        assert.equal((await agent.verifier.verify(session.token, "claude")).sessionId, session.id);
      } finally {
        server.forceShutdown();
        await gh.stop();
      }
    },
  );
});
