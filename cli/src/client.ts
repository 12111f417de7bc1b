/**
 * Commands that talk to a running control plane over REST: sessions, approvals,
 * agents, and `exec`, which runs a tool through a session.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { verifyRecord } from "@gatehouse/control-plane/sessions/verify.js";
import type { StoredEvent } from "@gatehouse/control-plane/store/types.js";
import {
  type ApprovalStatus,
  type ApprovalView,
  CiTokenError,
  type CiTokenSource,
  ciIdToken,
  ciTokenVariables,
  type ExchangeView,
  GatehouseClient,
  type OpenedSession,
  parseCiTokenSource,
  runWithSession,
  type SessionSummary,
} from "@gatehouse/sdk";
import type { JSONWebKeySet } from "jose";

type Env = Readonly<Record<string, string | undefined>>;

export interface ClientFlags {
  url?: string | undefined;
  data: string;
  json?: boolean | undefined;
}

/** Thrown for a command used wrongly; the message is shown with the usage. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The control plane's REST URL: --url, GATEHOUSE_URL or the `up` default. */
function controlPlaneUrl(flags: ClientFlags, env: Env): string {
  return flags.url ?? env.GATEHOUSE_URL ?? "http://127.0.0.1:7070";
}

/**
 * The REST client: URL from {@link controlPlaneUrl}; API key from GATEHOUSE_TOKEN,
 * GATEHOUSE_ADMIN_TOKEN or the token `up` keeps in the data dir.
 */
export async function connect(flags: ClientFlags, env: Env): Promise<GatehouseClient> {
  const url = controlPlaneUrl(flags, env);
  let token = env.GATEHOUSE_TOKEN ?? env.GATEHOUSE_ADMIN_TOKEN;
  if (!token) {
    try {
      token = (await readFile(join(flags.data, "admin-token"), "utf8")).trim();
    } catch {
      throw new UsageError(
        `no API key: set GATEHOUSE_TOKEN (or GATEHOUSE_ADMIN_TOKEN), or run from where \`gatehouse up\` keeps ${join(flags.data, "admin-token")}`,
      );
    }
  }
  return new GatehouseClient({ url, token });
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}

function out(text: string): void {
  process.stdout.write(`${text}\n`);
}

export async function sessionsList(
  client: GatehouseClient,
  flags: ClientFlags & { connection?: string; status?: string; limit?: string; cursor?: string },
): Promise<void> {
  const status = flags.status;
  if (status !== undefined && status !== "open" && status !== "closed" && status !== "expired") {
    throw new UsageError(`--status must be open, closed or expired, not '${status}'`);
  }
  const page = await client.listSessions({
    ...(flags.connection ? { connection: flags.connection } : {}),
    ...(status ? { status } : {}),
    ...(flags.limit ? { limit: Number(flags.limit) } : {}),
    ...(flags.cursor ? { cursor: flags.cursor } : {}),
  });
  if (flags.json) return out(JSON.stringify(page, null, 2));
  const rows = page.items.map((s: SessionSummary) => [
    s.id,
    s.connection,
    s.status,
    s.subject.id,
    s.createdAt,
  ]);
  out(table([["ID", "CONNECTION", "STATUS", "SUBJECT", "CREATED"], ...rows]));
  if (page.nextCursor) out(`\nmore: gatehouse sessions list --cursor ${page.nextCursor}`);
}

/** The last user message of a Messages request, as text. */
function promptOf(body: unknown): string | null {
  const messages = (body as { messages?: Array<{ role: string; content: unknown }> } | null)?.messages;
  const last = messages?.filter((m) => m.role === "user").at(-1);
  if (!last) return null;
  if (typeof last.content === "string") return last.content;
  if (Array.isArray(last.content)) {
    return last.content
      .map((b: { type?: string; text?: string }) => (b.type === "text" ? b.text : `[${b.type}]`))
      .join(" ");
  }
  return null;
}

/** What the model answered: text, and tool calls with their input. */
function answerOf(exchange: ExchangeView): string | null {
  const message = (exchange.response?.message ?? exchange.response?.body) as
    | { content?: Array<{ type: string; text?: string; name?: string; input?: unknown }> }
    | null
    | undefined;
  if (!Array.isArray(message?.content)) return null;
  return message.content
    .map((b) =>
      b.type === "text"
        ? b.text
        : b.type === "tool_use"
          ? `[tool ${b.name} ${JSON.stringify(b.input)}]`
          : `[${b.type}]`,
    )
    .join(" ");
}

