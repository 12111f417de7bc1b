/**
 * API keys for automation (`POST/GET/DELETE /v1/api-keys`) and the role every
 * REST route checks: what an admin, an approver and an auditor may and may not
 * do, expiry, revocation, last use, and the audit log of every change.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { TestGatehouse } from "../support/gatehouse.js";

const LIMIT = { timeout: 60_000 };

let gh: TestGatehouse;
before(async () => {
  gh = await TestGatehouse.start();
});
after(() => gh?.stop());

interface Reply {
  status: number;
  body: Record<string, unknown> & { error?: { code: string; message: string } };
  text: string;
}

async function call(method: string, path: string, token: string | null, json?: unknown): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${gh.cp.httpUrl}${path}`, {
    method,
    headers,
    ...(json === undefined ? {} : { body: JSON.stringify(json) }),
  });
  const text = await res.text();
  const isJson = res.headers.get("content-type")?.startsWith("application/json") ?? false;
  return { status: res.status, body: (isJson ? JSON.parse(text) : {}) as Reply["body"], text };
}

interface NewKey {
  id: string;
  key: string;
  name: string;
  role: string;
  kind: string;
  status: string;
  expiresAt: string;
  createdAt: string;
  lastUsedAt: string | null;
}

async function newKey(role: string, extra: Record<string, unknown> = {}): Promise<NewKey> {
  const reply = await call("POST", "/v1/api-keys", gh.adminToken, {
    name: `${role} automation`,
    role,
    ...extra,
  });
  assert.equal(reply.status, 201, reply.text);
  return reply.body as unknown as NewKey;
}

describe("an admin makes, lists and revokes API keys", () => {
  test("a new key is shown once, stored hashed, expires in 90 days by default", LIMIT, async () => {
    const made = await newKey("auditor");
    assert.match(made.key, /^gak_[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(
      [made.role, made.kind, made.status, made.lastUsedAt],
      ["auditor", "api-key", "active", null],
    );
    assert.equal(Date.parse(made.expiresAt) - Date.parse(made.createdAt), 90 * 86_400_000);
    const list = await call("GET", "/v1/api-keys", gh.adminToken);
    assert.equal(list.status, 200);
    assert.ok(!list.text.includes(made.key), "the key is listed");
    const listed = (list.body.items as Array<Record<string, unknown>>).find((k) => k.id === made.id);
    assert.deepEqual(Object.keys(listed ?? {}).sort(), [
      "createdAt",
      "createdBy",
      "expiresAt",
      "id",
      "kind",
      "lastUsedAt",
      "name",
      "revokedAt",
      "role",
      "status",
    ]);
    assert.equal(listed?.createdBy, "bootstrap-admin");
  });

  test("a key's last use is kept", LIMIT, async () => {
    const made = await newKey("auditor");
    assert.equal((await call("GET", "/v1/sessions", made.key)).status, 200);
    const list = await call("GET", "/v1/api-keys", gh.adminToken);
    const lastUsedAt = (list.body.items as Array<Record<string, unknown>>).find(
      (k) => k.id === made.id,
    )?.lastUsedAt;
    assert.match(String(lastUsedAt), /^\d{4}-\d\d-\d\dT/);
  });

  test(
    "a revoked key is refused from the next request on; revoking again changes nothing",
    LIMIT,
    async () => {
      const made = await newKey("admin");
      assert.equal((await call("GET", "/v1/agents", made.key)).status, 200);
      const revoked = await call("DELETE", `/v1/api-keys/${made.id}`, gh.adminToken);
      assert.equal(revoked.status, 200);
      assert.equal(revoked.body.status, "revoked");
      const refused = await call("GET", "/v1/agents", made.key);
      assert.equal(refused.status, 401);
      assert.equal(refused.body.error?.code, "GATE_TOKEN_REVOKED");
      assert.match(
        refused.body.error?.message ?? "",
        /^API key 'admin automation' was revoked at .*Z; ask an admin for a new one$/,
      );
      const again = await call("DELETE", `/v1/api-keys/${made.id}`, gh.adminToken);
      assert.equal(again.body.revokedAt, revoked.body.revokedAt);
    },
  );

  test("an expired key is refused with when it expired", LIMIT, async () => {
    const made = await newKey("auditor", { ttlSeconds: 60 });
    gh.clockOffsetMs = 61_000;
    try {
      const refused = await call("GET", "/v1/sessions", made.key);
      assert.equal(refused.status, 401);
      assert.equal(refused.body.error?.code, "GATE_TOKEN_EXPIRED");
      assert.equal(
        refused.body.error?.message,
        `API key 'auditor automation' expired at ${made.expiresAt}; ask an admin for a new one`,
      );
      const list = await call("GET", "/v1/api-keys", gh.adminToken);
      const listed = (list.body.items as Array<Record<string, unknown>>).find((k) => k.id === made.id);
      assert.equal(listed?.status, "expired");
    } finally {
      gh.clockOffsetMs = 0;
    }
  });

  test("bad requests name the field; unknown ids are 404", LIMIT, async () => {
    const role = await call("POST", "/v1/api-keys", gh.adminToken, { name: "x", role: "root" });
    assert.equal(role.status, 400);
    assert.match(role.body.error?.message ?? "", /^invalid API key request: role: /);
    const ttl = await call("POST", "/v1/api-keys", gh.adminToken, {
      name: "x",
      role: "admin",
      ttlSeconds: 10,
    });
    assert.match(ttl.body.error?.message ?? "", /ttlSeconds: /);
    const extra = await call("POST", "/v1/api-keys", gh.adminToken, {
      name: "x",
      role: "admin",
      key: "mine",
    });
    assert.equal(extra.status, 400);
    const unknown = await call("DELETE", "/v1/api-keys/0199a1b2-0000-7000-8000-000000000000", gh.adminToken);
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error?.message, "no API key has that id; GET /v1/api-keys lists them");
  });

  test("the audit log names who made and revoked each key", LIMIT, async () => {
    const made = await newKey("approver");
    const admin = await newKey("admin");
    assert.equal((await call("DELETE", `/v1/api-keys/${made.id}`, admin.key)).status, 200);
    const audit = await call("GET", "/v1/audit", gh.adminToken);
    const entries = (audit.body.items as Array<Record<string, unknown>>).filter((e) => e.target === made.id);
    assert.deepEqual(
      entries.map((e) => [e.action, e.actor]),
      [
        ["api-key.revoke", admin.id],
        ["api-key.create", "bootstrap-admin"],
      ],
    );
    assert.ok(!audit.text.includes(made.key), "the audit log holds a key");
  });
});

describe("every route checks the role it needs", () => {
  let keys: Record<"admin" | "approver" | "auditor", string>;
  let sessionId: string;
  before(async () => {
    keys = {
      admin: (await newKey("admin")).key,
      approver: (await newKey("approver")).key,
      auditor: (await newKey("auditor")).key,
    };
    sessionId = (await gh.openSession()).id;
  });

  /** [method, path, body, roles allowed] */
  const routes = (): Array<[string, string, unknown, string[]]> => [
    ["GET", "/v1/sessions", undefined, ["admin", "approver", "auditor"]],
    ["GET", `/v1/sessions/${sessionId}`, undefined, ["admin", "approver", "auditor"]],
    ["GET", `/v1/sessions/${sessionId}/events`, undefined, ["admin", "approver", "auditor"]],
    ["GET", "/v1/agents", undefined, ["admin", "auditor"]],
    ["GET", "/v1/audit", undefined, ["admin", "auditor"]],
    ["GET", "/v1/api-keys", undefined, ["admin", "auditor"]],
    ["POST", "/v1/sessions", { connection: "claude" }, ["admin"]],
    ["POST", "/v1/agents", { name: "role-check" }, ["admin"]],
    ["POST", "/v1/api-keys", { name: "role-check", role: "auditor" }, ["admin"]],
    ["DELETE", "/v1/agents/0199a1b2-0000-7000-8000-000000000000", undefined, ["admin"]],
    ["DELETE", "/v1/api-keys/0199a1b2-0000-7000-8000-000000000000", undefined, ["admin"]],
    ["DELETE", `/v1/sessions/${sessionId}`, undefined, ["admin"]],
  ];

  test("auditors and approvers read; only admins change anything", LIMIT, async () => {
    for (const role of ["auditor", "approver", "admin"] as const) {
      for (const [method, path, body, allowed] of routes()) {
        const reply = await call(method, path, keys[role], body);
        if (allowed.includes(role)) {
          assert.ok(reply.status < 400 || reply.status === 404, `${role} ${method} ${path}: ${reply.text}`);
        } else {
          assert.equal(reply.status, 403, `${role} ${method} ${path}: ${reply.text}`);
          assert.equal(reply.body.error?.code, "GATE_FORBIDDEN");
          assert.equal(
            reply.body.error?.message,
            `this action needs the role ${allowed.join(" or ")}; your key '${role} automation' has ${role}`,
          );
        }
      }
    }
  });

  test("no credential: 401 saying what to send", LIMIT, async () => {
    const reply = await call("GET", "/v1/sessions", null);
    assert.equal(reply.status, 401);
    assert.equal(reply.body.error?.code, "GATE_UNAUTHENTICATED");
  });
});
