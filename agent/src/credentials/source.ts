/**
 * Where the agent gets the real credential of a connection. The value is held
 * only in memory here and in the upstream request; it never goes into a record,
 * a log line or an error message.
 */
import type { Connection__Output, CredentialRef__Output } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";

export interface CredentialSource {
  /** The credential for `connection`, or GATE_CREDENTIAL_UNAVAILABLE saying what to fix. */
  get(connection: string, ref: CredentialRef__Output): Promise<string>;
}

/** Credentials from the agent's environment variables (development and simple setups). */
export class EnvCredentialSource implements CredentialSource {
  constructor(private readonly env: Readonly<Record<string, string | undefined>>) {}

  async get(connection: string, ref: CredentialRef__Output): Promise<string> {
    const name = ref.env;
    const value = name ? this.env[name] : undefined;
    if (!value) {
      throw new GatehouseError(
        "GATE_CREDENTIAL_UNAVAILABLE",
        `the credential for connection '${connection}' is unavailable: environment variable ${name || "(none named)"} is not set on the agent`,
      );
    }
    return value;
  }
}

/**
 * Each credential from where it is: `{env}` from the agent's environment, `{vault}` from
 * Vault, when the agent has a `vault` configuration.
 */
export class CredentialSources implements CredentialSource {
  constructor(private readonly sources: { env: CredentialSource; vault: CredentialSource | null }) {}

  async get(connection: string, ref: CredentialRef__Output): Promise<string> {
    if (!ref.vault) return this.sources.env.get(connection, ref);
    if (this.sources.vault) return this.sources.vault.get(connection, ref);
    throw new GatehouseError(
      "GATE_CREDENTIAL_UNAVAILABLE",
      `the credential for connection '${connection}' is unavailable: it is in Vault (${ref.vault.path}), but this agent has no \`vault\` configuration; add a vault block (address, auth) to the agent's config`,
    );
  }
}

/** The upstream request headers that carry a credential under `ref.scheme`. */
function credentialHeaders(ref: CredentialRef__Output, credential: string): Record<string, string> {
  switch (ref.scheme) {
    case "bearer":
      return { authorization: `Bearer ${credential}` };
    case "basic":
      return { authorization: `Basic ${Buffer.from(`${ref.username}:${credential}`).toString("base64")}` };
    default:
      return { "x-api-key": credential };
  }
}

/** Resolves a connection's credential into the headers that carry it upstream. */
export class Credentials {
  constructor(private readonly source: CredentialSource) {}

  async headersFor(connection: Connection__Output): Promise<Record<string, string>> {
    const ref = connection.credential;
    if (!ref) {
      throw new GatehouseError(
        "GATE_CREDENTIAL_UNAVAILABLE",
        `connection '${connection.name}' has no credential configured on the control plane`,
      );
    }
    return credentialHeaders(ref, await this.source.get(connection.name, ref));
  }
}
