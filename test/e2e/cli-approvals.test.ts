/**
 * `gatehouse approvals list|show|approve|deny` as an approver runs them: the
 * built command against a whole Gatehouse (test/support/gatehouse.ts), with
 * approvals put in its store as an agent's request would, and the usage errors
 * that need no control plane at all.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { ApprovalRecord } from "@gatehouse/control-plane/store/types.js";
import type { ApprovalView } from "@gatehouse/sdk";
import { gatehouse } from "../support/cli.js";
import { TestGatehouse } from "../support/gatehouse.js";

describe("gatehouse approvals: usage errors, before any control plane is asked", () => {
  let dir: string;
  /** No API key and nothing listening: a command that got as far as REST would fail differently. */
  const run = (args: string[]) =>
    gatehouse(["--data", join(dir, "no-data"), ...args], {
      env: {
        GATEHOUSE_TOKEN: undefined,
        GATEHOUSE_ADMIN_TOKEN: undefined,
        GATEHOUSE_URL: "http://127.0.0.1:1",
      },
    });
  const id = randomUUID();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "gatehouse-cli-approvals-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("approve and deny without --reason are refused, naming --reason", async () => {
    for (const verb of ["approve", "deny"]) {
      const res = await run(["approvals", verb, id]);
      assert.equal(res.code, 2, res.stderr);
      assert.match(res.stderr, new RegExp(`approvals ${verb} needs --reason TEXT`));
      assert.match(res.stderr, /Usage:/, "the usage follows the error");
      assert.equal(res.stdout, "");
    }
    const blank = await run(["approvals", "deny", id, "--reason", "  "]);
    assert.equal(blank.code, 2, "a blank reason says nothing about why");
    assert.match(blank.stderr, /needs --reason TEXT/);
  });

  test("approve without an id, and an unknown subcommand, are usage errors", async () => {
    const noId = await run(["approvals", "approve", "--reason", "looked at it"]);
    assert.equal(noId.code, 2);
    assert.match(noId.stderr, /approvals approve needs an approval id/);

    const unknown = await run(["approvals", "frobnicate"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown approvals command 'frobnicate'; use list, show, approve or deny/);

    const bare = await run(["approvals"]);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /unknown approvals command ''/);
  });

  test("list --status takes only the statuses an approval can have", async () => {
    const res = await run(["approvals", "list", "--status", "open"]);
    assert.equal(res.code, 2);
    assert.match(res.stderr, /--status must be pending, approved, denied, expired or cancelled, not 'open'/);
  });

  test("the help lists the approvals commands", async () => {
    const res = await run(["--help"]);
    assert.equal(res.code, 0);
    assert.match(res.stdout, /gatehouse approvals list \[--status pending\|/);
    assert.match(res.stdout, /gatehouse approvals approve ID --reason TEXT/);
    assert.match(res.stdout, /gatehouse approvals deny ID --reason TEXT/);
  });
});

