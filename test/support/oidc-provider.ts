/**
 * A real OpenID Connect issuer for tests: `oidc-provider` (a certified OpenID
 * Provider) in-process on 127.0.0.1, with one client and a few accounts. People
 * sign in through its development interactions (a login form that accepts any
 * password for a known login, then a consent form), as a browser would.
 *
 * @see https://github.com/panva/node-oidc-provider/blob/main/docs/README.md
 */
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { Configuration, default as Provider } from "oidc-provider";

/** A person the issuer knows; `id` is the login typed into the form and the `sub`. */
export interface OidcAccount {
  id: string;
  email?: string;
  preferredUsername?: string;
  /** Released in the `groups` claim of the ID token; a string stays a string. */
  groups?: string[] | string;
}

export interface OidcProviderOptions {
  clientId: string;
  /** Makes the client confidential (client_secret_basic); public (PKCE only) without. */
  clientSecret?: string;
  redirectUris: string[];
  accounts: OidcAccount[];
  /** Listen here instead of a free port: to start an issuer again where a client expects it. */
  port?: number;
}

export interface RunningOidcProvider {
  /** `http://127.0.0.1:<port>`, the `iss` of its tokens. */
  issuer: string;
  port: number;
  /** Every access, ID and refresh token it issued, to check they leak nowhere. */
  issuedTokens: string[];
  stop(): Promise<void>;
}

/**
 * oidc-provider prints notices to the console: the development-only adapter,
 * keys and interactions it is started with here, and on Node 20 that it
 * prefers a newer LTS. Tests show them only with GATEHOUSE_TEST_LOG set.
 */
function muteProviderNotices(): void {
  if (process.env.GATEHOUSE_TEST_LOG) return;
  for (const level of ["info", "warn"] as const) {
    const write = console[level].bind(console);
    console[level] = (...args: unknown[]) => {
      if (typeof args[0] === "string" && args[0].includes("oidc-provider ")) return;
      write(...args);
    };
  }
}

let providerClass: Promise<typeof Provider> | undefined;

/** Loaded on first use, after the notices are muted: its runtime notice is printed as it loads. */
function loadProvider(): Promise<typeof Provider> {
  providerClass ??= (async () => {
    muteProviderNotices();
    return (await import("oidc-provider")).default;
  })();
  return providerClass;
}

export async function startOidcProvider(options: OidcProviderOptions): Promise<RunningOidcProvider> {
  const ProviderClass = await loadProvider();
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const issuer = `http://127.0.0.1:${port}`;
  const accounts = new Map(options.accounts.map((account) => [account.id, account]));

  const configuration: Configuration = {
    clients: [
      {
        client_id: options.clientId,
        ...(options.clientSecret === undefined
          ? { token_endpoint_auth_method: "none" }
          : { client_secret: options.clientSecret, token_endpoint_auth_method: "client_secret_basic" }),
        redirect_uris: options.redirectUris,
        grant_types: ["authorization_code"],
        response_types: ["code"],
      },
    ],
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    // `groups` comes with the openid scope, as many issuers release it once configured to.
    claims: {
      openid: ["sub", "groups"],
      email: ["email", "email_verified"],
      profile: ["preferred_username"],
    },
    // Scope claims in the ID token too (by default they are only at the userinfo endpoint).
    conformIdTokenClaims: false,
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    findAccount: (_ctx, sub) => {
      const account = accounts.get(sub);
      if (account === undefined) return undefined;
      return {
        accountId: sub,
        claims: () => ({
          sub,
          ...(account.email === undefined ? {} : { email: account.email, email_verified: true }),
          ...(account.preferredUsername === undefined
            ? {}
            : { preferred_username: account.preferredUsername }),
          ...(account.groups === undefined ? {} : { groups: account.groups }),
        }),
      };
    },
  };
  const provider = new ProviderClass(issuer, configuration);
  const issuedTokens: string[] = [];
  provider.on("grant.success", (ctx: { body?: unknown }) => {
    const body = (ctx.body ?? {}) as Record<string, unknown>;
    for (const name of ["access_token", "id_token", "refresh_token"]) {
      const token = body[name];
      if (typeof token === "string") issuedTokens.push(token);
    }
  });
  server.on("request", provider.callback());

  return {
    issuer,
    port,
    issuedTokens,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
  };
}
