/**
 * The policies agents evaluate: those of the config file, in their order, then
 * those set over REST (`PUT /v1/policies/{name}`), by name. The file's are
 * fixed for the life of the process; the REST ones live in the store, shared by
 * every replica, and each replica looks for changes made at the others once
 * per {@link POLICY_POLL_MS}. Every change is audited and announced with the
 * `changed` event, on which the control plane pushes the new set to its agents.
 */
import { EventEmitter } from "node:events";
import { GatehouseError } from "@gatehouse/proto/errors";
import type { Logger } from "pino";
import type { AuditLog } from "../audit/log.js";
import { Poll } from "../poll.js";
import type { Store, StoredPolicyRecord } from "../store/types.js";
import { type PolicyBody, type PolicyConfig, policyBody } from "./schema.js";

/** How often the store is read for policies set or removed at another replica. */
export const POLICY_POLL_MS = 1000;

/** A policy as `GET /v1/policies` shows it. */
export interface PolicyView extends PolicyConfig {
  source: "config" | "api";
  updatedAt?: number;
  updatedBy?: string;
}

export interface PoliciesDeps {
  /** The config file's `policies`, already validated. */
  fromConfig: readonly PolicyConfig[];
  /** Names of the configured connections, which a policy's `connections` must be among. */
  connections: readonly string[];
  store: Pick<Store, "listPolicies" | "putPolicy" | "deletePolicy">;
  audit: AuditLog;
  now: () => number;
  logger: Logger;
  pollMs?: number;
}

export class Policies extends EventEmitter<{ changed: [] }> {
  private stored: StoredPolicyRecord[] = [];
  /** The stored set as last seen, to tell a change from a poll that found none. */
  private seen = "[]";
  private readonly poll: Poll;

  constructor(private readonly deps: PoliciesDeps) {
    super();
    this.poll = new Poll({
      everyMs: deps.pollMs ?? POLICY_POLL_MS,
      run: () => this.refresh(),
      logger: deps.logger,
      failing: "cannot read policies from the store; agents keep the policies they have until it is back",
      recovered: "reading policies from the store again",
    });
  }

  /** Reads the stored policies (failing when the store cannot be read), then polls for changes. */
  async start(): Promise<void> {
    this.adopt(await this.deps.store.listPolicies());
    this.poll.start();
  }

  stop(): Promise<void> {
    return this.poll.stop();
  }

  /** What agents evaluate, in order. */
  effective(): PolicyConfig[] {
    return [...this.deps.fromConfig, ...this.stored.map(toConfig)];
  }

  list(): PolicyView[] {
    return [
      ...this.deps.fromConfig.map((p): PolicyView => ({ ...p, source: "config" })),
      ...this.stored.map(
        (p): PolicyView => ({
          ...toConfig(p),
          source: "api",
          updatedAt: p.updatedAt,
          updatedBy: p.updatedBy,
        }),
      ),
    ];
  }

  /**
   * Creates or replaces a policy. `body` is checked here (fields named in the
   * error), as are its connections; a name the config file defines is refused.
   */
  async put(actor: string, name: string, input: unknown): Promise<PolicyView> {
    this.notFromConfig(name);
    const parsed = policyBody.safeParse(input ?? {});
    if (!parsed.success) {
      const problems = parsed.error.issues.map((i) => `${fieldPath(i.path)}: ${i.message}`).join("; ");
      throw new GatehouseError("GATE_INVALID_REQUEST", `invalid policy '${name}': ${problems}`);
    }
    const body: PolicyBody = parsed.data;
    body.connections?.forEach((connection, i) => {
      if (this.deps.connections.includes(connection)) return;
      throw new GatehouseError(
        "GATE_INVALID_REQUEST",
        `invalid policy '${name}': connections[${i}]: no connection is named '${connection}'; known: ${this.deps.connections.join(", ")}`,
      );
    });
    const record: StoredPolicyRecord = { name, body, updatedAt: this.deps.now(), updatedBy: actor };
    // The whole policy: what it said at any time can be read back from the audit log.
    await this.deps.audit.record(actor, "policy.set", name, { policy: body });
    await this.deps.store.putPolicy(record);
    await this.refresh();
    return { ...toConfig(record), source: "api", updatedAt: record.updatedAt, updatedBy: actor };
  }

  async delete(actor: string, name: string): Promise<void> {
    this.notFromConfig(name);
    if (!this.stored.some((p) => p.name === name)) await this.refresh();
    if (!this.stored.some((p) => p.name === name)) {
      throw new GatehouseError(
        "GATE_NOT_FOUND",
        `no policy named '${name}' was set over REST; GET /v1/policies lists them`,
      );
    }
    await this.deps.audit.record(actor, "policy.delete", name);
    await this.deps.store.deletePolicy(name);
    await this.refresh();
  }

  private notFromConfig(name: string): void {
    if (this.deps.fromConfig.some((p) => p.name === name)) {
      throw new GatehouseError(
        "GATE_CONFLICT",
        `policy '${name}' is defined in the control plane's config file; change it there, or choose another name`,
      );
    }
  }

  /** Reads the stored policies now; announces a change. */
  private async refresh(): Promise<void> {
    this.adopt(await this.deps.store.listPolicies());
  }

  private adopt(stored: StoredPolicyRecord[]): void {
    const seen = JSON.stringify(stored);
    if (seen === this.seen) return;
    this.stored = stored;
    this.seen = seen;
    this.emit("changed");
  }
}

function toConfig(record: StoredPolicyRecord): PolicyConfig {
  return { ...(record.body as PolicyBody), name: record.name };
}

/** A zod issue path as people write it: `rules[0].match.text`. */
export function fieldPath(path: ReadonlyArray<PropertyKey>): string {
  let out = "";
  for (const key of path) out += typeof key === "number" ? `[${key}]` : `${out ? "." : ""}${String(key)}`;
  return out || "(body)";
}
