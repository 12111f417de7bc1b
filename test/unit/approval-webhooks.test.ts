/**
 * The approval webhooks against a real HTTP receiver on port 0: what Slack and
 * Teams are sent, that user text cannot ping a channel or make a link, retries
 * on 5xx/429/timeouts/refused connections and none on other 4xx, and that the
 * webhook URL (which holds a secret) never reaches the log.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, test } from "node:test";
import {
  type ApprovalNotice,
  ApprovalWebhooks,
  type ApprovalWebhooksDeps,
  type WebhookConfig,
} from "@gatehouse/control-plane/approvals/webhooks.js";
import { isGatehouseError } from "@gatehouse/proto/errors";
import { LogCapture, type LogEntry } from "../support/gatehouse.js";

/** The secret parts of the webhook URLs: neither may appear in a log line. */
const SLACK_PATH = "/services/T0SECRET/B0SECRET/xoxSlackSecretToken";
const TEAMS_QUERY = "?api-version=1&sig=TeamsSecretSignature";
const TEAMS_PATH = "/workflows/0a1b2c3d/triggers/manual/paths/invoke";

interface Received {
  path: string;
  headers: IncomingMessage["headers"];
  body: string;
}

/** Answers the nth request with the nth handler (the last one repeats); records what it received. */
class Receiver {
  readonly received: Received[] = [];
  private constructor(private readonly server: Server) {}

