/**
 * The CI job's own identity: the OIDC ID token its CI platform issues to it, which
 * the control plane trades for a short-lived session (`POST /v1/sessions` with the ID
 * token as the Bearer), so a runner holds no Gatehouse key. Nothing here reads
 * `process.env`: callers pass the job's environment in.
 */
import { readFile } from "node:fs/promises";
import { GatehouseApiError } from "./client.js";

/** A job's environment variables, as `process.env` holds them. */
export type JobEnvironment = Readonly<Record<string, string | undefined>>;

/** The code of every {@link CiTokenError}. */
export const CI_TOKEN_UNAVAILABLE = "GATE_CI_TOKEN_UNAVAILABLE";

/**
 * The job's ID token could not be obtained; the message says what to fix. Status 0,
 * as no Gatehouse answer was involved. Messages never hold a token, nor the query of
 * a token endpoint's URL.
 */
export class CiTokenError extends GatehouseApiError {
  override readonly name = "CiTokenError";
  constructor(message: string, options?: ErrorOptions) {
    super(0, CI_TOKEN_UNAVAILABLE, message, options);
  }
}

/** The CI platforms whose jobs can ask for an ID token, and `auto` can tell apart. */
export type CiPlatform = "github" | "azure" | "gitlab";

/** Where the job's ID token comes from; `auto` picks the platform the job runs on. */
export type CiTokenSource =
  | { kind: CiPlatform }
  | { kind: "auto" }
  | { kind: "env"; name: string }
  | { kind: "file"; path: string };

/** The token sources as `gatehouse exec --oidc` takes them. */
export const CI_TOKEN_SOURCES = "github | azure | gitlab | env:NAME | file:PATH | auto";

/** The audience asked for when none is given and GATEHOUSE_AUDIENCE is unset. */
export const DEFAULT_AUDIENCE = "gatehouse";

/** The variable a GitLab job's `id_tokens` puts the token in, unless told otherwise. */
export const DEFAULT_GITLAB_TOKEN_VARIABLE = "GATEHOUSE_ID_TOKEN";

export interface CiTokenOptions {
  /** The job's environment: the CI platform's variables, and GATEHOUSE_AUDIENCE and the like. */
  env: JobEnvironment;
  /**
   * The `aud` to ask for: the one the control plane expects. Default: GATEHOUSE_AUDIENCE,
   * else {@link DEFAULT_AUDIENCE}. Only GitHub Actions takes it per request: Azure Pipelines
   * fixes the audience (`api://AzureADTokenExchange`), and a GitLab job declares it in
   * its `id_tokens`.
   */
  audience?: string | undefined;
  /**
   * Azure Pipelines: the id of the service connection (workload identity federation)
   * the token is issued for. Default: GATEHOUSE_AZURE_SERVICE_CONNECTION_ID.
   */
  azureServiceConnectionId?: string | undefined;
  /** GitLab: the variable the job's `id_tokens` names. Default: {@link DEFAULT_GITLAB_TOKEN_VARIABLE}. */
  gitlabTokenVariable?: string | undefined;
  fetch?: typeof fetch;
  /** Ends a request to a token endpoint; by default one gets 30 seconds. */
  signal?: AbortSignal;
}

const REQUEST_TIMEOUT_MS = 30_000;

/** A compact JWS: three base64url parts. A token of another shape is a setup mistake, caught here. */
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** Runs of characters a token is made of, long enough to be one; cut from anything an endpoint says. */
const TOKEN_LIKE = /[A-Za-z0-9+/_=.-]{40,}/g;

/**
 * Reads a token source as `gatehouse exec --oidc` takes it.
 * @throws CiTokenError naming the sources there are.
 */
