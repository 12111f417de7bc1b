/**
 * Retention as an operator configures it: `retention.closedSessionsDays` set,
 * a control plane that finds sessions closed longer ago deletes them with their
 * events, keeps everything else, and says what it removed in the audit log.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { OpenedSession } from "@gatehouse/sdk";
import { TestGatehouse } from "../support/gatehouse.js";

const DAY = 86_400_000;

interface AuditEntry {
  actor: string;
  action: string;
  target: string | null;
  details: { sessions?: string[]; events?: number; closedBefore?: string; reason?: string };
}

describe("retention", { timeout: 60_000 }, () => {
  let gh: TestGatehouse;
  before(async () => {
    gh = await TestGatehouse.start({ controlPlane: { retention: { closedSessionsDays: 30 } } });
  });
  after(() => gh.stop());

  async function recordedSession(): Promise<OpenedSession> {
    const session = await gh.openSession();
    await gh.anthropic(session).messages.create({
      model: "claude-sonnet-4-6",
      max_tokens: 16,
      messages: [{ role: "user", content: "hello" }],
    });
    await gh.agent.link.whenDrained();
    return session;
  }

  test("sessions closed longer ago than the period are purged with their events, and the purge is audited", async () => {
    const old = await recordedSession();
    await gh.admin.closeSession(old.id);
    gh.clockOffsetMs = 20 * DAY;
    const recent = await recordedSession();
    await gh.admin.closeSession(recent.id);
    const open = await recordedSession();
    const events = (await gh.admin.getSession(old.id)).exchanges.length;
    assert.equal(events, 1);

    // Forty days after the first close, the control plane restarts and purges at once.
    gh.clockOffsetMs = 40 * DAY;
    await gh.agent.stop(1000);
    await gh.cp.stop();
    const from = gh.logs.lines.length;
    await gh.startControlPlane();
    const purged = await gh.logs.waitFor(
      (e) => e.component === "cp.retention" && e.msg === "purged closed sessions past their retention period",
      from,
    );
    assert.equal(purged.sessions, 1);
    await gh.startAgent();

    await assert.rejects(gh.admin.getSession(old.id), /GATE_NOT_FOUND|not found/);
    assert.equal((await gh.admin.getSession(recent.id)).exchanges.length, 1, "closed 20 days ago: kept");
    assert.equal((await gh.admin.getSession(open.id)).exchanges.length, 1, "open sessions are never purged");

    const res = await fetch(`${gh.cp.httpUrl}/v1/audit?limit=1`, {
      headers: { authorization: `Bearer ${gh.adminToken}` },
    });
    const [entry] = ((await res.json()) as { items: AuditEntry[] }).items;
    assert.equal(entry?.actor, "system");
    assert.equal(entry?.action, "sessions.purge");
    assert.deepEqual(entry?.details.sessions, [old.id]);
    assert.ok((entry?.details.events ?? 0) > 0, "the events removed are counted");
    assert.match(entry?.details.reason ?? "", /retention\.closedSessionsDays/);
  });
});
