/** Reading a client's request body, bounded. */
import type { IncomingMessage } from "node:http";
import { GatehouseError } from "@gatehouse/proto/errors";

/** The client went away before its exchange was over; recorded, never sent (nobody is there). */
export function clientGone(during: string): GatehouseError {
  return new GatehouseError(
    "GATE_CLIENT_GONE",
    `the client closed the connection ${during}; nothing more was sent upstream`,
  );
}

/**
 * Reads the whole body, refusing more than `limit` bytes: at once when the
 * declared Content-Length is larger, or as soon as the received bytes pass it.
 *
 * @param stopped aborted when the exchange must stop (the client left, the session was
 *   closed); a read that fails after it was aborted throws its reason.
 * @throws GatehouseError GATE_BODY_TOO_LARGE; GATE_CLIENT_GONE when the upload broke off;
 *   the reason of `stopped`.
 */
export async function readBody(req: IncomingMessage, limit: number, stopped: AbortSignal): Promise<Buffer> {
  const tooLarge = () =>
    new GatehouseError(
      "GATE_BODY_TOO_LARGE",
      `request body exceeds this agent's limit of ${limit} bytes (proxy.maxRequestBytes)`,
    );
  const declared = Number(req.headers["content-length"] ?? Number.NaN);
  if (declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (error) {
    if (error instanceof GatehouseError) throw error;
    // A request stream only fails when its connection broke ("aborted", ECONNRESET).
    if (stopped.aborted) throw stopped.reason;
    throw clientGone("during the upload");
  }
  return chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
}
