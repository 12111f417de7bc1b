/**
 * What checking identities costs, each beside its baseline in one run:
 * verifying session tokens at the agent (jose's EdDSA check and the claims,
 * and the verifier's cache) against a bare Ed25519 check with node:crypto;
 * and opening a session at a real control plane with a CI runner's OIDC token
 * (RS256, the issuer's keys cached, rule match) against opening one with an
 * admin API key. Everything runs in this process. See bench/README.md.
 *
 * Usage: npm run bench:identity [-- --flag value …]   (flags below; each also as BENCH_<FLAG> in the environment)
 */
import { createPublicKey, type KeyObject, randomBytes, randomUUID, verify } from "node:crypto";
import { rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { agentConfigSchema, startAgent } from "@gatehouse/agent";
import { TokenVerifier } from "@gatehouse/agent/tokens/verifier.js";
import { controlPlaneConfigSchema, startControlPlane } from "@gatehouse/control-plane";
import { SigningKeys } from "@gatehouse/control-plane/identity/signing-keys.js";
import { pino } from "pino";
import { Registry } from "prom-client";
import { Pool } from "undici";
import type * as IssuerModule from "../test/support/oidc-issuer.js";
import { machineBusyMillis } from "./child.js";
import {
  giveUpAfter,
  heading,
  otherLoadNote,
  percentile,
  positiveInt,
  readFlags,
  run,
  table,
  testSupport,
} from "./cli.js";

// ---------------------------------------------------------------- settings

/** Tokens the agent's verifier keeps verified; beyond it a repeat would be a first use again. */
const VERIFIER_CACHE_LIMIT = 10_000;

const FLAGS = {
  tokens: {
    default: "5000",
    help: `distinct session tokens verified in each round (first use); at most ${VERIFIER_CACHE_LIMIT}`,
  },
  repeats: { default: "20", help: "passes over the same tokens once verified (repeat use)" },
  rounds: { default: "3", help: "rounds of the token verifications; the baseline runs first, then last" },
  opens: { default: "1000", help: "timed POST /v1/sessions per kind of credential" },
  blocks: { default: "4", help: "the timed opens run in this many blocks per credential, alternating" },
  warmup: { default: "200", help: "untimed verifications and opens of each kind first" },
  timeout: { default: "300", help: "give up (exit 1) after this many seconds" },
} as const;

interface Settings {
  tokens: number;
  repeats: number;
  rounds: number;
  opens: number;
  blocks: number;
  warmup: number;
}

class BenchFailure extends Error {}

const progress = (text: string) => process.stderr.write(`· ${text}\n`);
const root = pino({ level: "silent" });
const log = (component: string) => root.child({ component });

/** The connection every token and session is for; its upstream is never contacted. */
const CONNECTION = "claude";
const UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY";

// ---------------------------------------------------------------- CPU and time

/** Operations done in a stretch of time, with the wall-clock and CPU time (every thread of this process) they took. */
interface Spent {
  ops: number;
  wallMs: number;
  cpuMs: number;
}

const nothingSpent = (): Spent => ({ ops: 0, wallMs: 0, cpuMs: 0 });

/** Runs `work` (`ops` operations) and adds what it took to `into`. */
async function spend(into: Spent, ops: number, work: () => Promise<void>): Promise<void> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await work();
  into.wallMs += performance.now() - started;
  const used = process.cpuUsage(cpu);
  into.cpuMs += (used.user + used.system) / 1000;
  into.ops += ops;
}

/** Busy time of the machine and of this process so far, to tell how much other processes used. */
interface Busy {
  machineMs: number | null;
  ownMs: number;
  at: number;
}

async function busy(): Promise<Busy> {
  const own = process.cpuUsage();
  return {
    machineMs: await machineBusyMillis(),
    ownMs: (own.user + own.system) / 1000,
    at: performance.now(),
  };
}

/** Share of the machine's CPU time that other processes used between `start` and `end`; null without /proc. */
function otherLoad(start: Busy, end: Busy): number | null {
  if (start.machineMs === null || end.machineMs === null) return null;
  const others = end.machineMs - start.machineMs - (end.ownMs - start.ownMs);
  return others / ((end.at - start.at) * cpus().length);
}

