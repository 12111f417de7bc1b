/**
 * The AgentLink between a real agent and a real control plane over gRPC: what
 * an operator relies on when the control plane restarts, its store fails, the
 * network partitions, or a token is wrong or revoked. Exchanges are made with
 * the real Anthropic SDK and read back over REST.
 */
import assert from "node:assert/strict";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type Anthropic from "@anthropic-ai/sdk";
import { APIError } from "@anthropic-ai/sdk";
import { AgentLinkClient, type LinkSpool } from "@gatehouse/agent/link/link.js";
import { Spool } from "@gatehouse/agent/spool/spool.js";
import { buildAgentConfig } from "@gatehouse/control-plane/agents/config.js";
import { createAgentLinkServer, listenAgentLink } from "@gatehouse/control-plane/grpc/agent-link.js";
import { SigningKeys } from "@gatehouse/control-plane/identity/signing-keys.js";
import { createControlPlaneMetrics } from "@gatehouse/control-plane/metrics.js";
import { verifyChain } from "@gatehouse/control-plane/sessions/chain.js";
import type { StoredEvent } from "@gatehouse/control-plane/store/types.js";
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
  options: { initialBackoffMs?: number; maxBackoffMs?: number } = {},
): AgentLinkClient {
  return new AgentLinkClient({
    address,
    token: gh.agentToken,
    hello: {
      agentId: name,
      version: "test",
      capabilities: [],
      connections: [],
      proxyUrl: "http://127.0.0.1:9",
    },
    spool,
    logger: gh.logs.root.child({ component: "agent.link", agent: name }),
    onConfig: () => {},
    onRevocation: () => {},
    onRefused: () => {},
    ...options,
  });
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
    const keys = await SigningKeys.load(gh.cp.store, Date.now());
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
});
