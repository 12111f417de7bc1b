/**
 * The control plane's data directory holds the embedded store and, unless
 * `signing.keyFile` says otherwise, the signing key: it is the control-plane
 * user's alone.
 */
import { chmod } from "node:fs/promises";
import type { Logger } from "pino";

/**
 * Narrows the data directory to its owner (0700), also when it was made earlier
 * with a looser mode. One that does not exist holds nothing and is left alone; one
 * the process may not change (a mounted volume owned by another user) is logged
 * rather than fatal, since the files written in it are 0600 regardless.
 */
export async function privateDataDir(dir: string, logger: Logger): Promise<void> {
  try {
    await chmod(dir, 0o700);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return;
    logger.warn(
      { dir, code },
      "could not make the data directory private (0700); make it the control plane user's alone",
    );
  }
}
