/**
 * Tells chat channels of each new pending approval, through the incoming
 * webhooks of Slack or Microsoft Teams (`approvals.webhooks`). The message says
 * what waits (connection, requester, policy and rule, the rule's message, the
 * approval's id and expiry) and how to decide it; it never carries what is held
 * (the preview), which approvers read over REST.
 *
 * A webhook URL holds a secret (Slack's path, the `sig` of a Teams Workflows
 * URL), so only its origin is ever logged. Deliveries are retried on network
 * errors, timeouts, 5xx and 429; each webhook is tried on its own, so one that
 * is down does not hold back the others.
 *
 * @see https://api.slack.com/messaging/webhooks
 * @see https://api.slack.com/reference/surfaces/formatting#escaping
 * @see https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook
 */
import { setTimeout as sleep } from "node:timers/promises";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import type { ApprovalAnnouncer, ApprovalNotice } from "./service.js";

export type { ApprovalNotice };

/** One entry of `approvals.webhooks`. */
export interface WebhookConfig {
  /** Holds a secret: never logged, never put in an error message. */
  url: string;
  format: "slack" | "teams";
}

export interface ApprovalWebhooksDeps {
  logger: Pick<Logger, "debug" | "info" | "warn">;
  fetch?: typeof fetch;
  /** Per attempt (default 5000). */
  timeoutMs?: number;
  /** Attempts per webhook and notice, the first included (default 3). */
  attempts?: number;
  /** Wait before the second attempt, doubled before each later one (default 1000). */
  backoffMs?: number;
  /** The REST URL approvers reach, put in the commands as `--url`; omitted, the CLI's default applies. */
  controlPlaneUrl?: string;
}

/** A `Retry-After` longer than this is not waited for: the approval may expire meanwhile. */
const MAX_RETRY_AFTER_MS = 30_000;

/**
 * Longest user-supplied text put in a message, per field: Slack cuts a section's text at
 * 3000 characters and a field's at 2000, and a chat message is read, not archived.
 */
const MAX_FIELD = 200;
const MAX_MESSAGE = 1000;

/** A webhook as it is used: its URL, the origin that may be logged, and the parts that may not. */
interface Target {
  url: string;
  origin: string;
  format: WebhookConfig["format"];
  /** The URL as configured and as parsed, and their paths with query: cut from any text logged. */
  secrets: string[];
}

/** The end of one attempt: retried or not, and what may be logged of it. */
type Attempt =
  | { ok: true; status: number }
  | { ok: false; retry: boolean; status: number | null; reason: string; retryAfterMs?: number };

/** Posts new pending approvals to the configured Slack and Teams webhooks. */
export class ApprovalWebhooks implements ApprovalAnnouncer {
  private readonly targets: Target[];
  private readonly fetch: typeof fetch;
  private readonly timeoutMs: number;
  private readonly attempts: number;
  private readonly backoffMs: number;
  /** Aborted by {@link stop}: deliveries under way give up, so they hold no stopping process open. */
  private readonly stopping = new AbortController();

  /**
   * @throws GatehouseError GATE_CONFIG_INVALID when a URL is not an http(s) URL
   *   (config validation catches this first; the message names the entry, not the URL).
   */
  constructor(
    webhooks: readonly WebhookConfig[],
    private readonly deps: ApprovalWebhooksDeps,
  ) {
    this.targets = webhooks.map((w, i) => {
      let parsed: URL | undefined;
      try {
        parsed = new URL(w.url);
      } catch {}
      if (parsed === undefined || (parsed.protocol !== "https:" && parsed.protocol !== "http:")) {
        throw new GatehouseError(
          "GATE_CONFIG_INVALID",
          `approvals.webhooks[${i}].url is not an http(s) URL; copy the webhook URL whole from Slack or Teams`,
        );
      }
      const secrets = [
        w.url,
        parsed.href,
        w.url.slice(parsed.origin.length),
        parsed.href.slice(parsed.origin.length),
      ]
        .filter((part) => part.length > 1)
        .sort((a, b) => b.length - a.length);
      return { url: w.url, origin: parsed.origin, format: w.format, secrets };
    });
    this.fetch = deps.fetch ?? fetch;
    this.timeoutMs = deps.timeoutMs ?? 5000;
    this.attempts = Math.max(1, deps.attempts ?? 3);
    this.backoffMs = deps.backoffMs ?? 1000;
  }

  /** Posts to every webhook; never rejects; resolves when all deliveries finished (tests await it; production does not). */
  async notify(notice: ApprovalNotice): Promise<void> {
    if (this.targets.length === 0) return;
    const bodies = { slack: "", teams: "" };
    try {
      const commands = decideCommands(notice.id, this.deps.controlPlaneUrl);
      bodies.slack = JSON.stringify(slackMessage(notice, commands));
      bodies.teams = JSON.stringify(teamsMessage(notice, commands));
    } catch (error) {
      this.deps.logger.warn(
        { err: error, approval: notice.id },
        "could not compose the approval webhook message",
      );
      return;
    }
    await Promise.allSettled(this.targets.map((t) => this.deliver(t, bodies[t.format], notice.id)));
  }

