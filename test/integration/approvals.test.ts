/**
 * Human approvals end to end: the real Anthropic SDK sends a request (or gets a
 * tool call) that a `require_approval` rule holds at the agent; the agent asks
 * the control plane over its link; a webhook receiver is told; an approver lists
 * and decides over REST; the decision reaches the agent and the held exchange
 * goes on or fails with the reason. Also: expiry, self-approval, roles, a client
 * that leaves while it waits, and the link being down (fail closed).
 */
import assert from "node:assert/strict";
import { after, before, beforeEach, describe, test } from "node:test";
import Anthropic from "@anthropic-ai/sdk";
import { controlPlaneConfigSchema, startControlPlane } from "@gatehouse/control-plane";
import { hashToken } from "@gatehouse/control-plane/identity/tokens.js";
import { type ApprovalView, GatehouseApiError, GatehouseClient } from "@gatehouse/sdk";
import { Registry } from "prom-client";
import { v7 as uuidv7 } from "uuid";
import { TestGatehouse, UPSTREAM_KEY_ENV } from "../support/gatehouse.js";
import { apiError, makeKey } from "../support/guardrails.js";
import { WebhookReceiver } from "../support/webhook-receiver.js";

const MODEL = "claude-sonnet-4-6";
const TIMEOUT_SECONDS = 60;
/** The command the webhook message gives approvers names the approval. */
const APPROVE_COMMAND =
  /gatehouse approvals approve ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/;