// ---------------------------------------------------------------- session tokens at the agent

interface Verifications {
  bare: Spent;
  first: Spent;
  repeat: Spent;
}

/** A signed token split as an Ed25519 check takes it: the JWS signing input and the signature. */
interface SignedToken {
  token: string;
  sessionId: string;
  input: Buffer;
  signature: Buffer;
}

async function issueTokens(keys: SigningKeys, n: number): Promise<SignedToken[]> {
  const now = Date.now();
  const tokens: SignedToken[] = [];
  for (let i = 0; i < n; i++) {
    const sessionId = randomUUID();
    const token = await keys.issueSessionToken(
      { sid: sessionId, cnx: CONNECTION, sub: `bench-${i % 50}`, expiresAt: now + 3_600_000 },
      now,
    );
    const cut = token.lastIndexOf(".");
    tokens.push({
      token,
      sessionId,
      input: Buffer.from(token.slice(0, cut)),
      signature: Buffer.from(token.slice(cut + 1), "base64url"),
    });
  }
  return tokens;
}

/** Checks every token in `tokens` with a bare Ed25519 verification of its signing input. */
function verifyBare(publicKey: KeyObject, tokens: readonly SignedToken[]): void {
  for (const t of tokens) {
    if (!verify(null, t.input, publicKey, t.signature)) {
      throw new BenchFailure(`the Ed25519 signature of session ${t.sessionId}'s token did not verify`);
    }
  }
}

/** Presents every token in `tokens` to the agent's verifier, `passes` times over. */
async function verifyAtAgent(
  verifier: TokenVerifier,
  tokens: readonly SignedToken[],
  passes: number,
): Promise<void> {
  for (let pass = 0; pass < passes; pass++) {
    for (const t of tokens) {
      const claims = await verifier.verify(t.token, CONNECTION);
      if (claims.sessionId !== t.sessionId) {
        throw new BenchFailure(`the verifier read session ${claims.sessionId} from ${t.sessionId}'s token`);
      }
    }
  }
}

async function measureVerifications(dir: string, s: Settings): Promise<Verifications> {
  const keys = await SigningKeys.load(join(dir, "signing-key.jwk"), log("cp.keys"));
  const [jwk] = keys.publicJwks;
  if (jwk === undefined) throw new BenchFailure("the signing key file holds no public key");
  const publicKey = createPublicKey({ key: { ...jwk }, format: "jwk" });
  // The keys as the control plane pushes them to agents over the link.
  const tokenKeys = keys.publicJwks.map((k) => ({ kid: String(k.kid), jwkJson: JSON.stringify(k) }));
  const verifier = new TokenVerifier();

  progress(`signing ${s.warmup + s.tokens + 1} session tokens`);
  const issued = await issueTokens(keys, s.warmup + s.tokens + 1);
  const warm = issued.slice(0, s.warmup);
  const tokens = issued.slice(s.warmup, s.warmup + s.tokens);
  const keyImport = issued.slice(-1);
  /**
   * Gives the verifier its keys again, which forgets every verified token (as an agent does
   * when the control plane pushes keys). jose imports the public key on the first
   * verification after that; a token outside the timed set pays for it, so that first use
   * measures tokens, not the key import.
   */
  const rekey = async () => {
    verifier.configure({ tokenKeys, revoked: [] });
    await verifyAtAgent(verifier, keyImport, 1);
  };

  progress(`verifying: warm-up, ${s.warmup} tokens of each kind`);
  verifyBare(publicKey, warm);
  await rekey();
  await verifyAtAgent(verifier, warm, 2);

  const result: Verifications = { bare: nothingSpent(), first: nothingSpent(), repeat: nothingSpent() };
  for (let round = 0; round < s.rounds; round++) {
    progress(`verifying: round ${round + 1} of ${s.rounds}`);
    const bare = () => spend(result.bare, tokens.length, async () => verifyBare(publicKey, tokens));
    // The baseline runs first, then last: drift in the machine's speed weighs on both sides.
    if (round % 2 === 0) await bare();
    await rekey();
    await spend(result.first, tokens.length, () => verifyAtAgent(verifier, tokens, 1));
    await spend(result.repeat, tokens.length * s.repeats, () => verifyAtAgent(verifier, tokens, s.repeats));
    if (round % 2 === 1) await bare();
  }
  return result;
}