  /** Gives up on deliveries under way (their failure is logged) and makes no more. */
  stop(): void {
    this.stopping.abort();
  }

  private async deliver(target: Target, body: string, approval: string): Promise<void> {
    const log = { webhook: target.origin, format: target.format, approval };
    let last: Attempt | undefined;
    for (let attempt = 1; attempt <= this.attempts && !this.stopping.signal.aborted; attempt++) {
      if (attempt > 1) {
        const backoff = this.backoffMs * 2 ** (attempt - 2);
        const retryAfter = last?.ok === false ? (last.retryAfterMs ?? 0) : 0;
        try {
          await sleep(Math.max(backoff, retryAfter), undefined, { signal: this.stopping.signal });
        } catch {
          break;
        }
      }
      last = await this.attempt(target, body);
      if (last.ok) {
        this.deps.logger.info({ ...log, status: last.status, attempt }, "approval webhook delivered");
        return;
      }
      this.deps.logger.debug(
        { ...log, status: last.status, attempt, reason: last.reason },
        "approval webhook attempt failed",
      );
      if (!last.retry) break;
    }
    if (last === undefined || last.ok) return;
    let message: string;
    if (this.stopping.signal.aborted) {
      message =
        "approval webhook not delivered: the control plane stopped first; approvers there were not told of the approval";
    } else if (last.retry) {
      message = `approval webhook not delivered after ${this.attempts} attempts; approvers there were not told of the approval`;
    } else {
      message = "approval webhook refused the message (not retried); check the webhook in approvals.webhooks";
    }
    this.deps.logger.warn(
      { ...log, status: last.status, attempts: this.attempts, reason: last.reason },
      message,
    );
  }

  private async attempt(target: Target, body: string): Promise<Attempt> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), this.timeoutMs);
    try {
      const res = await this.fetch(target.url, {
        method: "POST",
        headers: { "content-type": "application/json; charset=utf-8" },
        body,
        signal: AbortSignal.any([abort.signal, this.stopping.signal]),
        // A redirect would carry the message to where the URL's owner did not say.
        redirect: "manual",
      });
      // The body is read whole (it is small), so the connection is free for reuse and the timeout covers it.
      await res.arrayBuffer();
      if (res.ok) return { ok: true, status: res.status };
      // 429 and 5xx say "later"; any other answer will be the same next time.
      const retry = res.status === 429 || res.status >= 500;
      const retryAfterMs = retryAfter(res.headers.get("retry-after"));
      return {
        ok: false,
        retry,
        status: res.status,
        reason: `HTTP ${res.status}`,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      };
    } catch (error) {
      const reason = abort.signal.aborted
        ? `no answer within ${this.timeoutMs} ms`
        : failureReason(error, target);
      return { ok: false, retry: true, status: null, reason };
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Milliseconds to wait from a `Retry-After` of delay-seconds, when short enough to wait for. */
function retryAfter(header: string | null): number | undefined {
  if (header === null || !/^\d+$/.test(header.trim())) return undefined;
  const ms = Number(header.trim()) * 1000;
  return ms <= MAX_RETRY_AFTER_MS ? ms : undefined;
}

/**
 * Why a request failed, with the URL kept out: fetch's messages can quote it
 * (`Failed to parse URL from …`), so it is cut down to its origin wherever it appears.
 */
function failureReason(error: unknown, target: Target): string {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } } | null)?.cause;
  const code = typeof cause?.code === "string" ? cause.code : undefined;
  const message =
    typeof cause?.message === "string"
      ? cause.message
      : error instanceof Error
        ? error.message
        : String(error);
  // Longest first, so a whole URL becomes its origin before its path alone is cut.
  let safe = message;
  for (const secret of target.secrets) {
    safe = safe.split(secret).join(secret.startsWith(target.origin) ? target.origin : "/…");
  }
  return code && !safe.includes(code) ? `${code}: ${safe}` : safe;
}

/** The commands that decide the approval, ready to paste into a shell. */
interface DecideCommands {
  approve: string;
  deny: string;
  show: string;
}

function decideCommands(id: string, controlPlaneUrl: string | undefined): DecideCommands {
  const url = controlPlaneUrl ? ` --url ${shellWord(controlPlaneUrl)}` : "";
  const quoted = shellWord(id);
  return {
    approve: `gatehouse approvals approve ${quoted} --reason "…"${url}`,
    deny: `gatehouse approvals deny ${quoted} --reason "…"${url}`,
    show: `gatehouse approvals show ${quoted}${url}`,
  };
}

