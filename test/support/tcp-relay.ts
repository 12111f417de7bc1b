/**
 * A TCP relay between an agent and the control plane that a test can cut and
 * restore: a network partition, with both processes still running. While cut,
 * it resets the connections it holds and every new one, so the dialler sees the
 * peer vanish the way it would behind a failed link.
 */
import { EventEmitter, once } from "node:events";
import { connect, createServer, type Server, type Socket } from "node:net";

export class TcpRelay {
  private readonly sockets = new Set<Socket>();
  private isCut = false;
  private readonly accepted = new EventEmitter<{ connection: [] }>();
  /** Connections accepted so far, relayed or reset. */
  connections = 0;

  private constructor(
    private readonly server: Server,
    /** Where connections go, e.g. the control plane's gRPC address (host:port). */
    private readonly target: () => string,
  ) {
    server.on("connection", (client) => {
      this.connections += 1;
      this.relay(client);
      this.accepted.emit("connection");
    });
  }

  /** Resolves once `count` connections have been accepted in all. */
  whenConnections(count: number): Promise<void> {
    if (this.connections >= count) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.connections < count) return;
        this.accepted.off("connection", check);
        resolve();
      };
      this.accepted.on("connection", check);
    });
  }

  /** Listens on a free loopback port and relays each connection to `target()`, looked up per connection. */
  static async start(target: () => string): Promise<TcpRelay> {
    const server = createServer();
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return new TcpRelay(server, target);
  }

  /** host:port to dial instead of the target. */
  get address(): string {
    const { port } = this.server.address() as { port: number };
    return `127.0.0.1:${port}`;
  }

  /** Resets every relayed connection, and every new one until {@link restore}. */
  cut(): void {
    this.isCut = true;
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
  }

  restore(): void {
    this.isCut = false;
  }

  async close(): Promise<void> {
    this.cut();
    const closed = once(this.server, "close");
    this.server.close();
    await closed;
  }

  private relay(client: Socket): void {
    if (this.isCut) {
      client.resetAndDestroy();
      return;
    }
    const target = this.target();
    const at = target.lastIndexOf(":");
    const upstream = connect(Number(target.slice(at + 1)), target.slice(0, at));
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      this.sockets.add(from);
      from.pipe(to);
      // Either side failing ends both, as a broken path would.
      from.on("error", () => to.destroy());
      from.on("close", () => {
        this.sockets.delete(from);
        to.destroy();
      });
    }
  }
}
