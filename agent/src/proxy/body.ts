/** Reading a client's request body, bounded. */
import type { IncomingMessage } from "node:http";
import { GatehouseError } from "@gatehouse/proto/errors";

/**
 * Reads the whole body, refusing more than `limit` bytes: at once when the
 * declared Content-Length is larger, or as soon as the received bytes pass it.
 */
export async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () =>
    new GatehouseError(
      "GATE_BODY_TOO_LARGE",
      `request body exceeds this agent's limit of ${limit} bytes (proxy.maxRequestBytes)`,
    );
  const declared = Number(req.headers["content-length"] ?? Number.NaN);
  if (declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk);
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
}
