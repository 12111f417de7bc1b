import { once } from "node:events";
import { createServer } from "node:net";

/**
 * A loopback port nothing listens on right now: bound and released at once.
 * Another process may take it in between; callers that listen on it must
 * handle that, and callers that want a port where nothing answers get one.
 */
export async function unusedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  server.close();
  await once(server, "close");
  return port;
}