describe("approvals", () => {
  let gh: TestGatehouse;
  let hooks: WebhookReceiver;
  let approver: GatehouseClient;
  let approverId: string;
  let approverKey: string;

  let controlPlane: Record<string, unknown>;
  before(async () => {
    hooks = new WebhookReceiver();
    const url = await hooks.start();
    controlPlane = {
      policies: [
        {
          name: "ci-default",
          rules: [
            {
              name: "prod-deploys",
              when: "request",
              match: { text: "DEPLOY-PROD" },
              action: "require_approval",
              message: "Production deploys need a second pair of eyes.",
            },
            {
              name: "release-tool",
              when: "response",
              match: { tool: "^publish_release$" },
              action: "require_approval",
              message: "Publishing a release needs approval.",
            },
          ],
        },
      ],
      approvals: { timeoutSeconds: TIMEOUT_SECONDS, webhooks: [{ url, format: "slack" }] },
    };
    gh = await TestGatehouse.start({ controlPlane });
    const key = await makeKey(gh, "approver", "release-manager");
    approverKey = key;
    approver = new GatehouseClient({ url: gh.cp.httpUrl, token: key });
    approverId = (await gh.cp.store.findApiKeyByHash(hashToken(key)))?.id ?? "";
  });
  after(async () => {
    await gh?.stop();
    await hooks?.close();
  });
  // A reply scripted for one test must not answer the next one's requests.
  beforeEach(() => gh.fake.reply(null));

  /** The id of the next approval announced to the webhook. */
  async function announced(): Promise<string> {
    const body = JSON.stringify(await hooks.next());
    const id = APPROVE_COMMAND.exec(body)?.[1];
    assert.ok(id, `the webhook message names the approval: ${body}`);
    return id;
  }

  const deployRequest = (client: Anthropic, signal?: AbortSignal) =>
    client.messages.create(
      {
        model: MODEL,
        max_tokens: 100,
        messages: [{ role: "user", content: "DEPLOY-PROD version 1.4.2 now" }],
      },
      signal ? { signal } : {},
    );

  test("a held request goes upstream once an approver approves; the decision is in the record and the audit log", async () => {
    const session = await gh.openSession();
    const upstreamBefore = gh.fake.requests.length;
    const reply = deployRequest(gh.anthropic(session));
    const id = await announced();
    assert.equal(gh.fake.requests.length, upstreamBefore, "held: nothing went upstream yet");

    const pending = await approver.listApprovals({ status: "pending" });
    const listed = pending.items.find((a) => a.id === id);
    assert.ok(listed);
    assert.equal(listed.sessionId, session.id);
    assert.equal(listed.connection, "claude");
    assert.deepEqual(listed.requester, { kind: "api-key", id: "bootstrap-admin" });
    assert.equal(listed.policy, "ci-default");
    assert.equal(listed.rule, "prod-deploys");
    assert.equal(listed.stage, "request");
    assert.equal(listed.message, "Production deploys need a second pair of eyes.");
    assert.match(listed.preview, /DEPLOY-PROD version 1\.4\.2/);
    assert.deepEqual(listed.matched, ["text"]);

    const decided = await approver.approve(id, "release window is open");
    assert.equal(decided.status, "approved");
    assert.equal(decided.decidedBy, approverId);
    const message = await reply;
    assert.equal(
      message.content[0]?.type === "text" && message.content[0].text,
      "echo: DEPLOY-PROD version 1.4.2 now",
    );

    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.decision, "approved");
    assert.deepEqual(
      exchange?.decisions.map((d) => [
        d.rule,
        d.action,
        d.approval?.status,
        d.approval?.decidedBy,
        d.approval?.reason,
      ]),
      [
        ["prod-deploys", "require_approval", "pending", "", ""],
        ["prod-deploys", "require_approval", "approved", approverId, "release window is open"],
      ],
    );
    const audit = await fetch(`${gh.cp.httpUrl}/v1/audit`, {
      headers: { authorization: `Bearer ${gh.adminToken}` },
    });
    const entries = (
      (await audit.json()) as { items: Array<{ action: string; target: string; actor: string }> }
    ).items
      .filter((e) => e.target === id)
      .map((e) => [e.action, e.actor]);
    assert.deepEqual(entries, [
      ["approval.approve", approverId],
      ["approval.request", "bootstrap-admin"],
    ]);

    // The agent loop resends its history: what was approved is not asked about again.
    const next = await gh.anthropic(session).messages.create({
      model: MODEL,
      max_tokens: 100,
      messages: [
        { role: "user", content: "DEPLOY-PROD version 1.4.2 now" },
        { role: "assistant", content: "Deploying." },
        { role: "user", content: "and report back" },
      ],
    });
    assert.equal(next.type, "message");
    assert.equal(hooks.bodies.length, 0, "no second approval was asked for");
    // Regression (review): the record did not say what let the second turn through.
    const [, second] = (await gh.record(session.id)).exchanges;
    assert.equal(second?.decision, "approved");
    assert.deepEqual(
      second?.decisions.map((d) => [d.rule, d.approval?.id, d.approval?.status, d.approval?.reason]),
      [["prod-deploys", id, "approved", "the same text was approved earlier in this session"]],
    );
  });

  test("a denied request fails with the approver's reason and never goes upstream", async () => {
    const session = await gh.openSession();
    const upstreamBefore = gh.fake.requests.length;
    const reply = deployRequest(gh.anthropic(session));
    const id = await announced();
    await approver.deny(id, "freeze until Monday");
    const error = await apiError(reply);
    assert.equal(error.status, 403);
    assert.match(error.message, /GATE_APPROVAL_DENIED/);
    assert.match(error.message, new RegExp(`denied by ${approverId}: freeze until Monday`));
    assert.equal(gh.fake.requests.length, upstreamBefore);
    await assert.rejects(approver.approve(id, "changed my mind"), (e) => {
      assert.ok(e instanceof GatehouseApiError);
      assert.equal(e.status, 409);
      assert.match(e.message, /already denied/);
      return true;
    });
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.decision, "deny");
    assert.equal(exchange?.error?.code, "GATE_APPROVAL_DENIED");
  });

  test("a pending approval expires after approvals.timeoutSeconds: the client is told the timeout", async () => {
    const session = await gh.openSession();
    const reply = deployRequest(gh.anthropic(session));
    const id = await announced();
    // The control plane's clock jumps past the timeout; its next look at the store expires it.
    gh.clockOffsetMs = (TIMEOUT_SECONDS + 1) * 1000;
    try {
      const error = await apiError(reply);
      assert.equal(error.status, 403);
      assert.match(error.message, /GATE_APPROVAL_EXPIRED/);
      assert.match(
        error.message,
        new RegExp(`no approver decided within ${TIMEOUT_SECONDS} s \\(approvals\\.timeoutSeconds\\)`),
      );
      const expired = await approver.getApproval(id);
      assert.equal(expired.status, "expired");
      await assert.rejects(approver.approve(id, "late"), /already expired/);
    } finally {
      gh.clockOffsetMs = 0;
    }
  });

  test("the requester cannot approve their own request; another approver can", async () => {
    // Alice signed in twice: once with the admin group (opens the session), once as approver.
    const person = "https://idp.example#alice";
    const login = async (role: "admin" | "approver") => {
      const key = `gak_${role}_${uuidv7()}`;
      const now = Date.now();
      await gh.cp.store.insertApiKey({
        id: uuidv7(),
        name: "alice@example.com",
        role,
        kind: "login",
        keyHash: hashToken(key),
        createdBy: person,
        createdAt: now,
        expiresAt: now + 3_600_000,
        revokedAt: null,
        lastUsedAt: null,
      });
      return new GatehouseClient({ url: gh.cp.httpUrl, token: key });
    };
    const aliceAdmin = await login("admin");
    const aliceApprover = await login("approver");
    const session = await aliceAdmin.openSession({ connection: "claude" });
    const reply = deployRequest(gh.anthropic(session));
    const id = await announced();
    await assert.rejects(aliceApprover.approve(id, "looks fine to me"), (e) => {
      assert.ok(e instanceof GatehouseApiError);
      assert.equal(e.status, 403);
      assert.equal(e.code, "GATE_FORBIDDEN");
      assert.match(e.message, /asked for by a session you opened; another approver must decide it/);
      return true;
    });
    await approver.approve(id, "second pair of eyes");
    assert.equal((await reply).type, "message");
  });

  test("only approvers decide: an admin is refused; auditors may read", async () => {
    const session = await gh.openSession();
    const reply = deployRequest(gh.anthropic(session));
    const id = await announced();
    await assert.rejects(gh.admin.approve(id, "I am admin"), (e) => {
      assert.ok(e instanceof GatehouseApiError);
      assert.equal(e.status, 403);
      assert.match(e.message, /needs the role approver/);
      return true;
    });
    const auditor = new GatehouseClient({ url: gh.cp.httpUrl, token: await makeKey(gh, "auditor") });
    assert.equal((await auditor.getApproval(id)).status, "pending");
    await assert.rejects(approver.approve(id, ""), /reason: say why/);
    await approver.deny(id, "not today");
    await apiError(reply);
  });

  test("a streamed tool call is held until approved, then reaches the client whole", async () => {
    const session = await gh.openSession();
    gh.fake.reply({
      content: [
        { type: "text", text: "Publishing." },
        { type: "tool_use", id: "toolu_pub", name: "publish_release", input: { version: "1.4.2" } },
      ],
      streaming: { pieces: 3 },
    });
    const stream = gh.anthropic(session).messages.stream({
      model: MODEL,
      max_tokens: 100,
      messages: [{ role: "user", content: "publish the release" }],
    });
    const id = await announced();
    const held = await approver.getApproval(id);
    assert.equal(held.stage, "response");
    assert.match(held.preview, /publish_release \{"version":"1\.4\.2"\}/);
    await approver.approve(id, "tagged and signed");
    const message = await stream.finalMessage();
    assert.deepEqual(
      message.content.map((b) => (b.type === "tool_use" ? [b.id, b.name, b.input] : b.type)),
      ["text", ["toolu_pub", "publish_release", { version: "1.4.2" }]],
    );
    const [exchange] = (await gh.record(session.id)).exchanges;
    assert.equal(exchange?.decision, "approved");
    assert.equal(exchange?.decisions.at(-1)?.toolCall?.id, "toolu_pub");
  });

  test("a streamed tool call that is denied ends the stream with an error event naming the reason", async () => {
    const session = await gh.openSession();
    gh.fake.reply({
      content: [{ type: "tool_use", name: "publish_release", input: { version: "9.9.9" } }],
      streaming: { pieces: 2 },
    });
    const stream = gh.anthropic(session).messages.stream({
      model: MODEL,
      max_tokens: 100,
      messages: [{ role: "user", content: "publish" }],
    });
    const id = await announced();
    await approver.deny(id, "no such version");
    const error = await apiError(stream.finalMessage());
    assert.match(error.message, /GATE_APPROVAL_DENIED.*publish_release.*no such version/);
  });

  test("a client that leaves while it waits cancels its approval", async () => {
    const session = await gh.openSession();
    const leave = new AbortController();
    const reply = deployRequest(gh.anthropic(session), leave.signal);
    const id = await announced();
    const finished = gh.exchangeFinished(session.id);
    leave.abort();
    await assert.rejects(reply, Anthropic.APIUserAbortError);
    assert.equal((await finished).outcome, "OUTCOME_CANCELLED");
    await gh.record(session.id);
    const cancelled: ApprovalView = await approver.getApproval(id);
    assert.equal(cancelled.status, "cancelled");
    await assert.rejects(approver.approve(id, "too late"), /already cancelled/);
  });

  test("a decision made at another control-plane replica reaches the agent linked to this one", async () => {
    // Replica B shares the store and data directory; it has no link to the agent, which asked replica A.
    const b = await startControlPlane({
      config: controlPlaneConfigSchema.parse({
        ...controlPlane,
        approvals: { timeoutSeconds: TIMEOUT_SECONDS },
        connections: [
          { name: "claude", type: "anthropic", upstream: gh.fake.url, credential: { env: UPSTREAM_KEY_ENV } },
        ],
        store: gh.storeConfig,
        http: { listen: "127.0.0.1:0" },
        grpc: { listen: "127.0.0.1:0" },
      }),
      dataDir: gh.dir,
      log: (component) => gh.logs.root.child({ component, replica: "b" }),
      registry: new Registry(),
    });
    try {
      const session = await gh.openSession();
      const reply = deployRequest(gh.anthropic(session));
      const id = await announced();
      const atB = new GatehouseClient({ url: b.httpUrl, token: approverKey });
      assert.equal((await atB.getApproval(id)).status, "pending");
      await atB.approve(id, "approved at replica b");
      assert.equal((await reply).type, "message");
      const [exchange] = (await gh.record(session.id)).exchanges;
      assert.equal(exchange?.decisions.at(-1)?.approval?.reason, "approved at replica b");
    } finally {
      await b.stop();
    }
  });

  test("with the link to the control plane down, a request needing approval fails closed at once", async () => {
    const session = await gh.openSession();
    const lost = gh.agent.link.whenState("backoff");
    await gh.cp.stop();
    await lost;
    try {
      const upstreamBefore = gh.fake.requests.length;
      const error = await apiError(deployRequest(gh.anthropic(session)));
      assert.equal(error.status, 503);
      assert.match(
        error.message,
        /GATE_APPROVAL_UNAVAILABLE.*link to the control plane is down.*fail closed/,
      );
      assert.equal(gh.fake.requests.length, upstreamBefore);
      // Requests no rule holds still go through: the agent works on without its control plane.
      const plain = await gh.anthropic(session).messages.create({
        model: MODEL,
        max_tokens: 10,
        messages: [{ role: "user", content: "hello" }],
      });
      assert.equal(plain.type, "message");
    } finally {
      const back = gh.agent.link.whenState("ready");
      await gh.startControlPlane();
      await back;
    }
  });
});