const preview = (text: string, max = 160) => {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
};

export async function sessionsShow(client: GatehouseClient, id: string, flags: ClientFlags): Promise<void> {
  const session = await client.getSession(id);
  if (flags.json) return out(JSON.stringify(session, null, 2));
  const lines = [
    `Session     ${session.id}`,
    `Connection  ${session.connection}`,
    `Subject     ${session.subject.kind} ${session.subject.id}`,
    `Status      ${session.status}${session.closedAt ? ` (closed ${session.closedAt})` : ""}`,
    `Created     ${session.createdAt}, expires ${session.expiresAt}`,
    `Sealed      ${session.seal ? `${session.seal.count} events, last hash ${session.seal.lastHash.slice(0, 16)}…` : "no"}`,
    `Exchanges   ${session.exchanges.length}`,
  ];
  session.exchanges.forEach((x, i) => {
    lines.push(
      "",
      `#${i + 1} ${x.startedAt} ${x.method} ${x.path} → ${x.status ?? "…"} ${x.outcome ?? "in progress"}`,
    );
    if (x.error) lines.push(`   error   ${x.error.code}: ${x.error.message}`);
    const prompt = promptOf(x.request.body);
    if (prompt) lines.push(`   prompt  ${preview(prompt)}`);
    const answer = answerOf(x);
    if (answer) lines.push(`   answer  ${preview(answer)}`);
  });
  out(lines.join("\n"));
}

/** One line of the NDJSON event stream, as the record it was stored as. */
function storedEvent(sessionId: string, line: string): StoredEvent {
  const e = JSON.parse(line) as Omit<StoredEvent, "sessionId" | "body"> & { body?: string };
  return { ...e, sessionId, body: e.body === undefined ? null : Buffer.from(e.body, "base64") };
}

/**
 * The lines of a response body as they arrive. Only the line being read is held,
 * so a stream of any length takes the memory of its longest line (one event).
 */
async function* lines(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  /** The start of the current line, from earlier chunks; only new text is searched for its end. */
  let head: string[] = [];
  for await (const chunk of body) {
    const text = decoder.decode(chunk, { stream: true });
    let start = 0;
    for (let end = text.indexOf("\n"); end !== -1; end = text.indexOf("\n", start)) {
      head.push(text.slice(start, end));
      yield head.join("");
      head = [];
      start = end + 1;
    }
    if (start < text.length) head.push(text.slice(start));
  }
  head.push(decoder.decode());
  const last = head.join("");
  if (last.length > 0) yield last;
}

/** A session's recorded events, read from `GET /v1/sessions/{id}/events` as they stream in. */
async function* streamedEvents(client: GatehouseClient, sessionId: string): AsyncGenerator<StoredEvent> {
  const res = await client.events(sessionId);
  if (!res.body) return;
  for await (const line of lines(res.body)) {
    if (line.length > 0) yield storedEvent(sessionId, line);
  }
}

/**
 * Proves a session's record complete and unaltered, or says where it is not:
 * recomputes the hash chain from the events and checks the seal's signature with
 * the published keys (or a key set saved earlier, --jwks FILE). Exit status 1
 * unless the record is intact.
 */
export async function sessionsVerify(
  client: GatehouseClient,
  id: string,
  flags: ClientFlags & { jwks?: string | undefined },
): Promise<number> {
  // The summary carries the seal; the events are checked one by one as they arrive, so
  // neither the record nor a view of it is ever held whole, whatever its size.
  const session = await client.getSessionSummary(id);
  const keys = flags.jwks
    ? (JSON.parse(await readFile(flags.jwks, "utf8")) as JSONWebKeySet)
    : ((await client.jwks()) as JSONWebKeySet);
  const verdict = await verifyRecord(session.id, streamedEvents(client, session.id), session.seal, keys);
  if (flags.json) {
    out(JSON.stringify(verdict, null, 2));
    return verdict.intact ? 0 : 1;
  }
  const lines = [`Session     ${session.id} (${session.status})`];
  lines.push(
    verdict.chainBreak
      ? `Chain       BROKEN at event ${verdict.chainBreak.seq}: ${verdict.chainBreak.reason}`
      : `Chain       ${verdict.events} events, unbroken; last hash ${verdict.lastHash}`,
  );
  const seal = verdict.seal;
  if (seal.state === "missing") {
    lines.push(`Seal        none${session.status === "open" ? " yet: the session is open" : ""}`);
  } else if (seal.state === "invalid") {
    lines.push(`Seal        INVALID: ${seal.reason}`);
  } else {
    const covers = seal.coversAll ? "every event" : `the first ${seal.count} events; later ones are unsealed`;
    lines.push(
      `Seal        valid, covers ${covers}; signed by key ${seal.kid} at ${new Date(seal.sealedAt).toISOString()}`,
    );
  }
  lines.push(verdict.intact ? "Verdict     record complete and unaltered" : "Verdict     NOT proven intact");
  out(lines.join("\n"));
  return verdict.intact ? 0 : 1;
}

