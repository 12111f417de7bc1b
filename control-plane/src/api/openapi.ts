/**
 * The OpenAPI 3.1 description of the REST API, served at /v1/openapi.json.
 * Request bodies come from the same zod schemas the routes validate with.
 */
import { z } from "zod";
import { policyBody } from "../policy/schema.js";
import { createAgentBody, createApiKeyBody, decideApprovalBody, openSessionBody } from "./schemas.js";

const errorSchema = {
  type: "object",
  required: ["error"],
  properties: {
    error: {
      type: "object",
      required: ["code", "message"],
      properties: {
        code: { type: "string", description: "Stable GATE_… code; see docs/errors.md." },
        message: { type: "string" },
      },
    },
  },
};

const sessionSummary = {
  type: "object",
  properties: {
    id: { type: "string" },
    connection: { type: "string" },
    subject: {
      type: "object",
      properties: { kind: { type: "string" }, id: { type: "string" }, claims: { type: "object" } },
    },
    labels: { type: "object", additionalProperties: { type: "string" } },
    status: { enum: ["open", "closed", "expired"] },
    createdAt: { type: "string", format: "date-time" },
    expiresAt: { type: "string", format: "date-time" },
    closedAt: { type: ["string", "null"], format: "date-time" },
    seal: {
      type: ["object", "null"],
      description:
        "Null until the session is closed. `jws` is a compact JWS (EdDSA, typ gatehouse-seal+jws) over `{sid, count, lastHash, sealedAt}`, verifiable with /v1/.well-known/jwks.json",
      properties: {
        count: { type: "integer", minimum: 0, description: "Events the seal covers" },
        lastHash: { type: "string", description: "Hash of the last event it covers" },
        sealedAt: { type: "string", format: "date-time" },
        jws: { type: "string" },
      },
    },
  },
};

const exchange = {
  type: "object",
  properties: {
    id: { type: "string" },
    kind: { type: "string", examples: ["anthropic.messages"] },
    method: { type: "string" },
    path: { type: "string" },
    status: { type: ["integer", "null"] },
    outcome: { enum: ["completed", "cancelled", "failed", "refused", null] },
    startedAt: { type: "string", format: "date-time" },
    endedAt: { type: ["string", "null"], format: "date-time" },
    decision: {
      enum: ["allow", "flag", "pending", "approved", "deny"],
      description:
        "What the policies made of it: deny (a rule denied it, or its approval was denied, expired, cancelled or could not be asked for), pending, approved, flag (flagged only), allow",
    },
    decisions: {
      type: "array",
      description:
        "Every rule that matched and every approval outcome, in order; names only, never the matched text",
      items: {
        type: "object",
        properties: {
          at: { type: "string", format: "date-time" },
          policy: { type: "string" },
          rule: { type: "string" },
          action: { enum: ["allow", "deny", "require_approval", "flag"] },
          stage: { enum: ["request", "response"] },
          message: { type: "string" },
          matched: { type: "array", items: { type: "string" }, examples: [["tool", "toolInput"]] },
          approval: {
            type: ["object", "null"],
            properties: {
              id: { type: "string" },
              status: { enum: ["pending", "approved", "denied", "expired", "cancelled", "unavailable"] },
              decidedBy: { type: "string" },
              reason: { type: "string" },
            },
          },
          toolCall: {
            type: ["object", "null"],
            description:
              "Response rules: the tool call judged; `input` as the client would have received it (masked)",
            properties: { id: { type: "string" }, name: { type: "string" }, input: { type: "string" } },
          },
        },
      },
    },
    error: { type: ["object", "null"] },
    masked: {
      type: ["object", "null"],
      additionalProperties: { type: "integer", minimum: 1 },
      description:
        "Secrets masked in the response: how many of each type (counts only, never values); null while in progress.",
      examples: [{ "github-token": 2 }],
    },
    request: { type: "object", properties: { headers: { type: "object" }, body: {} } },
    response: {
      type: ["object", "null"],
      properties: {
        status: { type: "integer" },
        headers: { type: "object" },
        body: { description: "Non-streamed body: JSON when it parses, else text, else {base64}." },
        message: { type: ["object", "null"], description: "Reassembled message of a streamed response." },
        complete: { type: "boolean" },
      },
    },
  },
};