  static async start(...answers: Array<(res: ServerResponse) => void>): Promise<Receiver> {
    const server = createServer();
    const receiver = new Receiver(server);
    server.on("request", (req: IncomingMessage, res: ServerResponse) => {
      let body = "";
      req.setEncoding("utf8");
      req.on("data", (d: string) => {
        body += d;
      });
      req.on("end", () => {
        const n = receiver.received.push({ path: req.url ?? "", headers: req.headers, body });
        const answer = answers[Math.min(n, answers.length) - 1] ?? status(200);
        answer(res);
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return receiver;
  }

  get origin(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  get slackUrl(): string {
    return `${this.origin}${SLACK_PATH}`;
  }

  get teamsUrl(): string {
    return `${this.origin}${TEAMS_PATH}${TEAMS_QUERY}`;
  }

  json(i: number): Record<string, unknown> {
    return JSON.parse(this.received[i]?.body ?? "null") as Record<string, unknown>;
  }

  async close(): Promise<void> {
    // Requests held open by a "never answers" handler must not keep the server up.
    this.server.closeAllConnections();
    if (this.server.listening) {
      this.server.close();
      await once(this.server, "close");
    }
  }
}

const status =
  (code: number, headers: Record<string, string> = {}) =>
  (res: ServerResponse) => {
    res.writeHead(code, { "content-type": "text/plain", ...headers });
    res.end(code < 300 ? "ok" : "no");
  };
const never = () => (_res: ServerResponse) => {};

const NOTICE: ApprovalNotice = {
  id: "0195f3c2-7d41-7a3e-9c55-2f1e0b6a9d10",
  connection: "claude",
  requester: {
    kind: "oidc",
    id: "https://token.actions.githubusercontent.com#repo:acme/app:ref:refs/heads/main",
  },
  policy: "ci-default",
  rule: "no-private-keys",
  stage: "request",
  message: "Private keys must not be sent to the model.",
  expiresAt: Date.parse("2026-03-01T12:10:00.000Z"),
};

/** Every string anywhere in a JSON value. */
function strings(value: unknown): string[] {
  if (typeof value === "string") return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (value !== null && typeof value === "object") return Object.values(value).flatMap(strings);
  return [];
}

describe("approval webhooks", () => {
  let logs: LogCapture;
  const receivers: Receiver[] = [];
  const receiver = async (...answers: Array<(res: ServerResponse) => void>) => {
    const r = await Receiver.start(...answers);
    receivers.push(r);
    return r;
  };
  const webhooks = (targets: WebhookConfig[], deps: Partial<ApprovalWebhooksDeps> = {}) =>
    new ApprovalWebhooks(targets, { logger: logs.log("cp.approvals.webhooks"), backoffMs: 0, ...deps });
  const entries = (): LogEntry[] =>
    logs.lines
      .flatMap((l) => l.split("\n").filter((s) => s.trim() !== ""))
      .map((l) => JSON.parse(l) as LogEntry);

  beforeEach(() => {
    logs = new LogCapture("debug");
  });
  afterEach(async () => {
    // Whatever a test did, the secret parts of the URLs were never logged.
    const all = logs.lines.join("");
    for (const secret of [SLACK_PATH, "xoxSlackSecretToken", TEAMS_PATH, "TeamsSecretSignature"]) {
      assert.ok(!all.includes(secret), `the log holds part of a webhook URL (${secret}):\n${all}`);
    }
    for (const r of receivers.splice(0)) await r.close();
  });

  test("Slack gets an incoming-webhook message: fallback text and mrkdwn sections, with how to decide", async () => {
    const r = await receiver(status(200));
    await webhooks([{ url: r.slackUrl, format: "slack" }], {
      controlPlaneUrl: "https://gatehouse.example",
    }).notify(NOTICE);

    assert.equal(r.received.length, 1);
    assert.equal(r.received[0]?.path, SLACK_PATH, "posted to the URL as configured");
    assert.match(r.received[0]?.headers["content-type"] ?? "", /^application\/json/);
    const body = r.json(0) as { text: string; blocks: Array<Record<string, unknown>> };
    assert.equal(typeof body.text, "string");
    assert.match(body.text, /Approval needed on claude: ci-default \/ no-private-keys/);
    assert.ok(Array.isArray(body.blocks) && body.blocks.length > 0);
    for (const block of body.blocks) {
      assert.equal(block.type, "section");
      const texts = [block.text, ...((block.fields as unknown[] | undefined) ?? [])] as Array<
        { type: string; text: string } | undefined
      >;
      for (const t of texts.filter((x) => x !== undefined)) assert.equal(t.type, "mrkdwn");
    }
    const shown = strings(body.blocks).join("\n");
    for (const expected of [
      "claude",
      NOTICE.requester.id,
      "ci-default / no-private-keys",
      NOTICE.message,
      NOTICE.id,
      "2026-03-01T12:10:00.000Z",
      `gatehouse approvals approve ${NOTICE.id} --reason "…" --url https://gatehouse.example`,
      `gatehouse approvals deny ${NOTICE.id} --reason "…" --url https://gatehouse.example`,
    ]) {
      assert.ok(shown.includes(expected), `the message shows ${expected}:\n${shown}`);
    }
    const delivered = entries().find((e) => e.msg === "approval webhook delivered");
    assert.equal(delivered?.webhook, r.origin, "the log names the webhook by its origin");
    assert.equal(delivered?.status, 200);
  });

  test("Teams gets a message with one Adaptive Card attachment", async () => {
    const r = await receiver(status(202));
    await webhooks([{ url: r.teamsUrl, format: "teams" }]).notify(NOTICE);

    assert.equal(r.received.length, 1);
    assert.equal(r.received[0]?.path, `${TEAMS_PATH}${TEAMS_QUERY}`);
    const body = r.json(0) as {
      type: string;
      attachments: Array<{ contentType: string; content: Record<string, unknown> }>;
    };
    assert.equal(body.type, "message");
    assert.equal(body.attachments.length, 1);
    const [attachment] = body.attachments;
    assert.equal(attachment?.contentType, "application/vnd.microsoft.card.adaptive");
    const card = attachment?.content as { $schema: string; type: string; version: string; body: unknown[] };
    assert.equal(card.type, "AdaptiveCard");
    assert.equal(card.$schema, "http://adaptivecards.io/schemas/adaptive-card.json");
    // Teams Workflows refuse cards newer than 1.4.
    assert.equal(card.version, "1.4");
    const types = (card.body as Array<{ type: string }>).map((b) => b.type);
    assert.ok(
      types.every((t) => t === "TextBlock" || t === "FactSet"),
      types.join(),
    );
    const facts = (
      card.body as Array<{ type: string; facts?: Array<{ title: string; value: string }> }>
    ).find((b) => b.type === "FactSet")?.facts;
    assert.deepEqual(
      facts?.map((f) => f.title),
      ["Connection", "Requester", "Policy / rule", "Held", "Approval", "Expires"],
    );
    const shown = strings(card.body).join("\n");
    assert.ok(shown.includes(`gatehouse approvals approve ${NOTICE.id} --reason "…"`), shown);
    assert.ok(shown.includes("2026-03-01T12:10:00.000Z"));
    assert.ok(!shown.includes("--url"), "without controlPlaneUrl, the CLI's own default applies");
  });

  test("held content never reaches the chat, even if a caller passes it along", async () => {
    const r = await receiver(status(200));
    const withPreview = { ...NOTICE, preview: "-----BEGIN RSA PRIVATE KEY----- MIIEowIBAAKCAQEA" };
    await webhooks([
      { url: r.slackUrl, format: "slack" },
      { url: r.teamsUrl, format: "teams" },
    ]).notify(withPreview);
    assert.equal(r.received.length, 2);
    for (const req of r.received) assert.ok(!req.body.includes("PRIVATE KEY-----"), req.body);
  });

  test("text from requesters and rules cannot mention, link or format in Slack or Teams", async () => {
    const r = await receiver(status(200));
    const hostile: ApprovalNotice = {
      ...NOTICE,
      requester: { kind: "api-key", id: "<!channel> & <@U024BE7LH|boss>" },
      message: "see <https://evil.example|the fix> and [this](https://evil.example) *now*",
    };
    await webhooks([
      { url: r.slackUrl, format: "slack" },
      { url: r.teamsUrl, format: "teams" },
    ]).notify(hostile);

    const slack = strings(r.json(0)).join("\n");
    assert.ok(!slack.includes("<!channel>"), slack);
    assert.ok(!slack.includes("<@U024BE7LH"), slack);
    assert.ok(!slack.includes("<https://evil.example"), slack);
    assert.ok(slack.includes("&lt;!channel&gt; &amp; &lt;@U024BE7LH|boss&gt;"), slack);
    assert.ok(slack.includes("see &lt;https://evil.example|the fix&gt;"), slack);
    assert.ok(!/&(?!amp;|lt;|gt;)/.test(slack), "every & is an escape Slack knows");

    const teams = strings(r.json(1)).join("\n");
    assert.ok(!teams.includes("[this](https://evil.example)"), teams);
    assert.ok(teams.includes("\\[this\\]\\(https://evil.example\\) \\*now\\*"), teams);
  });

  test("an id that is not a plain word is shell-quoted in the commands to paste", async () => {
    const r = await receiver(status(200));
    await webhooks([{ url: r.slackUrl, format: "slack" }]).notify({ ...NOTICE, id: "x'; touch pwned; '" });
    const shown = strings(r.json(0)).join("\n");
    assert.ok(shown.includes(`gatehouse approvals approve 'x'\\''; touch pwned; '\\''' --reason`), shown);
  });

  test("a 500 is retried, and the second attempt's success is logged", async () => {
    const r = await receiver(status(500), status(200));
    await webhooks([{ url: r.slackUrl, format: "slack" }]).notify(NOTICE);
    assert.equal(r.received.length, 2);
    assert.equal(r.received[1]?.body, r.received[0]?.body, "the same message is sent again");
    const delivered = entries().find((e) => e.msg === "approval webhook delivered");
    assert.equal(delivered?.attempt, 2);
    assert.equal(delivered?.status, 200);
    assert.equal(entries().filter((e) => e.level === 40).length, 0, "a delivered message warns of nothing");
  });

  test("a 429 is retried after the Retry-After it gives", async () => {
    const r = await receiver(status(429, { "retry-after": "0" }), status(200));
    await webhooks([{ url: r.slackUrl, format: "slack" }]).notify(NOTICE);
    assert.equal(r.received.length, 2);
  });

  test("a 400 is not retried, and a warning names the origin and the status", async () => {
    const r = await receiver(status(400), status(200));
    await webhooks([{ url: r.slackUrl, format: "slack" }]).notify(NOTICE);
    assert.equal(r.received.length, 1, "the same message would be refused again");
    const warning = entries().find((e) => e.level === 40);
    assert.equal(warning?.webhook, r.origin);
    assert.equal(warning?.status, 400);
    assert.match(warning?.msg ?? "", /refused the message/);
  });

  // Regression: a delivery retrying against a webhook that never answers held a stopping
  // control plane's process open for up to three timeouts.
  test("stop gives up on deliveries under way: notify resolves, with a warning saying why", async () => {
    let arrived = () => {};
    const posted = new Promise<void>((resolve) => {
      arrived = resolve;
    });
    // Takes the request and never answers it.
    const r = await receiver(() => arrived());
    const hooks = webhooks([{ url: r.slackUrl, format: "slack" }], { timeoutMs: 600_000, attempts: 3 });
    const delivered = hooks.notify(NOTICE);
    await posted;
    hooks.stop();
    await delivered;
    const warning = entries().find((e) => e.level === 40);
    assert.match(String(warning?.msg), /the control plane stopped first/);
  });

  test("every attempt times out: notify still resolves after the attempts, with a warning", async () => {
    const r = await receiver(never());
    await webhooks([{ url: r.slackUrl, format: "slack" }], { timeoutMs: 100, attempts: 2 }).notify(NOTICE);
    assert.equal(r.received.length, 2);
    const warning = entries().find((e) => e.level === 40);
    assert.equal(warning?.reason, "no answer within 100 ms");
    assert.equal(warning?.attempts, 2);
    assert.equal(warning?.status, null);
  });

  test("a receiver that is down is tried three times; the other webhooks are still told", async () => {
    const down = await receiver();
    const downUrl = down.slackUrl;
    await down.close();
    const up = await receiver(status(200));
    await webhooks([
      { url: downUrl, format: "slack" },
      { url: up.teamsUrl, format: "teams" },
    ]).notify(NOTICE);
    assert.equal(up.received.length, 1);
    const failed = entries().filter((e) => e.msg === "approval webhook attempt failed");
    assert.equal(failed.length, 3, "the default is three attempts");
    const warning = entries().find((e) => e.level === 40);
    assert.equal(warning?.webhook, new URL(downUrl).origin);
    assert.match(String(warning?.reason), /ECONNREFUSED/);
  });

  test("an error that quotes the URL is logged with the URL cut to its origin", async () => {
    const url = `https://hooks.example${SLACK_PATH}`;
    const failing = (async (input: string | URL | Request) => {
      throw new TypeError(`Failed to parse URL from ${String(input)}`);
    }) as typeof fetch;
    await webhooks([{ url, format: "slack" }], { fetch: failing, attempts: 1 }).notify(NOTICE);
    const warning = entries().find((e) => e.level === 40);
    assert.equal(warning?.reason, "Failed to parse URL from https://hooks.example");
  });

  test("a URL that is not http(s) is refused at start-up without being quoted", () => {
    assert.throws(
      () => webhooks([{ url: `ftp://hooks.example${SLACK_PATH}`, format: "slack" }]),
      (error: unknown) =>
        isGatehouseError(error) &&
        error.code === "GATE_CONFIG_INVALID" &&
        /approvals\.webhooks\[0\]\.url/.test(error.message) &&
        !error.message.includes("SECRET"),
    );
  });
});
