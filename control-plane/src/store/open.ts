/**
 * Opens the configured store. Each backend is loaded only when chosen, so a
 * control plane on the embedded store never loads the MongoDB driver.
 */
import { join } from "node:path";
import type { ControlPlaneConfig } from "../config.js";
import type { Store } from "./types.js";

export async function openStore(config: ControlPlaneConfig["store"], dataDir: string): Promise<Store> {
  if (config.type === "mongodb") {
    const { MongoStore } = await import("./mongo/store.js");
    return MongoStore.open({ uri: config.uri, database: config.database });
  }
  const { SqliteStore } = await import("./sqlite/store.js");
  return SqliteStore.open({ path: config.path ?? join(dataDir, "gatehouse.db") });
}
