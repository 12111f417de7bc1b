/**
 * Closing a session stops what it is doing at the agent, not only what it
 * would do next: a running exchange is aborted upstream, its client is told why
 * in Anthropic's shape, and the record says the session was closed.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { TestGatehouse } from "../support/gatehouse.js";

const request = {
  model: "claude-sonnet-4-6",
  max_tokens: 64,
  messages: [{ role: "user" as const, content: "write at length" }],
};

// Without the fix the held responses never end: the tests' own timeouts make that a quick failure.
describe("closing a session with exchanges in flight", () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start();
  });
  after(() => gh.stop());

  test("a stream in progress ends with an error event saying the session was closed", {
    timeout: 20_000,
  }, async () => {
    // Regression: the token was checked once, when the request arrived, so a stream begun
    // before the session was closed ran on (upstream spending the credential) until it ended.
    gh.fake.reply({
      content: [{ type: "text", text: "an answer that upstream holds after a few events" }],
      streaming: { pieces: 8, hold: { afterEvents: 4 } },
    });
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const finished = gh.exchangeFinished(session.id);
    const stream = gh.anthropic(session).messages.stream(request);
    const outcome = stream.finalMessage().catch((error: unknown) => error);
    const upstream = await arrived;
    await new Promise((resolve) => stream.once("streamEvent", resolve));

    await gh.admin.closeSession(session.id);
    const error = await outcome;
    assert.ok(error instanceof Anthropic.APIError, String(error));
    assert.match(error.message, /GATE_TOKEN_REVOKED.*session .* was closed/);
    await upstream.ended;
    assert.equal(upstream.closedEarly, true, "the agent aborted the upstream request");
    gh.fake.reply(null);

    const end = await finished;
    assert.equal(end.outcome, "OUTCOME_FAILED");
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed");
    assert.equal(exchange?.status, 200, "the status the client got");
    assert.equal(exchange?.error?.code, "GATE_TOKEN_REVOKED");
    assert.equal(exchange?.response?.complete, false);
  });

  test("a request waiting for upstream's answer gets 401 GATE_TOKEN_REVOKED", {
    timeout: 20_000,
  }, async () => {
    // Regression: as above, for a response that had not begun: it waited for upstream regardless.
    gh.fake.reply(() => new Promise(() => {}));
    const session = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const outcome = gh
      .anthropic(session)
      .messages.create(request)
      .catch((error: unknown) => error);
    const upstream = await arrived;
    await gh.admin.closeSession(session.id);
    const error = await outcome;
    gh.fake.reply(null);
    assert.ok(error instanceof Anthropic.AuthenticationError, String(error));
    assert.match(error.message, /GATE_TOKEN_REVOKED/);
    await upstream.ended;
    assert.equal(upstream.closedEarly, true);
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.outcome, "failed", "it had gone upstream");
    assert.equal(exchange?.status, 401);
    assert.equal(exchange?.error?.code, "GATE_TOKEN_REVOKED");
  });

  test("other sessions' exchanges run on", async () => {
    gh.fake.reply({
      content: [{ type: "text", text: "an answer held until the other session is closed" }],
      // Resumes once the agent has taken in the other session's revocation.
      streaming: { pieces: 4, hold: { afterEvents: 3, until: once(gh.agent.verifier, "revoked") } },
    });
    const kept = await gh.openSession();
    const closed = await gh.openSession();
    const arrived = gh.fake.nextRequest();
    const message = gh.anthropic(kept).messages.stream(request).finalMessage();
    await arrived;
    await gh.admin.closeSession(closed.id);
    const answer = await message;
    gh.fake.reply(null);
    assert.equal(answer.stop_reason, "end_turn");
    const [exchange] = (await gh.record(kept.id)).exchanges;
    assert.equal(exchange?.outcome, "completed");
  });
});
