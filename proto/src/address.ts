/**
 * `host:port` addresses as Gatehouse's configs write them (listen addresses,
 * the control plane's address at an agent), with `[v6]:port` for IPv6.
 */

/** Matches `host:port` and `[v6]:port`; port 0 picks a free port when listening. */
export const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/;

/** The host (without brackets) and port of an address that matches {@link HOST_PORT}. */
export function splitHostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at).replace(/^\[|\]$/g, ""), port: Number(address.slice(at + 1)) };
}

/** `host:port` again, with brackets around an IPv6 host, as URLs and dialers take it. */
export function joinHostPort(host: string, port: number): string {
  return `${host.includes(":") ? `[${host}]` : host}:${port}`;
}

/**
 * Whether `url` is https, or plain http to this machine (127.0.0.1, localhost, [::1]): tokens,
 * keys and secrets sent over plain http elsewhere can be read and forged in transit.
 */
export function isHttpsOrLoopback(url: string): boolean {
  const { protocol, hostname } = new URL(url);
  return protocol === "https:" || ["127.0.0.1", "localhost", "[::1]"].includes(hostname);
}

/** The message for a URL {@link isHttpsOrLoopback} refuses. */
export const HTTPS_OR_LOOPBACK =
  "expected an https URL (plain http is allowed only for 127.0.0.1, localhost or [::1])";