// ---------------------------------------------------------------- session opens at the control plane

type Credential = "admin" | "runner" | "runner-reused";

const CREDENTIALS: Record<Credential, string> = {
  admin: "admin API key (GATEHOUSE_ADMIN_TOKEN)",
  runner: "runner OIDC token, a fresh one each open",
  "runner-reused": "runner OIDC token, one reused",
};

interface Opens {
  latencies: Map<Credential, number[]>;
  spent: Map<Credential, Spent>;
  /** Discovery and JWKS requests the issuer served during the warm-up and during the timed opens. */
  fetches: { warmup: IssuerRequests; timed: IssuerRequests };
}

type IssuerRequests = IssuerModule.OidcIssuer["requests"];

const OPEN_BODY = JSON.stringify({ connection: CONNECTION });

/** Opens a session as `bearer`; resolves with the time until the whole answer was read, in ms. */
async function openSession(pool: Pool, bearer: string): Promise<number> {
  const started = performance.now();
  const response = await pool.request({
    path: "/v1/sessions",
    method: "POST",
    headers: { authorization: `Bearer ${bearer}`, "content-type": "application/json" },
    body: OPEN_BODY,
  });
  const text = await response.body.text();
  const ms = performance.now() - started;
  if (response.statusCode !== 201) {
    throw new BenchFailure(`POST /v1/sessions answered ${response.statusCode}: ${text}`);
  }
  const { proxyUrl } = JSON.parse(text) as { proxyUrl?: unknown };
  if (typeof proxyUrl !== "string" || proxyUrl === "") {
    throw new BenchFailure(`a session was opened without a proxy URL: ${text}`);
  }
  return ms;
}

/**
 * A control plane with the issuer as its one runner provider and one agent
 * linked (so sessions get a proxy URL), SQLite in `dir`; `stop` ends both.
 */
async function startGatehouse(dir: string, issuer: IssuerModule.OidcIssuer, adminToken: string) {
  const cp = await startControlPlane({
    config: controlPlaneConfigSchema.parse({
      connections: [
        {
          name: CONNECTION,
          type: "anthropic",
          upstream: "http://127.0.0.1:9",
          credential: { env: UPSTREAM_KEY_ENV },
        },
      ],
      identity: {
        providers: [
          {
            name: "github",
            issuer: issuer.issuer,
            audience: issuer.audience,
            // Rules are tried in order: the runners' tokens match the second, as a deployment's often would.
            rules: [
              {
                name: "release",
                match: { repository: "contoso/*", ref: "refs/heads/release/**" },
                connections: [CONNECTION],
              },
              {
                name: "main-branch",
                match: { repository: "contoso/*", ref: "refs/heads/main" },
                connections: [CONNECTION],
                labels: { trust: "ci-main" },
              },
            ],
          },
        ],
      },
      http: { listen: "127.0.0.1:0" },
      grpc: { listen: "127.0.0.1:0" },
    }),
    dataDir: join(dir, "control-plane"),
    adminToken,
    log,
    registry: new Registry(),
  });
  try {
    const agent = await startAgent({
      config: agentConfigSchema.parse({
        controlPlane: { address: cp.grpcAddress },
        proxy: { listen: "127.0.0.1:0" },
      }),
      token: (await cp.accounts.create("bench", "bench-agent")).token,
      dataDir: join(dir, "agent"),
      env: { [UPSTREAM_KEY_ENV]: "unused" },
      log,
      registry: new Registry(),
    });
    await agent.link.whenState("ready");
    return {
      url: cp.httpUrl,
      stop: async () => {
        await agent.stop(1000);
        await cp.stop();
      },
    };
  } catch (error) {
    await cp.stop();
    throw error;
  }
}

