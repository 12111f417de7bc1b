/**
 * The agent's HTTP listener. Clients reach a connection at `/c/<connection>/…`;
 * `/healthz`, `/readyz` and `/metrics` serve operators.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Connection__Output } from "@gatehouse/proto";
import { asGatehouseError, GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import type { ApprovalDesk } from "../approvals/desk.js";
import type { ProxyConfig } from "../config.js";
import type { Credentials } from "../credentials/source.js";
import type { Masker } from "../masking/masker.js";
import type { AgentMetrics } from "../metrics.js";
import type { PolicySet } from "../policy/policy.js";
import type { TokenVerifier } from "../tokens/verifier.js";
import { anthropicErrors, handleAnthropic } from "./anthropic/handler.js";
import { refuse } from "./forward.js";
import type { EventSink, ExchangeListener } from "./recorder.js";
import type { UpstreamPool } from "./upstream.js";

/** What every protocol handler needs. */
export interface ProxyContext {
  verifier: TokenVerifier;
  credentials: Credentials;
  spool: EventSink;
  onExchangeFinished: ExchangeListener;
  upstreams: UpstreamPool;
  limits: ProxyConfig;
  logger: Logger;
  /** The masker for responses: built-in detectors and the patterns of the last configuration pushed. */
  masker: () => Masker;
  /**
   * The policies of the last configuration pushed; an error (GATE_CONFIG_INVALID) when this agent
   * could not compile them, so that exchanges are refused rather than served unjudged.
   */
  policies: () => PolicySet | GatehouseError;
  /** Where held requests and tool calls ask for approval. */
  approvals: ApprovalDesk;
}

export interface ProxyServerOptions extends ProxyContext {
  /** The connections pushed by the control plane; null until the first configuration arrives. */
  connections: () => ReadonlyMap<string, Connection__Output> | null;
  /** Why the agent is not ready, or null when it is. */
  notReadyReason: () => string | null;
  metrics: AgentMetrics;
  registry: Registry;
}

const CONNECTION_PATH = /^\/c\/([^/?#]+)(.*)$/;

export function createProxyServer(options: ProxyServerOptions): Server {
  const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
    const stopTimer = options.metrics.requestDuration.startTimer();
    route(options, req, res)
      .catch((error: unknown) => {
        // Handlers end their own exchanges (see handleAnthropic); what arrives here failed
        // before one began. The URL is not logged: a token pasted into it would be.
        options.logger.error({ err: error, method: req.method }, "proxy request failed");
        refuse(res, null, anthropicErrors, asGatehouseError(error), "OUTCOME_FAILED");
      })
      .finally(() => {
        stopTimer({ status: String(res.statusCode) });
      });
  });
  // Long model generations stream for minutes; only idle sockets time out.
  server.requestTimeout = 0;
  return server;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

async function route(options: ProxyServerOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = req.url ?? "/";
  const match = CONNECTION_PATH.exec(url);
  if (!match) {
    if (url === "/healthz") return json(res, 200, { status: "ok" });
    if (url === "/readyz") {
      const reason = options.notReadyReason();
      return json(res, reason ? 503 : 200, reason ? { status: "not ready", reason } : { status: "ready" });
    }
    if (url === "/metrics") {
      const text = await options.registry.metrics();
      res.writeHead(200, { "content-type": options.registry.contentType });
      res.end(text);
      return;
    }
    if (req.method === "HEAD" && url === "/") return void res.writeHead(200).end();
    // The path is not repeated: a token pasted into a URL would come back in the message.
    const error = new GatehouseError(
      "GATE_NOT_FOUND",
      "no route at this path; clients use /c/<connection>/…",
    );
    return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
  }
  let name: string;
  try {
    name = decodeURIComponent(match[1] ?? "");
  } catch {
    // A malformed escape (`%zz`, a cut UTF-8 sequence) can name no connection.
    const error = new GatehouseError(
      "GATE_INVALID_REQUEST",
      "the connection name in the path is not valid percent-encoding; use the proxy URL the session gave you",
    );
    return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
  }
  const rest = match[2] ?? "";
  const path = rest.startsWith("/") ? rest : `/${rest}`;
  // Claude Code probes its base URL with HEAD before it starts.
  if (req.method === "HEAD" && (path === "/" || path.startsWith("/?"))) return void res.writeHead(200).end();

  const connections = options.connections();
  if (!connections) {
    const error = new GatehouseError(
      "GATE_NOT_READY",
      `agent not ready: ${options.notReadyReason() ?? "starting"}`,
    );
    return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
  }
  const connection = connections.get(name);
  if (!connection) {
    // Not authenticated yet: the agent's connection names are not the caller's to learn.
    const error = new GatehouseError(
      "GATE_CONNECTION_NOT_FOUND",
      `connection '${name}' not found on this agent; check the proxy URL the session gave you`,
    );
    return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
  }
  switch (connection.type) {
    case "anthropic":
      return handleAnthropic(options, connection, req, res, path);
    default: {
      const error = new GatehouseError(
        "GATE_CONNECTION_NOT_FOUND",
        `connection '${name}' has type '${connection.type}', which this agent does not serve`,
      );
      return refuse(res, null, anthropicErrors, error, "OUTCOME_REFUSED");
    }
  }
}