export function parseCiTokenSource(spec: string): CiTokenSource {
  if (spec === "github" || spec === "azure" || spec === "gitlab" || spec === "auto") return { kind: spec };
  const name = spec.startsWith("env:") ? spec.slice("env:".length) : null;
  if (name !== null && /^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return { kind: "env", name };
  const path = spec.startsWith("file:") ? spec.slice("file:".length) : "";
  if (path.length > 0) return { kind: "file", path };
  // A token pasted where its source belongs is not echoed back.
  const shown = JWT.test(spec.trim()) ? "(a token; name where the token is, not the token)" : `'${spec}'`;
  throw new CiTokenError(`unknown OIDC token source ${shown}; use one of ${CI_TOKEN_SOURCES}`);
}

/**
 * The CI platform this job runs on, from the variables each sets in every job.
 * @throws CiTokenError when it is none of them.
 * @see https://docs.github.com/en/actions/learn-github-actions/variables#default-environment-variables (GITHUB_ACTIONS)
 * @see https://learn.microsoft.com/azure/devops/pipelines/build/variables (TF_BUILD)
 * @see https://docs.gitlab.com/ci/variables/predefined_variables/ (GITLAB_CI)
 */
export function detectCiPlatform(env: JobEnvironment): CiPlatform {
  if (env.GITHUB_ACTIONS === "true") return "github";
  if (env.TF_BUILD?.toLowerCase() === "true") return "azure";
  if (env.GITLAB_CI === "true") return "gitlab";
  throw new CiTokenError(
    `cannot tell which CI platform this job runs on (none of GITHUB_ACTIONS=true, TF_BUILD=True, GITLAB_CI=true is set); name the token source: ${CI_TOKEN_SOURCES.replace(" | auto", "")}`,
  );
}

/** `source` with `auto` replaced by the platform the job runs on. */
function resolve(source: CiTokenSource, env: JobEnvironment): Exclude<CiTokenSource, { kind: "auto" }> {
  return source.kind === "auto" ? { kind: detectCiPlatform(env) } : source;
}

/**
 * The job's OIDC ID token, from `source` (a {@link CiTokenSource} or its text, e.g.
 * `"github"`, `"env:NAME"`). Send it as the Bearer of `POST /v1/sessions`; never log it.
 * @throws CiTokenError saying what to fix in the job.
 */
export async function ciIdToken(source: CiTokenSource | string, options: CiTokenOptions): Promise<string> {
  const from = resolve(typeof source === "string" ? parseCiTokenSource(source) : source, options.env);
  switch (from.kind) {
    case "github":
      return githubActionsIdToken(options);
    case "azure":
      return azurePipelinesIdToken(options);
    case "gitlab":
      return gitlabIdToken(options);
    case "env":
      return envIdToken(from.name, options.env);
    case "file":
      return fileIdToken(from.path);
  }
}

/**
 * The variables through which `source` yields the job's identity: the token itself,
 * or the credential that asks for one. A tool run through a session must not see them
 * (pass them to `runWithSession` as `withhold`), or it could open sessions as the job.
 * A `file:` source has none; the file stays readable to anything the job runs.
 */
export function ciTokenVariables(
  source: CiTokenSource,
  options: Pick<CiTokenOptions, "env" | "gitlabTokenVariable">,
): string[] {
  const from = resolve(source, options.env);
  switch (from.kind) {
    case "github":
      return ["ACTIONS_ID_TOKEN_REQUEST_TOKEN"];
    case "azure":
      return ["SYSTEM_ACCESSTOKEN"];
    case "gitlab":
      return [options.gitlabTokenVariable ?? DEFAULT_GITLAB_TOKEN_VARIABLE];
    case "env":
      return [from.name];
    case "file":
      return [];
  }
}

/**
 * GitHub Actions: asks the job's token endpoint for an ID token for the audience.
 * GitHub gives a job ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN
 * only when it has `permissions: id-token: write`; `GET <URL>&audience=<aud>` with the
 * request token as the Bearer answers `{"value": "<jwt>"}`.
 * @see https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
 * @see https://github.com/actions/toolkit/blob/main/packages/core/src/oidc-utils.ts (the request `core.getIDToken` makes)
 */
export async function githubActionsIdToken(options: CiTokenOptions): Promise<string> {
  const { env } = options;
  const requestUrl = env.ACTIONS_ID_TOKEN_REQUEST_URL;
  const requestToken = env.ACTIONS_ID_TOKEN_REQUEST_TOKEN;
  if (!requestUrl || !requestToken) {
    throw new CiTokenError(
      "GitHub Actions gave this job no way to ask for an OIDC token (ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set): add `permissions: id-token: write` to the job (or the workflow)",
    );
  }
  const audience = options.audience ?? env.GATEHOUSE_AUDIENCE ?? DEFAULT_AUDIENCE;
  return requestIdToken(
    {
      platform: "GitHub Actions",
      variable: "ACTIONS_ID_TOKEN_REQUEST_URL",
      url: requestUrl,
      query: { audience },
      method: "GET",
      bearer: requestToken,
      field: "value",
      fix: "check that the job has `permissions: id-token: write` and asks while it runs",
    },
    options,
  );
}

/**
 * The Azure DevOps REST API version of the request. The REST reference documents
 * `7.1-preview.1`; Azure's own SDKs (azure-identity for JS, Python and .NET) send `7.1`.
 */
const AZURE_OIDC_API_VERSION = "7.1";

/**
 * Azure Pipelines (workload identity federation): asks the job's OIDC endpoint for an
 * ID token for a service connection. Azure Pipelines sets SYSTEM_OIDCREQUESTURI (the
 * job's `…/hubs/{hub}/plans/{plan}/jobs/{job}/oidctoken` URL) in every step, but gives
 * System.AccessToken to a YAML step only when the step maps it:
 * `env: { SYSTEM_ACCESSTOKEN: $(System.AccessToken) }`. The request is
 * `POST <SYSTEM_OIDCREQUESTURI>?api-version=7.1&serviceConnectionId=<id>` with that
 * token as the Bearer; the answer is `{"oidcToken": "<jwt>"}`.
 *
 * The audience does not apply here: Azure fixes the `aud` of these tokens to
 * `api://AzureADTokenExchange` and the request has no parameter to change it, so the
 * control plane must accept that audience for this issuer
 * (`https://vstoken.dev.azure.com/<organization id>`).
 *
 * @see https://learn.microsoft.com/rest/api/azure/devops/distributedtask/oidctoken/create?view=azure-devops-rest-7.1
 * @see https://learn.microsoft.com/azure/devops/pipelines/build/variables#systemaccesstoken
 * @see https://github.com/Azure/azure-sdk-for-js/blob/main/sdk/identity/identity/src/credentials/azurePipelinesCredential.ts
 * @see https://github.com/sigstore/fulcio/issues/1803 (the claims of such a token)
 */
export async function azurePipelinesIdToken(options: CiTokenOptions): Promise<string> {
  const { env } = options;
  const requestUri = env.SYSTEM_OIDCREQUESTURI;
  const accessToken = env.SYSTEM_ACCESSTOKEN;
  const serviceConnectionId = options.azureServiceConnectionId ?? env.GATEHOUSE_AZURE_SERVICE_CONNECTION_ID;
  if (!requestUri) {
    throw new CiTokenError(
      "SYSTEM_OIDCREQUESTURI is not set: this does not run in an Azure Pipelines job, or its agent is too old to issue OIDC tokens",
    );
  }
  if (!accessToken) {
    throw new CiTokenError(
      "SYSTEM_ACCESSTOKEN is not set: Azure Pipelines gives it to a step only when mapped; add `env: { SYSTEM_ACCESSTOKEN: $(System.AccessToken) }` to the step",
    );
  }
  if (!serviceConnectionId) {
    throw new CiTokenError(
      "no Azure service connection: set GATEHOUSE_AZURE_SERVICE_CONNECTION_ID (or pass --azure-service-connection) to the id of the workload identity federation service connection the token is issued for",
    );
  }
  return requestIdToken(
    {
      platform: "Azure Pipelines",
      variable: "SYSTEM_OIDCREQUESTURI",
      url: requestUri,
      query: { "api-version": AZURE_OIDC_API_VERSION, serviceConnectionId },
      method: "POST",
      bearer: accessToken,
      field: "oidcToken",
      fix: "check that SYSTEM_ACCESSTOKEN is this job's $(System.AccessToken), that the service connection id is right, and that the pipeline may use that service connection",
    },
    options,
  );
}

/**
 * GitLab CI: the token GitLab put in the job's environment because the job declares
 * it, e.g. `id_tokens: { GATEHOUSE_ID_TOKEN: { aud: gatehouse } }`. The audience is the
 * job's `aud`, not an option here.
 * @see https://docs.gitlab.com/ci/secrets/id_token_authentication/
 * @see https://docs.gitlab.com/ci/yaml/#id_tokens
 */
export async function gitlabIdToken(options: CiTokenOptions): Promise<string> {
  const name = options.gitlabTokenVariable ?? DEFAULT_GITLAB_TOKEN_VARIABLE;
  const fix = `declare it in the job: \`id_tokens: { ${name}: { aud: <the control plane's audience> } }\``;
  return jwtIn(options.env[name], `${name} (the job's GitLab ID token)`, fix);
}

/** A token some earlier step or the platform put in the environment variable `name`. */
export async function envIdToken(name: string, env: JobEnvironment): Promise<string> {
  return jwtIn(env[name], name, `set ${name} to the job's OIDC ID token`);
}

/**
 * A token in a file, e.g. a Kubernetes projected service-account token, which the
 * kubelet rewrites before it expires: so it is read at each call, never cached.
 * @see https://kubernetes.io/docs/tasks/configure-pod-container/configure-service-account/#serviceaccount-token-volume-projection
 */
export async function fileIdToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new CiTokenError(`cannot read the OIDC token file ${path} (${(error as Error).message})`, {
      cause: error,
    });
  }
  return jwtIn(text, `the OIDC token file ${path}`, "check what writes it");
}

