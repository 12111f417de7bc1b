/**
 * When something inside the agent fails while an exchange is under way (here:
 * recording one event, as a bug or a full disk would), the client is told, the
 * upstream response is released, and the exchange still gets its end, with the
 * status the client actually got.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import type { Spool } from "@gatehouse/agent/spool/spool.js";
import type { SessionEvent } from "@gatehouse/proto";
import { TestGatehouse } from "../support/gatehouse.js";

const request = {
  model: "claude-sonnet-4-6",
  max_tokens: 64,
  messages: [{ role: "user" as const, content: "hi" }],
};

/** Makes the spool throw, once, on the first event `matches` picks; every other event is kept. */
function failOnce(spool: Spool, matches: (event: SessionEvent) => boolean): void {
  const append = spool.append.bind(spool);
  spool.append = (event) => {
    if (!matches(event)) return append(event);
    spool.append = append;
    throw new Error("injected fault: this event could not be recorded");
  };
}

describe("faults inside an exchange", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(() => gh.stop());

  test("a failure before the response head: 500 to the client, the exchange ended, upstream released", async () => {
    // Regression: a throw between the upstream answer and the relay (recording the response head)
    // escaped forward(): the exchange never got its end, and the upstream response was never
    // destroyed, so the upstream kept streaming into a pooled connection nobody read.
    gh.fake.reply({
      content: [{ type: "text", text: "a stream upstream holds open" }],
      streaming: { pieces: 4, hold: { afterEvents: 2 } },
    });
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    failOnce(gh.agent.spool, (event) => event.responseHead !== undefined && event.sessionId === session.id);
    const error = await gh
      .anthropic(session)
      .messages.create({ ...request, stream: true })
      .catch((e: unknown) => e);
    gh.fake.reply(null);
    assert.ok(error instanceof Anthropic.InternalServerError, String(error));
    assert.match(error.message, /GATE_INTERNAL.*internal error; the details are in the server log/);
    assert.ok(!error.message.includes("injected"), "details stay in the log");

    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.status, 500);
    assert.equal(exchange?.error?.code, "GATE_INTERNAL");
    const upstream = await arrived;
    await upstream.ended;
    assert.equal(upstream.closedEarly, true, "the agent released the upstream response");
  });

  test("a failure mid-stream: an error event, and the record has the status the client got", async () => {
    // Regression: a failure of the agent's own while relaying was reported as
    // GATE_UPSTREAM_UNREACHABLE ("check the agent's network"), blaming upstream for a local fault.
    gh.fake.reply({
      content: [{ type: "text", text: "a stream upstream holds open" }],
      streaming: { pieces: 4, hold: { afterEvents: 3 } },
    });
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    let seen = 0;
    failOnce(gh.agent.spool, (event) => event.sse !== undefined && ++seen === 2);
    const error = await gh
      .anthropic(session)
      .messages.stream(request)
      .finalMessage()
      .catch((e: unknown) => e);
    gh.fake.reply(null);
    assert.ok(error instanceof Anthropic.APIError, String(error));
    assert.match(error.message, /GATE_INTERNAL/);
    const logged = await gh.logs.waitFor((entry) => entry.msg === "relaying an exchange failed");
    assert.equal(logged.component, "agent.proxy");

    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.status, 200, "the client had a 200 head");
    assert.equal(exchange?.error?.code, "GATE_INTERNAL");
    const upstream = await arrived;
    await upstream.ended;
    assert.equal(upstream.closedEarly, true);
  });

  test("an event that could not be recorded never reaches the client", async () => {
    // Regression: events were written to the client before they were recorded, so a failure to
    // record one left the client holding an event the record did not have.
    gh.fake.reply({ content: [{ type: "text", text: "every piece the client sees is recorded" }] });
    const session = await gh.openSession();
    let seen = 0;
    failOnce(
      gh.agent.spool,
      (event) => event.sse !== undefined && event.sessionId === session.id && ++seen === 3,
    );
    const res = await fetch(`${session.proxyUrl}/v1/messages`, {
      method: "POST",
      headers: {
        "x-api-key": session.token,
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
      },
      body: JSON.stringify({ ...request, stream: true }),
    });
    const text = await res.text();
    gh.fake.reply(null);
    const received = text
      .split("\n\n")
      .filter((block) => block !== "")
      .map((block) => [/^event: (.*)$/m.exec(block)?.[1], /^data: (.*)$/m.exec(block)?.[1]]);
    assert.equal(received.at(-1)?.[0], "error", "the client is told the stream failed");
    assert.match(received.at(-1)?.[1] ?? "", /GATE_INTERNAL/);

    await gh.agent.link.whenDrained();
    const recorded = (await (await gh.admin.events(session.id)).text())
      .split("\n")
      .filter((line) => line !== "")
      .map((line) => JSON.parse(line) as { kind: string; attrs: { event?: string; data?: string } })
      .filter((e) => e.kind === "response.sse")
      .map((e) => [e.attrs.event, e.attrs.data]);
    assert.equal(recorded.length, 2, "the events before the one that failed");
    assert.deepEqual(received.slice(0, -1), recorded, "the client saw exactly what was recorded");
  });

  test("a failure before anything went upstream: the exchange is ended and nothing is sent", async () => {
    // Regression: the throw reached the listener's catch (server.ts route()), which answered the
    // client but could not end an exchange it did not know about.
    const session = await gh.openSession();
    const before = gh.fake.requests.length;
    failOnce(gh.agent.spool, (event) => event.requestBody !== undefined && event.sessionId === session.id);
    const error = await gh
      .anthropic(session)
      .messages.create(request)
      .catch((e: unknown) => e);
    assert.ok(error instanceof Anthropic.InternalServerError, String(error));
    assert.equal(gh.fake.requests.length, before);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.status, 500);
    assert.equal(exchange?.error?.code, "GATE_INTERNAL");
  });
});