export async function sessionsClose(client: GatehouseClient, id: string): Promise<void> {
  const closed = await client.closeSession(id);
  out(`session ${closed.id} ${closed.status}`);
}

export async function sessionsEvents(client: GatehouseClient, id: string, follow: boolean): Promise<void> {
  const res = await client.events(id, { follow });
  if (!res.body) return;
  for await (const chunk of res.body) process.stdout.write(chunk);
}

const APPROVAL_STATUSES: readonly ApprovalStatus[] = [
  "pending",
  "approved",
  "denied",
  "expired",
  "cancelled",
];

/** The --status of `approvals list`, checked before anything is asked of the control plane. */
export function approvalStatus(status: string | undefined): ApprovalStatus | undefined {
  if (status === undefined) return undefined;
  const known = APPROVAL_STATUSES.find((s) => s === status);
  if (!known) {
    throw new UsageError(
      `--status must be ${APPROVAL_STATUSES.slice(0, -1).join(", ")} or ${APPROVAL_STATUSES.at(-1)}, not '${status}'`,
    );
  }
  return known;
}

/** The --reason of `approvals approve|deny`: required, so every decision says why. */
export function approvalReason(verb: string, reason: string | undefined): string {
  if (reason === undefined || reason.trim() === "") {
    throw new UsageError(`approvals ${verb} needs --reason TEXT (why; it is recorded with the decision)`);
  }
  return reason;
}

export async function approvalsList(
  client: GatehouseClient,
  flags: ClientFlags & { status?: ApprovalStatus | undefined; limit?: string; cursor?: string },
): Promise<void> {
  const page = await client.listApprovals({
    ...(flags.status ? { status: flags.status } : {}),
    ...(flags.limit ? { limit: Number(flags.limit) } : {}),
    ...(flags.cursor ? { cursor: flags.cursor } : {}),
  });
  if (flags.json) return out(JSON.stringify(page, null, 2));
  const rows = page.items.map((a: ApprovalView) => [
    a.id,
    a.status,
    a.connection,
    a.requester.id,
    `${a.policy}/${a.rule}`,
    a.createdAt,
    a.expiresAt,
  ]);
  out(table([["ID", "STATUS", "CONNECTION", "REQUESTER", "POLICY/RULE", "CREATED", "EXPIRES"], ...rows]));
  if (page.nextCursor) {
    const status = flags.status ? ` --status ${flags.status}` : "";
    out(`\nmore: gatehouse approvals list${status} --cursor ${page.nextCursor}`);
  }
}

/** One approval with what it holds (the preview), which the chat message never carries. */
export async function approvalsShow(client: GatehouseClient, id: string, flags: ClientFlags): Promise<void> {
  const a = await client.getApproval(id);
  if (flags.json) return out(JSON.stringify(a, null, 2));
  const lines = [
    `Approval    ${a.id}`,
    `Status      ${a.status}${a.decidedAt ? ` (${a.decidedAt} by ${a.decidedBy ?? "?"}: ${a.reason ?? ""})` : ""}`,
    `Connection  ${a.connection}`,
    `Requester   ${a.requester.kind} ${a.requester.id}`,
    `Session     ${a.sessionId}, exchange ${a.exchangeId}`,
    `Rule        ${a.policy}/${a.rule} on the ${a.stage}${a.matched.length > 0 ? `, matched ${a.matched.join(", ")}` : ""}`,
    `Message     ${a.message}`,
    `Created     ${a.createdAt}, expires ${a.expiresAt}`,
    "",
    "Held:",
    a.preview,
  ];
  out(lines.join("\n"));
}