async function measureOpens(dir: string, s: Settings): Promise<Opens> {
  const { OidcIssuer, githubClaims } = await testSupport<typeof IssuerModule>("oidc-issuer");
  const issuer = await OidcIssuer.start();
  const adminToken = `adm_${randomBytes(16).toString("hex")}`;
  try {
    progress(`signing ${s.warmup + s.opens + 1} runner tokens (RS256)`);
    // One per open, as every CI job presents a token of its own; signed before any is timed.
    const runnerTokens = await Promise.all(
      Array.from({ length: s.warmup + s.opens + 1 }, (_, i) =>
        issuer.sign(githubClaims({ run_id: String(7_000_000_000 + i) }), { expiresInSeconds: 3600 }),
      ),
    );
    const reused = runnerTokens.pop() ?? "";
    const gatehouse = await startGatehouse(dir, issuer, adminToken);
    const pool = new Pool(gatehouse.url, { connections: 1 });
    try {
      const bearers: Record<Credential, () => string> = {
        admin: () => adminToken,
        runner: () => runnerTokens.shift() ?? "",
        "runner-reused": () => reused,
      };
      const kinds = Object.keys(CREDENTIALS) as Credential[];
      progress(`opening sessions: warm-up, ${s.warmup} of each kind`);
      const before = { ...issuer.requests };
      for (const kind of kinds) {
        for (let i = 0; i < s.warmup; i++) await openSession(pool, bearers[kind]());
      }
      const warmed = { ...issuer.requests };
      const latencies = new Map(kinds.map((kind) => [kind, [] as number[]]));
      const spent = new Map(kinds.map((kind) => [kind, nothingSpent()]));
      for (let block = 0; block < s.blocks; block++) {
        progress(`opening sessions: block ${block + 1} of ${s.blocks}`);
        // Each block starts with another kind, so none always follows the same one.
        const order = kinds.map((_, k) => kinds[(k + block) % kinds.length] as Credential);
        for (const kind of order) {
          const n = Math.floor(s.opens / s.blocks) + (block < s.opens % s.blocks ? 1 : 0);
          const samples = latencies.get(kind) ?? [];
          await spend(spent.get(kind) ?? nothingSpent(), n, async () => {
            for (let i = 0; i < n; i++) samples.push(await openSession(pool, bearers[kind]()));
          });
        }
      }
      const after = { ...issuer.requests };
      const delta = (from: IssuerRequests, to: IssuerRequests) => ({
        discovery: to.discovery - from.discovery,
        jwks: to.jwks - from.jwks,
      });
      return { latencies, spent, fetches: { warmup: delta(before, warmed), timed: delta(warmed, after) } };
    } finally {
      await pool.close();
      await gatehouse.stop();
    }
  } finally {
    await issuer.stop();
  }
}

// ---------------------------------------------------------------- report

const thousands = (value: number) => Math.round(value).toLocaleString("en-US");
const ms = (value: number) => (value < 10 ? value.toFixed(2) : value.toFixed(1));
const times = (ratio: number) => `${ratio < 10 ? ratio.toFixed(2) : ratio.toFixed(0)}×`;
const perSecond = (spent: Spent, of: "wallMs" | "cpuMs") => spent.ops / (spent[of] / 1000);
const cpuMicros = (spent: Spent) => (spent.cpuMs * 1000) / spent.ops;

function verificationReport(v: Verifications, s: Settings): string[] {
  const row = (scenario: string, spent: Spent) => [
    scenario,
    thousands(spent.ops),
    `${thousands(perSecond(spent, "wallMs"))}/s`,
    times(perSecond(spent, "wallMs") / perSecond(v.bare, "wallMs")),
    `${thousands(perSecond(spent, "cpuMs"))}/s`,
    times(perSecond(spent, "cpuMs") / perSecond(v.bare, "cpuMs")),
    cpuMicros(spent).toFixed(2),
  ];
  return [
    `Session tokens at the agent: one verification at a time, ${s.rounds} rounds of ${thousands(s.tokens)} tokens`,
    "",
    table([
      ["scenario", "verifications", "wall-clock", "÷ bare", "per CPU-second", "÷ bare", "CPU µs each"],
      row("bare Ed25519 (node:crypto verify) — baseline", v.bare),
      row("TokenVerifier, first use (jose EdDSA + claims)", v.first),
      row(`TokenVerifier, repeat use (cache), ${s.repeats} passes`, v.repeat),
    ]),
    "",
    `first use adds ${(cpuMicros(v.first) - cpuMicros(v.bare)).toFixed(1)} µs of CPU per token to the bare ` +
      `signature check; a repeat use costs 1/${thousands(cpuMicros(v.first) / cpuMicros(v.repeat))} of a first use.`,
    "per CPU-second: verifications per second of CPU time this process used (every thread: jose verifies " +
      "with WebCrypto, on libuv's thread pool), i.e. per core.",
  ];
}

