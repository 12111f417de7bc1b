/** Request shapes of the REST API, validated at the edge and published in the OpenAPI document. */
import { GatehouseError } from "@gatehouse/proto/errors";
import { z } from "zod";
import { API_KEY_TTL } from "../identity/api-keys.js";

export const openSessionBody = z.strictObject({
  connection: z.string().min(1).describe("Name of the connection the session opens."),
  ttlSeconds: z
    .int()
    .min(30)
    .max(86_400)
    .optional()
    .describe("Requested token lifetime; capped by the configured maximum."),
  labels: z
    .record(z.string().max(63), z.string().max(256))
    .refine((l) => Object.keys(l).length <= 32, "at most 32 labels")
    .optional()
    .describe("Free-form labels kept with the record, e.g. pipeline run ids."),
});

export const listSessionsQuery = z.strictObject({
  connection: z.string().optional(),
  status: z.enum(["open", "closed", "expired"]).optional(),
  subject: z.string().optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().optional(),
});

export const createApiKeyBody = z.strictObject({
  name: z.string().trim().min(1).max(128).describe("What the key is for, e.g. the automation that holds it."),
  role: z
    .enum(["admin", "approver", "auditor"])
    .describe("admin: change anything; approver: decide approvals, read sessions; auditor: read only."),
  ttlSeconds: z
    .int()
    .min(60)
    .max(API_KEY_TTL.maxSeconds)
    .optional()
    .describe("Lifetime of the key (default 90 days, at most 366)."),
});

/** Pages of the audit log and of API keys. */
export const listAuditQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(500).default(100),
  cursor: z.string().optional(),
});

export const sessionQuery = z.strictObject({
  /** `summary`: the session without its exchanges, read without reading its events. */
  view: z.enum(["full", "summary"]).default("full"),
});

export const eventsQuery = z.strictObject({
  /** Only events with a greater sequence number. */
  after: z.coerce.number().int().min(0).default(0),
  follow: z.enum(["0", "1", "true", "false"]).optional(),
});

export const createAgentBody = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/, "use letters, digits, '.', '_' and '-' (max 63)")
    .describe("A name for the agent, e.g. the host it runs on."),
  connections: z
    .array(z.string().min(1))
    .min(1, "name at least one connection, or omit connections to allow every connection")
    .max(256)
    .optional()
    .describe(
      "Connections the agent may serve and record for (default: every connection). An agent asking for others is refused.",
    ),
});

/** Parses input against a schema, or fails with GATE_INVALID_REQUEST naming each bad field. */
export function parse<S extends z.ZodType>(schema: S, input: unknown, what: string): z.infer<S> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const problems = result.error.issues.map((i) => `${i.path.join(".") || "(body)"}: ${i.message}`).join("; ");
  throw new GatehouseError("GATE_INVALID_REQUEST", `invalid ${what}: ${problems}`);
}

export const listApprovalsQuery = z.strictObject({
  status: z.enum(["pending", "approved", "denied", "expired", "cancelled"]).optional(),
  limit: z.coerce.number().int().min(1).max(500).default(50),
  cursor: z.string().optional(),
});

export const decideApprovalBody = z.strictObject({
  reason: z
    .string()
    .trim()
    .min(1, "say why: the reason is recorded with the decision and told to the requester")
    .max(1000)
    .describe("Why: recorded in the session and the audit log, and told to the client on deny."),
});
