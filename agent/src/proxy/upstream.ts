/**
 * Requests to upstreams over Node's own HTTP client, with a keep-alive pool per
 * scheme. The agent uses it rather than undici: it needs no second HTTP parser
 * in the process (undici's is WebAssembly, some 20 MB per process, measured in
 * bench/) and lets go of each request body once it is sent.
 */
import {
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { GatehouseError } from "@gatehouse/proto/errors";

export interface UpstreamRequest {
  url: URL;
  method: string;
  headers: Record<string, string | string[]>;
  body: Buffer;
  /** Aborting it destroys the request and its response. */
  signal: AbortSignal;
  /** How long upstream may stay silent: before its response head, or between body chunks. */
  idleTimeoutMs: number;
}

export interface UpstreamResponse {
  statusCode: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
}

export class UpstreamPool {
  private readonly http = new HttpAgent({ keepAlive: true, scheduling: "lifo" });
  private readonly https = new HttpsAgent({ keepAlive: true, scheduling: "lifo" });

  /** Sends the request; resolves with the response head, the body still to be read. */
  request(up: UpstreamRequest): Promise<UpstreamResponse> {
    const secure = up.url.protocol === "https:";
    const headers =
      up.body.length > 0 ? { ...up.headers, "content-length": String(up.body.length) } : up.headers;
    return new Promise((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(up.url, {
        method: up.method,
        headers,
        agent: secure ? this.https : this.http,
        signal: up.signal,
      });
      req.setTimeout(up.idleTimeoutMs, () => {
        req.destroy(
          new GatehouseError(
            "GATE_UPSTREAM_TIMEOUT",
            `upstream ${up.url.origin} sent nothing for ${up.idleTimeoutMs / 1000} s (proxy.upstreamIdleTimeoutSeconds)`,
          ),
        );
      });
      req.once("response", (res: IncomingMessage) => {
        resolve({ statusCode: res.statusCode ?? 502, headers: res.headers, body: res });
      });
      req.once("error", reject);
      req.end(up.body.length > 0 ? up.body : undefined);
    });
  }

  /** Closes idle and active upstream connections. */
  close(): void {
    this.http.destroy();
    this.https.destroy();
  }
}