function opensReport(o: Opens, s: Settings): string[] {
  const samples = (kind: Credential) => o.latencies.get(kind) ?? [];
  const spent = (kind: Credential) => o.spent.get(kind) ?? nothingSpent();
  const row = (kind: Credential) => [
    CREDENTIALS[kind],
    thousands(samples(kind).length),
    ...[50, 95, 99].map((p) => ms(percentile(samples(kind), p))),
    `${thousands(perSecond(spent(kind), "wallMs"))}/s`,
    `${ms(spent(kind).cpuMs / spent(kind).ops)} ms`,
  ];
  const ratio = (kind: Credential) => [
    "  ÷ admin",
    "",
    ...[50, 95, 99].map((p) => times(percentile(samples(kind), p) / percentile(samples("admin"), p))),
    times(perSecond(spent(kind), "wallMs") / perSecond(spent("admin"), "wallMs")),
    times(spent(kind).cpuMs / spent(kind).ops / (spent("admin").cpuMs / spent("admin").ops)),
  ];
  const { warmup, timed } = o.fetches;
  return [
    `Session opens at the control plane: POST /v1/sessions one at a time, ${s.blocks} alternating blocks per credential`,
    "",
    table([
      ["credential", "opens", "p50 ms", "p95 ms", "p99 ms", "wall-clock", "CPU per open"],
      row("admin"),
      row("runner"),
      ratio("runner"),
      row("runner-reused"),
      ratio("runner-reused"),
    ]),
    "",
    `issuer requests: warm-up discovery ${warmup.discovery}, JWKS ${warmup.jwks}; ` +
      `timed opens discovery ${timed.discovery}, JWKS ${timed.jwks} (0 expected: the keys were cached in the warm-up)` +
      (timed.discovery + timed.jwks > 0 ? " — NOTE: the timed opens fetched from the issuer." : "."),
    "latency: until the whole answer was read, over one kept-alive connection; CPU per open: this process " +
      "(client, control plane with its SQLite store, agent), every thread.",
  ];
}

// ---------------------------------------------------------------- run

async function main(): Promise<number> {
  const settings = readFlags("npm run bench:identity", FLAGS);
  const s: Settings = {
    tokens: positiveInt(settings, "tokens"),
    repeats: positiveInt(settings, "repeats"),
    rounds: positiveInt(settings, "rounds"),
    opens: positiveInt(settings, "opens"),
    blocks: positiveInt(settings, "blocks"),
    warmup: positiveInt(settings, "warmup"),
  };
  if (s.tokens > VERIFIER_CACHE_LIMIT) {
    throw new Error(
      `--tokens must be at most ${VERIFIER_CACHE_LIMIT} (the tokens the verifier keeps); got ${s.tokens}`,
    );
  }
  if (s.blocks > s.opens) throw new Error(`--blocks must be at most --opens (${s.opens}); got ${s.blocks}`);
  giveUpAfter(positiveInt(settings, "timeout"));

  const say = (text = "") => process.stdout.write(`${text}\n`);
  for (const line of heading("Gatehouse identity benchmark", settings)) say(line);
  say();

  const dir = await mkdtemp(join(tmpdir(), "gatehouse-identity-bench-"));
  // The watchdog ends the process without unwinding; the key file and store must not stay behind.
  const onExit = () => rmSync(dir, { recursive: true, force: true });
  process.once("exit", onExit);
  try {
    const started = await busy();
    const verifications = await measureVerifications(dir, s);
    const opens = await measureOpens(dir, s);
    const load = otherLoad(started, await busy());
    for (const line of [...verificationReport(verifications, s), "", ...opensReport(opens, s)]) say(line);
    say();
    say(otherLoadNote(load));
  } finally {
    process.off("exit", onExit);
    await rm(dir, { recursive: true, force: true });
  }
  return 0;
}

run(main);
