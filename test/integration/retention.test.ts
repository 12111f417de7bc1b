/**
 * Retention as an operator configures it: `retention.closedSessionsDays` set,
 * a control plane that finds sessions closed longer ago deletes them with their
 * events, keeps everything else, and says what it removed in the audit log.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { AuditLog } from "@gatehouse/control-plane/audit/log.js";
import { RetentionJob } from "@gatehouse/control-plane/sessions/retention.js";
import { SqliteStore } from "@gatehouse/control-plane/store/sqlite/store.js";
import type { OpenedSession } from "@gatehouse/sdk";
import { LogCapture, TestGatehouse } from "../support/gatehouse.js";

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

describe("retention when the audit log cannot be written", () => {
  test("what was purged is logged in full, and purging stops instead of going on unaudited", async () => {
    const dir = await mkdtemp(join(tmpdir(), "gatehouse-retention-"));
    const store = await SqliteStore.open({ path: join(dir, "gatehouse.db") });
    const logs = new LogCapture();
    try {
      const session = (id: string, closedAt: number) => ({
        id,
        connection: "claude",
        subject: { kind: "api-key" as const, id: "k", claims: {} },
        labels: {},
        createdAt: closedAt - DAY,
        expiresAt: closedAt + DAY,
        closedAt,
        seal: null,
      });
      const ids = Array.from({ length: 3 }, (_, i) => `0190000${i}-0000-7000-8000-000000000000`);
      for (const id of ids) await store.insertSession(session(id, DAY));
      const failing = new AuditLog({
        store: {
          appendAudit: () => Promise.reject(new Error("disk full")),
          listAudit: (filter) => store.listAudit(filter),
        },
        now: () => 100 * DAY,
      });
      const job = new RetentionJob({
        store,
        audit: failing,
        keepMs: DAY,
        intervalMs: DAY,
        now: () => 100 * DAY,
        logger: logs.log("cp.retention"),
      });
      await assert.rejects(job.purge(), /disk full/);
      const entry = await logs.waitFor(
        (e) => e.msg === "purged sessions could not be written to the audit log",
      );
      assert.deepEqual([...(entry.sessions as string[])].sort(), ids);
      assert.equal(entry.level, 50, "logged as an error");
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