/** `raw` trimmed, when it is a JWT; `what` names where it came from, `fix` what to do otherwise. */
function jwtIn(raw: string | undefined, what: string, fix: string): string {
  const token = raw?.trim() ?? "";
  if (token.length === 0) throw new CiTokenError(`${what} is not set or empty; ${fix}`);
  if (!JWT.test(token)) {
    throw new CiTokenError(`${what} does not hold a JWT (three base64url parts joined by dots); ${fix}`);
  }
  return token;
}

/** One CI platform's token endpoint, and how to ask it. */
interface TokenEndpoint {
  platform: string;
  /** The variable `url` came from, named when it is not a URL. */
  variable: string;
  url: string;
  query: Record<string, string>;
  method: "GET" | "POST";
  bearer: string;
  /** The member of the JSON answer that holds the token. */
  field: string;
  /** What to check when the endpoint refuses. */
  fix: string;
}

/** Asks a CI platform's token endpoint for the job's ID token. */
async function requestIdToken(endpoint: TokenEndpoint, options: CiTokenOptions): Promise<string> {
  let base: URL;
  try {
    base = new URL(endpoint.url);
  } catch {
    throw new CiTokenError(
      `${endpoint.variable} is not a URL; it is set by ${endpoint.platform}, not by hand`,
    );
  }
  // Named in messages without its query, which may carry a secret.
  const where = `the ${endpoint.platform} token endpoint ${base.origin}${base.pathname}`;
  // Appended to the query as given, so whatever the platform put there reaches it unchanged.
  const query = new URLSearchParams(endpoint.query).toString();
  const url = `${endpoint.url}${endpoint.url.includes("?") ? "&" : "?"}${query}`;
  let status: number;
  let text: string;
  try {
    const res = await (options.fetch ?? fetch)(url, {
      method: endpoint.method,
      headers: {
        authorization: `Bearer ${endpoint.bearer}`,
        accept: "application/json",
        ...(endpoint.method === "POST" ? { "content-type": "application/json" } : {}),
      },
      signal: options.signal ?? AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    status = res.status;
    text = await res.text();
  } catch (error) {
    const reason = ((error as Error).cause as Error | undefined)?.message ?? (error as Error).message;
    throw new CiTokenError(`cannot reach ${where}: ${reason}`, { cause: error });
  }
  if (status < 200 || status > 299) {
    throw new CiTokenError(`${where} answered HTTP ${status}${reasonIn(text)}; ${endpoint.fix}`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new CiTokenError(`${where} answered HTTP ${status} with a body that is not JSON; ${endpoint.fix}`);
  }
  const token = (body as Record<string, unknown> | null)?.[endpoint.field];
  if (typeof token !== "string") {
    throw new CiTokenError(`${where} answered HTTP ${status} without a \`${endpoint.field}\` string`);
  }
  return jwtIn(token, `the \`${endpoint.field}\` ${where} answered`, endpoint.fix);
}

/** The reason an endpoint gave as JSON `message`, bounded and with anything token-like cut out. */
function reasonIn(text: string): string {
  let message: unknown;
  try {
    message = (JSON.parse(text) as { message?: unknown } | null)?.message;
  } catch {
    return "";
  }
  if (typeof message !== "string" || message.length === 0) return "";
  return ` (${message.replace(TOKEN_LIKE, "[redacted]").slice(0, 200)})`;
}