describe("gatehouse approvals against a control plane", () => {
  let gh: TestGatehouse;
  let approverKey = "";
  let approverKeyId = "";
  let sessionId = "";
  const ids = { first: randomUUID(), second: randomUUID(), own: randomUUID(), expired: randomUUID() };

  /** The command as an approver runs it (GATEHOUSE_TOKEN), or with another key. */
  const cli = (args: string[], token = approverKey) =>
    gatehouse(["--url", gh.cp.httpUrl, ...args], {
      env: { GATEHOUSE_TOKEN: token, GATEHOUSE_ADMIN_TOKEN: undefined, GATEHOUSE_URL: undefined },
    });

  /** What an agent's request stores: a pending approval of a held prompt. */
  const pending = (
    id: string,
    requester: ApprovalRecord["requester"],
    createdAt: number,
  ): ApprovalRecord => ({
    id,
    sessionId,
    exchangeId: randomUUID(),
    connection: "claude",
    agentAccountId: "test-agent",
    requester,
    policy: "ci-default",
    rule: "no-private-keys",
    stage: "request",
    message: "Private keys must not be sent to the model.",
    preview: "please review -----BEGIN ***MASKED*** PRIVATE KEY-----",
    matched: ["text"],
    status: "pending",
    createdAt,
    expiresAt: createdAt + 600_000,
    decidedAt: null,
    decidedBy: null,
    reason: null,
  });

  before(async () => {
    gh = await TestGatehouse.start();
    const res = await fetch(`${gh.cp.httpUrl}/v1/api-keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${gh.adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "on-call approver", role: "approver" }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    ({ key: approverKey, id: approverKeyId } = (await res.json()) as { key: string; id: string });
    sessionId = (await gh.openSession()).id;
    const opener = { kind: "api-key" as const, id: "bootstrap-admin" };
    const now = Date.now();
    await gh.cp.store.insertApproval(pending(ids.first, opener, now - 3000));
    await gh.cp.store.insertApproval(pending(ids.second, opener, now - 2000));
    // A session the approver opened themself: someone else must decide it.
    await gh.cp.store.insertApproval(pending(ids.own, { kind: "api-key", id: approverKeyId }, now - 1000));
    await gh.cp.store.insertApproval(pending(ids.expired, opener, now - 4000));
    await gh.cp.store.decideApproval(ids.expired, {
      status: "expired",
      decidedAt: now,
      decidedBy: "system",
      reason: "no approver decided within 600 s (approvals.timeoutSeconds)",
    });
  });
  after(async () => {
    await gh?.stop();
  });

  test("list shows the pending approvals as a table, newest first", async () => {
    const res = await cli(["approvals", "list", "--status", "pending"]);
    assert.equal(res.code, 0, res.stderr);
    const [header, ...rows] = res.stdout.trimEnd().split("\n");
    assert.match(header ?? "", /^ID\s+STATUS\s+CONNECTION\s+REQUESTER\s+POLICY\/RULE\s+CREATED\s+EXPIRES$/);
    assert.deepEqual(
      rows.map((r) => r.split(/\s+/)[0]),
      [ids.own, ids.second, ids.first],
    );
    const first = rows.find((r) => r.startsWith(ids.first))?.split(/\s+/);
    assert.deepEqual(first?.slice(1, 5), [
      "pending",
      "claude",
      "bootstrap-admin",
      "ci-default/no-private-keys",
    ]);
    assert.match(first?.[5] ?? "", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, "times are ISO 8601");
    assert.ok(!res.stdout.includes(ids.expired), "an expired approval is not pending");
  });

  test("list --json gives the approval views, preview included", async () => {
    const res = await cli(["approvals", "list", "--json"]);
    assert.equal(res.code, 0, res.stderr);
    const page = JSON.parse(res.stdout) as { items: ApprovalView[]; nextCursor: string | null };
    assert.equal(page.items.length, 4);
    const expired = page.items.find((a) => a.id === ids.expired);
    assert.equal(expired?.status, "expired");
    assert.equal(expired?.decidedBy, "system");
    const first = page.items.find((a) => a.id === ids.first);
    assert.equal(first?.preview, "please review -----BEGIN ***MASKED*** PRIVATE KEY-----");
    assert.deepEqual(first?.requester, { kind: "api-key", id: "bootstrap-admin" });
    assert.equal(first?.sessionId, sessionId);
    assert.deepEqual(first?.matched, ["text"]);
  });

  test("show prints one approval with what it holds", async () => {
    const res = await cli(["approvals", "show", ids.first]);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, new RegExp(`Approval {4}${ids.first}`));
    assert.match(res.stdout, /Rule {8}ci-default\/no-private-keys on the request, matched text/);
    assert.match(res.stdout, /Held:\nplease review -----BEGIN \*\*\*MASKED\*\*\* PRIVATE KEY-----/);
  });

  test("approve decides with the reason; deciding again is a conflict that names who decided", async () => {
    const res = await cli([
      "approvals",
      "approve",
      ids.first,
      "--reason",
      "a test fixture key, not a real one",
    ]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout, `approval ${ids.first} approved\n`);

    const shown = JSON.parse((await cli(["approvals", "show", ids.first, "--json"])).stdout) as ApprovalView;
    assert.equal(shown.status, "approved");
    assert.equal(shown.decidedBy, approverKeyId);
    assert.equal(shown.reason, "a test fixture key, not a real one");
    assert.match(shown.decidedAt ?? "", /^\d{4}-\d\d-\d\dT/);

    const again = await cli(["approvals", "deny", ids.first, "--reason", "changed my mind"]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /GATE_CONFLICT: .*approved/);
    assert.ok(again.stderr.includes(approverKeyId), `the conflict names who decided:\n${again.stderr}`);
  });

  test("deny decides it denied, and list --status denied finds it", async () => {
    const res = await cli(["approvals", "deny", ids.second, "--reason", "no keys to the model", "--json"]);
    assert.equal(res.code, 0, res.stderr);
    const view = JSON.parse(res.stdout) as ApprovalView;
    assert.equal(view.status, "denied");
    assert.equal(view.reason, "no keys to the model");

    const denied = JSON.parse((await cli(["approvals", "list", "--status", "denied", "--json"])).stdout) as {
      items: ApprovalView[];
    };
    assert.deepEqual(
      denied.items.map((a) => a.id),
      [ids.second],
    );
  });

  test("an expired approval can no longer be decided", async () => {
    const res = await cli(["approvals", "approve", ids.expired, "--reason", "too late"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /GATE_CONFLICT: .*expired/);
  });

  test("the requester cannot approve their own session's approval", async () => {
    const res = await cli(["approvals", "approve", ids.own, "--reason", "it is fine, trust me"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /GATE_FORBIDDEN/);
    const still = JSON.parse((await cli(["approvals", "show", ids.own, "--json"])).stdout) as ApprovalView;
    assert.equal(still.status, "pending");
  });

  test("an admin key may list but not decide: deciding takes the approver role", async () => {
    const list = await cli(["approvals", "list", "--json"], gh.adminToken);
    assert.equal(list.code, 0, list.stderr);
    const res = await cli(["approvals", "approve", ids.own, "--reason", "admin override"], gh.adminToken);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /GATE_FORBIDDEN: .*approver/);
  });

  test("an unknown approval id is not found", async () => {
    const res = await cli(["approvals", "approve", randomUUID(), "--reason", "whatever it is"]);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /GATE_NOT_FOUND/);
  });
});