const json = (schema: object) => ({ content: { "application/json": { schema } } });
const errors = {
  "400": { description: "Invalid request", ...json(errorSchema) },
  "401": { description: "Missing or unknown API key", ...json(errorSchema) },
  "403": { description: "Role not allowed", ...json(errorSchema) },
};
const notFound = (what: string) => ({ "404": { description: `Unknown ${what}`, ...json(errorSchema) } });
const sessionId = { name: "id", in: "path", required: true, schema: { type: "string" } };
const agentId = { ...sessionId, description: "Agent account id" };
const bearer = [{ bearer: [] }];
const pageParameters = [
  { name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 500, default: 100 } },
  {
    name: "cursor",
    in: "query",
    schema: { type: "string" },
    description: "`nextCursor` of the previous page",
  },
];
const apiKey = {
  type: "object",
  properties: {
    id: { type: "string" },
    name: { type: "string" },
    role: { enum: ["admin", "approver", "auditor"] },
    kind: { enum: ["api-key", "login"], description: "login: the key a person's sign-in was given" },
    status: { enum: ["active", "expired", "revoked"] },
    createdBy: { type: "string" },
    createdAt: { type: "string", format: "date-time" },
    expiresAt: { type: ["string", "null"], format: "date-time" },
    revokedAt: { type: ["string", "null"], format: "date-time" },
    lastUsedAt: { type: ["string", "null"], format: "date-time", description: "Kept to the minute" },
  },
};

const approval = {
  type: "object",
  properties: {
    id: { type: "string" },
    status: { enum: ["pending", "approved", "denied", "expired", "cancelled"] },
    sessionId: { type: "string" },
    exchangeId: { type: "string" },
    connection: { type: "string" },
    requester: {
      type: "object",
      description: "Who opened the session",
      properties: { kind: { enum: ["api-key", "oidc"] }, id: { type: "string" } },
    },
    policy: { type: "string" },
    rule: { type: "string" },
    stage: {
      enum: ["request", "response"],
      description: "request: held before upstream; response: a tool call held before the client gets it",
    },
    message: { type: "string", description: "The rule's message" },
    preview: {
      type: "string",
      description:
        "What is held, masked, at most 64 KiB; a longer one ends with a note of how much is not shown",
    },
    matched: { type: "array", items: { type: "string" } },
    createdAt: { type: "string", format: "date-time" },
    expiresAt: { type: "string", format: "date-time" },
    decidedAt: { type: ["string", "null"], format: "date-time" },
    decidedBy: { type: ["string", "null"] },
    reason: { type: ["string", "null"] },
  },
};

const policy = {
  allOf: [
    z.toJSONSchema(policyBody),
    {
      type: "object",
      properties: {
        name: { type: "string" },
        source: { enum: ["config", "api"], description: "config: from the config file (read-only here)" },
        updatedAt: { type: "string", format: "date-time" },
        updatedBy: { type: "string" },
      },
    },
  ],
};

const conflict = {
  "409": { description: "Conflicts with what is there; the message says what", ...json(errorSchema) },
};
const approvalPath = {
  name: "id",
  in: "path",
  required: true,
  schema: { type: "string" },
  description: "Approval id",
};
const policyPath = {
  name: "name",
  in: "path",
  required: true,
  schema: { type: "string" },
  description: "Policy name",
};

let document: object | undefined;

