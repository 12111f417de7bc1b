/** A chat service's incoming webhook for tests and benchmarks: keeps what the control plane posts. */
import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/** Keeps each posted JSON body and hands them out in order. */
export class WebhookReceiver {
  readonly bodies: unknown[] = [];
  private waiting: Array<(body: unknown) => void> = [];
  private readonly server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body: unknown = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      res.writeHead(200).end("ok");
      const next = this.waiting.shift();
      if (next) next(body);
      else this.bodies.push(body);
    });
  });

  async start(): Promise<string> {
    this.server.listen(0, "127.0.0.1");
    await once(this.server, "listening");
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/services/T000/B000/XXXX`;
  }

  next(): Promise<unknown> {
    const body = this.bodies.shift();
    if (body !== undefined) return Promise.resolve(body);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