export async function approvalsDecide(
  client: GatehouseClient,
  verdict: "approve" | "deny",
  id: string,
  reason: string,
  flags: ClientFlags,
): Promise<void> {
  const decided = verdict === "approve" ? await client.approve(id, reason) : await client.deny(id, reason);
  if (flags.json) return out(JSON.stringify(decided, null, 2));
  out(`approval ${decided.id} ${decided.status}`);
}

export async function agentsCreate(
  client: GatehouseClient,
  name: string,
  flags: ClientFlags & { connections: string[] },
): Promise<void> {
  const created = await client.createAgent(
    name,
    flags.connections.length > 0 ? { connections: flags.connections } : {},
  );
  if (flags.json) return out(JSON.stringify(created, null, 2));
  const scope = created.connections === null ? "every connection" : created.connections.join(", ");
  out(
    `agent ${created.name} (${created.id}) created; it may serve ${scope}. Its token, shown only now:\n\n${created.token}\n`,
  );
  out("Put it in a file readable only by the agent and set controlPlane.tokenFile to that file.");
}

export interface ExecFlags extends ClientFlags {
  connection: string;
  ttl?: string | undefined;
  labels: string[];
  /** Where the CI job's OIDC ID token comes from (`CI_TOKEN_SOURCES`); without it, an API key opens the session. */
  oidc?: string | undefined;
  audience?: string | undefined;
  azureServiceConnection?: string | undefined;
}

/** Who opens exec's session, who closes it, and what else the tool must not see. */
interface ExecAuthority {
  opener: GatehouseClient;
  closer(session: OpenedSession): GatehouseClient;
  withhold: string[];
}

/**
 * With --oidc, the job's ID token opens the session and the session's own token closes
 * it, so the job needs no API key; otherwise the API key does both, as `connect` finds it.
 */
async function execAuthority(flags: ExecFlags, env: Env): Promise<ExecAuthority> {
  if (!flags.oidc) {
    if (flags.audience !== undefined || flags.azureServiceConnection !== undefined) {
      throw new UsageError("--audience and --azure-service-connection apply only with --oidc SOURCE");
    }
    const client = await connect(flags, env);
    return { opener: client, closer: () => client, withhold: [] };
  }
  let source: CiTokenSource;
  try {
    source = parseCiTokenSource(flags.oidc);
  } catch (error) {
    if (error instanceof CiTokenError) throw new UsageError(`--oidc: ${error.message}`);
    throw error;
  }
  const options = { env, audience: flags.audience, azureServiceConnectionId: flags.azureServiceConnection };
  const url = controlPlaneUrl(flags, env);
  return {
    opener: new GatehouseClient({ url, token: await ciIdToken(source, options) }),
    closer: (session) => new GatehouseClient({ url, token: session.token }),
    withhold: ciTokenVariables(source, options),
  };
}

export async function exec(flags: ExecFlags, command: string[], env: Env): Promise<number> {
  const [program, ...args] = command;
  if (!program)
    throw new UsageError(
      "exec needs a command after --, e.g. gatehouse exec --connection claude -- claude -p hi",
    );
  const labels: Record<string, string> = {};
  for (const label of flags.labels) {
    const at = label.indexOf("=");
    if (at <= 0) throw new UsageError(`--label takes key=value, not '${label}'`);
    labels[label.slice(0, at)] = label.slice(at + 1);
  }
  const { opener, closer, withhold } = await execAuthority(flags, env);
  const session = await opener.openSession({
    connection: flags.connection,
    ...(flags.ttl ? { ttlSeconds: Number(flags.ttl) } : {}),
    labels,
  });
  const client = closer(session);
  let status: number;
  try {
    status = await runWithSession(session, program, args, { env, withhold });
  } catch (error) {
    await client.closeSession(session.id).catch(() => {});
    throw error;
  }
  // The tool's status is what the caller asked for; a failure to close is reported, not substituted.
  try {
    await client.closeSession(session.id);
  } catch (error) {
    process.stderr.write(
      `gatehouse: could not close session ${session.id} (${(error as Error).message}); its token stays valid until it expires\n`,
    );
  }
  return status;
}