/** A word as a POSIX shell reads it back unchanged: pasted commands must do only what they say. */
function shellWord(word: string): string {
  return /^[A-Za-z0-9._:/@%+=,-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}

/** One line, at most `max` characters: a chat message is no place for a page of text. */
function clip(text: string, max = MAX_FIELD): string {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > max ? `${flat.slice(0, max - 1)}…` : flat;
}

/**
 * Text for Slack's mrkdwn with `&`, `<` and `>` escaped as Slack asks, so that
 * a requester's or rule's text cannot make a mention (`<!channel>`, `<@U…>`) or a link.
 *
 * @see https://api.slack.com/reference/surfaces/formatting#escaping
 */
export function slackEscape(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

/**
 * Text for an Adaptive Card TextBlock or FactSet, which Teams renders as Markdown:
 * the characters that make links and emphasis are backslash-escaped, so a
 * requester's or rule's text is shown as it is.
 */
export function teamsEscape(text: string): string {
  return text.replace(/[\\`*_~[\]()<>#|!]/g, (c) => `\\${c}`);
}

function expiry(notice: ApprovalNotice): string {
  return new Date(notice.expiresAt).toISOString();
}

/** What waits, as label and plain text (escaped per format by the caller). */
function facts(notice: ApprovalNotice): Array<[string, string]> {
  return [
    ["Connection", clip(notice.connection)],
    ["Requester", clip(`${notice.requester.kind} ${notice.requester.id}`)],
    ["Policy / rule", clip(`${notice.policy} / ${notice.rule}`)],
    ["Held", notice.stage === "request" ? "a request to the model" : "a tool call in the model's answer"],
    ["Approval", clip(notice.id)],
    ["Expires", expiry(notice)],
  ];
}

/**
 * A Slack incoming-webhook message: `text` is the fallback shown in
 * notifications, `blocks` the message itself.
 *
 * @see https://api.slack.com/messaging/webhooks
 * @see https://api.slack.com/reference/block-kit/blocks#section
 */
function slackMessage(notice: ApprovalNotice, commands: DecideCommands): Record<string, unknown> {
  const e = slackEscape;
  const message = clip(notice.message, MAX_MESSAGE);
  return {
    text: e(
      `Approval needed on ${clip(notice.connection)}: ${clip(notice.policy)} / ${clip(notice.rule)} for ${clip(notice.requester.id)}, expires ${expiry(notice)}. ${commands.approve}`,
    ),
    blocks: [
      {
        type: "section",
        text: { type: "mrkdwn", text: `*Approval needed:* ${e(message)}` },
      },
      {
        type: "section",
        fields: facts(notice).map(([label, value]) => ({ type: "mrkdwn", text: `*${label}*\n${e(value)}` })),
      },
      {
        type: "section",
        text: {
          type: "mrkdwn",
          text: `What is held is not shown here; read it with \`${e(commands.show)}\`, then decide:\n\`\`\`${e(commands.approve)}\n${e(commands.deny)}\`\`\``,
        },
      },
    ],
  };
}

/**
 * A Teams message with one Adaptive Card attachment, the shape both Teams
 * Workflows ("post to a channel when a webhook request is received") and the
 * older incoming-webhook connectors take. Card version 1.4: Workflows refuse later ones.
 *
 * @see https://learn.microsoft.com/en-us/microsoftteams/platform/webhooks-and-connectors/how-to/connectors-using#send-adaptive-cards-using-an-incoming-webhook
 * @see https://adaptivecards.io/explorer/
 */
function teamsMessage(notice: ApprovalNotice, commands: DecideCommands): Record<string, unknown> {
  const e = teamsEscape;
  const mono = (text: string) => ({ type: "TextBlock", text: e(text), fontType: "Monospace", wrap: true });
  return {
    type: "message",
    attachments: [
      {
        contentType: "application/vnd.microsoft.card.adaptive",
        contentUrl: null,
        content: {
          $schema: "http://adaptivecards.io/schemas/adaptive-card.json",
          type: "AdaptiveCard",
          version: "1.4",
          body: [
            { type: "TextBlock", text: "Approval needed", size: "Medium", weight: "Bolder", wrap: true },
            { type: "TextBlock", text: e(clip(notice.message, MAX_MESSAGE)), wrap: true },
            { type: "FactSet", facts: facts(notice).map(([title, value]) => ({ title, value: e(value) })) },
            {
              type: "TextBlock",
              text: "What is held is not shown here; read it, then decide, with:",
              wrap: true,
              isSubtle: true,
            },
            mono(commands.show),
            mono(commands.approve),
            mono(commands.deny),
          ],
        },
      },
    ],
  };
}