export function openApiDocument(): object {
  document ??= {
    openapi: "3.1.0",
    info: { title: "Gatehouse control plane", version: "1" },
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", description: "API key (automation, or a sign-in's key)" },
        runner: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "A CI runner's OIDC ID token from a configured identity provider (POST /v1/sessions)",
        },
        session: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "The session's own token (closes that session)",
        },
      },
      schemas: {
        Error: errorSchema,
        SessionSummary: sessionSummary,
        Exchange: exchange,
        ApiKey: apiKey,
        Approval: approval,
        Policy: policy,
      },
    },
    paths: {
      "/v1/sessions": {
        post: {
          summary: "Open a session: a short-lived token for one connection",
          description:
            "With a runner's OIDC token, the first matching rule of its provider decides the connections, the longest TTL and labels, and the session's subject records issuer, subject and identifying claims. An admin API key may open any session.",
          security: [{ runner: [] }, { bearer: [] }],
          requestBody: { required: true, ...json(z.toJSONSchema(openSessionBody)) },
          responses: {
            "201": {
              description: "Session opened",
              ...json({
                type: "object",
                properties: {
                  id: { type: "string" },
                  token: { type: "string" },
                  expiresAt: { type: "string", format: "date-time" },
                  connection: { type: "string" },
                  proxyUrl: { type: "string", format: "uri" },
                },
              }),
            },
            ...errors,
            "404": { description: "Unknown connection", ...json(errorSchema) },
            "503": { description: "No agent serves the connection", ...json(errorSchema) },
          },
        },
        get: {
          summary: "List sessions, newest first",
          security: bearer,
          parameters: ["connection", "status", "subject", "limit", "cursor"].map((name) => ({
            name,
            in: "query",
            schema: name === "limit" ? { type: "integer", minimum: 1, maximum: 500 } : { type: "string" },
          })),
          responses: {
            "200": {
              description: "A page of sessions",
              ...json({
                type: "object",
                properties: {
                  items: { type: "array", items: { $ref: "#/components/schemas/SessionSummary" } },
                  nextCursor: { type: ["string", "null"] },
                },
              }),
            },
            ...errors,
          },
        },
      },
      "/v1/sessions/{id}": {
        get: {
          summary: "A session with its exchanges, or (view=summary) without them",
          security: bearer,
          parameters: [
            sessionId,
            {
              name: "view",
              in: "query",
              schema: { enum: ["full", "summary"], default: "full" },
              description:
                "`summary`: the session and its seal only, read without reading its events (what a verifier needs beside /events)",
            },
          ],
          responses: {
            "200": {
              description: "The session; with view=summary, a SessionSummary (no `exchanges`)",
              ...json({
                allOf: [
                  { $ref: "#/components/schemas/SessionSummary" },
                  {
                    type: "object",
                    properties: {
                      exchanges: {
                        type: "array",
                        items: { $ref: "#/components/schemas/Exchange" },
                        description: "Absent with view=summary",
                      },
                    },
                  },
                ],
              }),
            },
            ...errors,
            "404": { description: "Unknown session", ...json(errorSchema) },
          },
        },
        delete: {
          summary: "Close a session; its token is refused at every agent",
          description: "An admin API key closes any session; the session's own token closes that session.",
          security: [{ bearer: [] }, { session: [] }],
          parameters: [sessionId],
          responses: {
            "200": {
              description: "Closed and sealed (closing a closed session changes nothing)",
              ...json({ $ref: "#/components/schemas/SessionSummary" }),
            },
            ...errors,
            ...notFound("session"),
          },
        },
      },
      "/v1/sessions/{id}/events": {
        get: {
          summary: "The raw event stream of a session (NDJSON)",
          security: bearer,
          parameters: [
            sessionId,
            { name: "after", in: "query", schema: { type: "integer", minimum: 0 } },
            {
              name: "follow",
              in: "query",
              schema: { enum: ["0", "1", "true", "false"] },
              description: "Tail live; the stream ends once the session is closed or expired",
            },
          ],
          responses: {
            "200": { description: "One event per line", content: { "application/x-ndjson": {} } },
            ...errors,
            ...notFound("session"),
          },
        },
      },
      "/v1/agents": {
        post: {
          summary: "Create an agent account; the token is shown only here",
          security: bearer,
          requestBody: { required: true, ...json(z.toJSONSchema(createAgentBody)) },
          responses: {
            "201": {
              description: "Created",
              ...json({
                type: "object",
                properties: {
                  id: { type: "string" },
                  name: { type: "string" },
                  connections: {
                    type: ["array", "null"],
                    items: { type: "string" },
                    description: "Connections the agent may serve; null: every connection.",
                  },
                  token: { type: "string", description: "The agent token; shown only here." },
                },
              }),
            },
            ...errors,
            "404": { description: "A named connection is not configured", ...json(errorSchema) },
          },
        },
        get: {
          summary: "Agent accounts and their live links",
          security: bearer,
          responses: { "200": { description: "OK" }, ...errors },
        },
      },
      "/v1/agents/{id}": {
        delete: {
          summary: "Revoke an agent's token and end its links",
          security: bearer,
          parameters: [agentId],
          responses: { "200": { description: "Revoked" }, ...errors, ...notFound("agent") },
        },
      },
      "/v1/api-keys": {
        post: {
          summary: "Make an API key for automation; the key is shown only here",
          security: bearer,
          requestBody: { required: true, ...json(z.toJSONSchema(createApiKeyBody)) },
          responses: {
            "201": {
              description: "Made",
              ...json({
                allOf: [
                  { $ref: "#/components/schemas/ApiKey" },
                  { type: "object", properties: { key: { type: "string", description: "Shown only here" } } },
                ],
              }),
            },
            ...errors,
          },
        },
        get: {
          summary: "API keys and sign-in keys, newest first (never the keys themselves)",
          security: bearer,
          parameters: pageParameters,
          responses: {
            "200": {
              description: "A page of keys",
              ...json({
                type: "object",
                properties: {
                  items: { type: "array", items: { $ref: "#/components/schemas/ApiKey" } },
                  nextCursor: { type: ["string", "null"] },
                },
              }),
            },
            ...errors,
          },
        },
      },
      "/v1/api-keys/{id}": {
        delete: {
          summary: "Revoke a key: refused from the next request on",
          security: bearer,
          parameters: [{ ...sessionId, description: "API key id" }],
          responses: {
            "200": { description: "Revoked", ...json({ $ref: "#/components/schemas/ApiKey" }) },
            ...errors,
            ...notFound("API key"),
          },
        },
      },
      "/v1/auth/login": {
        get: {
          summary: "Start a person's sign-in through OIDC (authorization code + PKCE)",
          responses: {
            "302": { description: "To the issuer's authorization endpoint" },
            "404": { description: "Sign-in is not configured (identity.admin)", ...json(errorSchema) },
            "503": { description: "The issuer cannot be reached", ...json(errorSchema) },
          },
        },
      },
      "/v1/auth/callback": {
        get: {
          summary:
            "Where the issuer sends the browser back; answers with an API key of the role the person's groups grant",
          responses: {
            "200": {
              description: "Signed in",
              ...json({
                type: "object",
                properties: {
                  key: { type: "string" },
                  id: { type: "string" },
                  role: { enum: ["admin", "approver", "auditor"] },
                  name: { type: "string" },
                  expiresAt: { type: "string", format: "date-time" },
                },
              }),
            },
            "401": { description: "Sign-in expired, refused or failed at the issuer", ...json(errorSchema) },
            "403": { description: "In no group mapped to a role", ...json(errorSchema) },
            "404": { description: "Sign-in is not configured (identity.admin)", ...json(errorSchema) },
            "503": { description: "The issuer cannot be reached", ...json(errorSchema) },
          },
        },
      },
      "/v1/audit": {
        get: {
          summary:
            "The audit log, newest first: who changed what (agent accounts, API keys, sign-ins, session closes, retention purges, key rotations, policies, approvals)",
          security: bearer,
          parameters: pageParameters,
          responses: {
            "200": {
              description: "A page of entries",
              ...json({
                type: "object",
                properties: {
                  items: {
                    type: "array",
                    items: {
                      type: "object",
                      properties: {
                        id: { type: "string" },
                        at: { type: "string", format: "date-time" },
                        actor: {
                          type: "string",
                          description:
                            "API key id, `<issuer>#<sub>` of a runner or a signed-in person, or `system` for the control plane itself",
                        },
                        action: {
                          enum: [
                            "agent.create",
                            "agent.revoke",
                            "api-key.create",
                            "api-key.revoke",
                            "approval.request",
                            "approval.approve",
                            "approval.deny",
                            "approval.expire",
                            "approval.cancel",
                            "auth.login",
                            "policy.set",
                            "policy.delete",
                            "session.close",
                            "sessions.purge",
                            "signing.rotate",
                          ],
                        },
                        target: { type: ["string", "null"] },
                        details: { type: "object" },
                      },
                    },
                  },
                  nextCursor: { type: ["string", "null"] },
                },
              }),
            },
            ...errors,
          },
        },
      },
      "/v1/policies": {
        get: {
          summary: "The policies agents evaluate, in order: the config file's, then those set over REST",
          security: bearer,
          responses: {
            "200": {
              description: "Every policy",
              ...json({
                type: "object",
                properties: { items: { type: "array", items: { $ref: "#/components/schemas/Policy" } } },
              }),
            },
            ...errors,
          },
        },
      },
      "/v1/policies/{name}": {
        put: {
          summary: "Create or replace a policy (admin); pushed to every linked agent at once",
          security: bearer,
          parameters: [policyPath],
          requestBody: { required: true, ...json(z.toJSONSchema(policyBody)) },
          responses: {
            "200": { description: "Set", ...json({ $ref: "#/components/schemas/Policy" }) },
            ...errors,
            ...conflict,
          },
        },
        delete: {
          summary: "Remove a policy set over REST (admin)",
          security: bearer,
          parameters: [policyPath],
          responses: { "204": { description: "Removed" }, ...errors, ...notFound("policy"), ...conflict },
        },
      },
      "/v1/approvals": {
        get: {
          summary: "Approvals, newest first (approver, admin, auditor)",
          security: bearer,
          parameters: [
            {
              name: "status",
              in: "query",
              schema: { enum: ["pending", "approved", "denied", "expired", "cancelled"] },
            },
            ...pageParameters,
          ],
          responses: {
            "200": {
              description: "A page of approvals",
              ...json({
                type: "object",
                properties: {
                  items: { type: "array", items: { $ref: "#/components/schemas/Approval" } },
                  nextCursor: { type: ["string", "null"] },
                },
              }),
            },
            ...errors,
          },
        },
      },
      "/v1/approvals/{id}": {
        get: {
          summary: "One approval, with what it holds",
          security: bearer,
          parameters: [approvalPath],
          responses: {
            "200": { description: "The approval", ...json({ $ref: "#/components/schemas/Approval" }) },
            ...errors,
            ...notFound("approval"),
          },
        },
      },
      "/v1/approvals/{id}/approve": {
        post: {
          summary: "Let the held request or tool call go on (approver role; not the requester)",
          security: bearer,
          parameters: [approvalPath],
          requestBody: { required: true, ...json(z.toJSONSchema(decideApprovalBody)) },
          responses: {
            "200": { description: "Approved", ...json({ $ref: "#/components/schemas/Approval" }) },
            ...errors,
            ...notFound("approval"),
            ...conflict,
          },
        },
      },
      "/v1/approvals/{id}/deny": {
        post: {
          summary: "Refuse the held request or tool call; the client is told the reason (approver role)",
          security: bearer,
          parameters: [approvalPath],
          requestBody: { required: true, ...json(z.toJSONSchema(decideApprovalBody)) },
          responses: {
            "200": { description: "Denied", ...json({ $ref: "#/components/schemas/Approval" }) },
            ...errors,
            ...notFound("approval"),
            ...conflict,
          },
        },
      },
      "/v1/openapi.json": {
        get: { summary: "This document", responses: { "200": { description: "OpenAPI 3.1 document" } } },
      },
      "/v1/.well-known/jwks.json": {
        get: {
          summary: "Public keys that verify session tokens and seals",
          responses: { "200": { description: "JWK set" } },
        },
      },
      "/healthz": { get: { summary: "Liveness", responses: { "200": { description: "Alive" } } } },
      "/readyz": {
        get: {
          summary: "Readiness",
          responses: { "200": { description: "Ready" }, "503": { description: "Not ready" } },
        },
      },
      "/metrics": {
        get: { summary: "Prometheus metrics", responses: { "200": { description: "Metrics" } } },
      },
    },
  };
  return document;
}
