/**
 * What the agent costs on the data path: the same load sent straight to the
 * fake Anthropic upstream and through a recording Gatehouse, in one run, side
 * by side. The load generator is this process (undici); the fake upstream runs
 * in a child process, Gatehouse in one or two more (bench/gateway.ts), with
 * recording on: every exchange is spooled, sent over the gRPC link and stored
 * in SQLite before it is acknowledged. See bench/README.md.
 *
 * Usage: npm run bench [-- --flag value …]   (flags below; each also as BENCH_<FLAG> in the environment)
 */
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { AGENT_NODE_OPTIONS } from "@gatehouse/agent/config.js";
import { Pool } from "undici";
import {
  BenchChild,
  cpuMillis,
  type DrainResult,
  type GatewayInfo,
  HOLD_USER,
  machineBusyMillis,
  type RecordingState,
  residentBytes,
  type SessionGrant,
  type UpstreamInfo,
} from "./child.js";
import {
  giveUpAfter,
  machineLine,
  otherLoadNote,
  percentile,
  positiveInt,
  readFlags,
  run,
  table,
} from "./cli.js";

// ---------------------------------------------------------------- settings

const FLAGS = {
  sequential: { default: "2000", help: "non-streamed requests per target, one in flight" },
  streams: { default: "1000", help: "streamed requests per target, one in flight" },
  blocks: { default: "4", help: "one-in-flight requests run in this many alternating blocks per target" },
  warmup: { default: "300", help: "warm-up requests per target before each phase" },
  concurrency: { default: "64", help: "requests in flight in the throughput phase" },
  "throughput-requests": { default: "6000", help: "requests per target per throughput round" },
  rounds: { default: "2", help: "throughput rounds per target (direct and via agent alternate)" },
  deltas: { default: "50", help: "text deltas per streamed reply" },
  "open-streams": {
    default: "500",
    help: "streams held open at once through the agent for the memory figure",
  },
  "prompt-bytes": { default: "1024", help: "size of the user prompt in each request" },
  layouts: {
    default: "split",
    help: "split (as `gatehouse up` and the split deployment run it) and/or one-process (a diagnostic: both halves on one event loop)",
  },
  "log-level": { default: "info", help: "Gatehouse log level (logs go to a file in its temp dir)" },
  "gateway-node-args": {
    default: "",
    help: 'extra node flags for Gatehouse processes, e.g. --gateway-node-args="--cpu-prof --cpu-prof-dir=prof"',
  },
  timeout: { default: "600", help: "give up (exit 1) after this many seconds" },
} as const;

interface Settings {
  sequential: number;
  streams: number;
  blocks: number;
  warmup: number;
  concurrency: number;
  throughputRequests: number;
  rounds: number;
  deltas: number;
  openStreams: number;
  promptBytes: number;
  /** Events a held stream sends before the upstream holds it: mid-way through the reply. */
  holdAfter: number;
}

// ---------------------------------------------------------------- load

interface Target {
  name: string;
  pool: Pool;
  path: string;
  headers: Record<string, string>;
}

/** A client of one target, with its credential: the real key direct, the session token via the agent. */
function target(name: string, url: string, credential: Record<string, string>, connections: number): Target {
  const base = new URL(url);
  return {
    name,
    pool: new Pool(base.origin, { connections, pipelining: 1, keepAliveTimeout: 60_000 }),
    path: `${base.pathname.replace(/\/+$/, "")}/v1/messages`,
    headers: { "content-type": "application/json", "anthropic-version": "2023-06-01", ...credential },
  };
}

function messagesBody(promptBytes: number, extra: Record<string, unknown>): Buffer {
  const prompt = "Summarise the change and list the risky parts. ".repeat(Math.ceil(promptBytes / 48));
  return Buffer.from(
    JSON.stringify({
      model: "claude-sonnet-4-6",
      max_tokens: 1024,
      messages: [{ role: "user", content: prompt.slice(0, promptBytes) }],
      ...extra,
    }),
  );
}

class BenchFailure extends Error {}

/** One non-streamed request; resolves with its latency in ms (until the whole body is read). */
async function exchange(to: Target, body: Buffer): Promise<number> {
  const started = performance.now();
  const response = await to.pool.request({ path: to.path, method: "POST", headers: to.headers, body });
  const text = await response.body.text();
  const elapsed = performance.now() - started;
  if (response.statusCode !== 200) {
    throw new BenchFailure(`${to.name}: HTTP ${response.statusCode}: ${text.slice(0, 300)}`);
  }
  return elapsed;
}

interface StreamTiming {
  firstByteMs: number;
  totalMs: number;
}

/**
 * One streamed request, checked to end with `message_stop`. `onEvents` sees the running count
 * of complete events (blocks ending in a blank line; the fake ends lines with LF only).
 */
async function stream(to: Target, body: Buffer, onEvents?: (events: number) => void): Promise<StreamTiming> {
  const started = performance.now();
  const response = await to.pool.request({ path: to.path, method: "POST", headers: to.headers, body });
  if (response.statusCode !== 200) {
    const text = await response.body.text();
    throw new BenchFailure(`${to.name}: HTTP ${response.statusCode}: ${text.slice(0, 300)}`);
  }
  let firstByteMs = -1;
  let events = 0;
  let lastByte = 0;
  let tail = "";
  for await (const chunk of response.body as AsyncIterable<Buffer>) {
    if (firstByteMs < 0) firstByteMs = performance.now() - started;
    if (onEvents) {
      for (let at = chunk.indexOf(0x0a); at !== -1; at = chunk.indexOf(0x0a, at + 1)) {
        if ((at === 0 ? lastByte : chunk[at - 1]) === 0x0a) events += 1;
      }
      lastByte = chunk[chunk.length - 1] ?? lastByte;
      onEvents(events);
    }
    tail = (tail + chunk.toString("latin1")).slice(-256);
  }
  const totalMs = performance.now() - started;
  if (!tail.includes("event: message_stop")) {
    throw new BenchFailure(
      `${to.name}: stream ended without message_stop: …${JSON.stringify(tail.slice(-120))}`,
    );
  }
  return { firstByteMs, totalMs };
}

/**
 * `n` requests per target, one in flight, in `blocks` blocks per target that alternate
 * (A B B A A B …), with `settle` after every block. Requests of a block run back to back, so a
 * via-agent request pays for the recording work its predecessors left behind, as in steady use,
 * while that work never spills into a direct block.
 */
async function alternating<T>(
  pair: readonly [Target, Target],
  n: number,
  blocks: number,
  run: (to: Target) => Promise<T>,
  settle: () => Promise<unknown>,
): Promise<[T[], T[]]> {
  const results: [T[], T[]] = [[], []];
  const blockSize = Math.ceil(n / blocks);
  for (let block = 0; block < blocks; block++) {
    const size = Math.min(blockSize, n - block * blockSize);
    for (const index of block % 2 === 0 ? [0, 1] : [1, 0]) {
      const to = pair[index] as Target;
      for (let i = 0; i < size; i++) results[index]?.push(await run(to));
      await settle();
    }
  }
  return results;
}

/** `total` requests with `concurrency` in flight; resolves with the wall time in ms. */
async function saturate(to: Target, body: Buffer, concurrency: number, total: number): Promise<number> {
  let issued = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (issued < total) {
        issued += 1;
        await exchange(to, body);
      }
    }),
  );
  return performance.now() - started;
}

// ---------------------------------------------------------------- deployments

type Layout = "one-process" | "split";

const LAYOUTS: Record<Layout, string> = {
  "one-process":
    "one-process layout (diagnostic, not a shipped layout): control plane, SQLite store and agent share one event loop",
  split:
    "split layout (as `gatehouse up` runs it): the agent in its own process; the control plane and its SQLite store in another",
};

/** A running Gatehouse the load goes through. */
interface Deployment {
  layout: Layout;
  /** The process that runs the agent: its memory is measured and it is asked about recording. */
  agent: BenchChild<GatewayInfo>;
  /** Every process of the deployment, agent first (the order they stop in). */
  children: BenchChild<GatewayInfo>[];
  grant: SessionGrant;
}

async function rss(child: BenchChild<GatewayInfo>): Promise<number> {
  return (await residentBytes(child.info.pid)) ?? (await child.ask<NodeJS.MemoryUsage>("memory")).rss;
}

async function deploy(
  layout: Layout,
  script: string,
  upstream: UpstreamInfo,
  common: string[],
  execArgv: string[],
): Promise<Deployment> {
  const upstreamArgs = ["--upstream", upstream.url, "--upstream-key", upstream.apiKey, ...common];
  if (layout === "one-process") {
    const all = await BenchChild.start<GatewayInfo>(
      "gateway",
      script,
      ["--role", "all", ...upstreamArgs],
      execArgv,
    );
    return { layout, agent: all, children: [all], grant: await all.ask<SessionGrant>("session") };
  }
  const cp = await BenchChild.start<GatewayInfo>(
    "control plane",
    script,
    ["--role", "control-plane", ...upstreamArgs],
    execArgv,
  );
  try {
    const agentArgs = [
      "--role",
      "agent",
      "--control-plane",
      cp.info.grpcAddress,
      "--agent-token",
      cp.info.agentToken,
    ];
    // The agent runs with the V8 options `gatehouse up` gives it, unless the run says otherwise.
    const agent = await BenchChild.start<GatewayInfo>(
      "agent",
      script,
      [...agentArgs, "--upstream-key", upstream.apiKey, ...common],
      execArgv.length > 0 ? execArgv : [...AGENT_NODE_OPTIONS],
    );
    return { layout, agent, children: [agent, cp], grant: await cp.ask<SessionGrant>("session") };
  } catch (error) {
    await cp.stop();
    throw error;
  }
}

// ---------------------------------------------------------------- measurement

interface Memory {
  /** RSS once the agent is linked, before any request. */
  atStart: number;
  /** RSS after the warm-up, before the streams are opened. */
  before: number;
  /** Largest RSS seen while every stream was held open. */
  held: number;
  /** Largest RSS over the whole measurement (VmHWM), read at its end. */
  peak: number | null;
  heap: NodeJS.MemoryUsage;
}

interface Result {
  deployment: Deployment;
  /** [direct, via agent] in each pair. */
  sequential: [number[], number[]];
  streaming: [StreamTiming[], StreamTiming[]];
  rps: [number, number];
  /** Via the agent: requests per second counted until the last one's events were durable in the store. */
  recordedRps: number;
  /** CPU ms each process used while each target was loaded. */
  cpu: [Map<string, number>, Map<string, number>];
  /** The largest backlog of unacknowledged events when a throughput round stopped. */
  backlog: DrainResult;
  memory: Memory;
  recording: RecordingState;
  /** Share of the machine's CPU time used by processes other than the benchmark's while it measured. */
  otherLoad: number | null;
}

const progress = (text: string) => process.stderr.write(`· ${text}\n`);

async function measure(
  deployment: Deployment,
  upstream: BenchChild<UpstreamInfo>,
  s: Settings,
  atStart: number,
): Promise<Result> {
  const { agent } = deployment;
  const settle = () => agent.ask<DrainResult>("drain");
  const pools: Pool[] = [];
  const pair = (connections: number): [Target, Target] => {
    const direct = target("direct", upstream.info.url, { "x-api-key": upstream.info.apiKey }, connections);
    const via = target("via agent", deployment.grant.connectionUrl, bearer(deployment.grant), connections);
    pools.push(direct.pool, via.pool);
    return [direct, via];
  };
  const plain = messagesBody(s.promptBytes, {});
  const streamed = messagesBody(s.promptBytes, { stream: true });
  const held = messagesBody(s.promptBytes, { stream: true, metadata: { user_id: HOLD_USER } });
  const layout = deployment.layout;
  const ours = [process.pid, upstream.info.pid, ...deployment.children.map((c) => c.info.pid)];
  const busy = async () => {
    const [machine, ...each] = await Promise.all([machineBusyMillis(), ...ours.map(cpuMillis)]);
    const own = each.reduce<number | null>(
      (sum, used) => (sum === null || used === null ? null : sum + used),
      0,
    );
    return { machine, own, at: performance.now() };
  };
  const start = await busy();
  try {
    const one = pair(1);
    progress(`${layout}: ${s.sequential} requests per target, one in flight, after ${s.warmup} to warm up`);
    await alternating(one, s.warmup, 1, (to) => exchange(to, plain), settle);

    // Memory first, on a warmed-up agent, so the figure is the open streams' and not what earlier
    // load left in the heap; the peak over the whole run is read at the end.
    progress(`${layout}: ${s.openStreams} streams held open at once through the agent`);
    const memory = await openStreamsMemory(deployment, upstream, held, s.openStreams, s.holdAfter, atStart);

    const sequential = await alternating(one, s.sequential, s.blocks, (to) => exchange(to, plain), settle);

    const many = pair(s.concurrency);
    progress(
      `${layout}: ${s.rounds} × ${s.throughputRequests} requests per target, ${s.concurrency} in flight`,
    );
    for (const to of many) await saturate(to, plain, s.concurrency, Math.max(s.warmup, s.concurrency * 4));
    await settle();
    const watched = [
      { name: "load generator", pid: process.pid },
      { name: "upstream", pid: upstream.info.pid },
      ...deployment.children.map((c) => ({ name: c.name, pid: c.info.pid })),
    ];
    const cpuNow = () => Promise.all(watched.map((w) => cpuMillis(w.pid)));
    const cpu: [Map<string, number>, Map<string, number>] = [new Map(), new Map()];
    const wall = [0, 0];
    // Via the agent, also the time until the round's last event was durable in the store: the rate
    // the whole recording pipeline sustains.
    let recordedWall = 0;
    let backlog: DrainResult = { pendingBefore: 0, ms: 0, ackedSeq: 0 };
    for (let round = 0; round < s.rounds; round++) {
      for (const index of round % 2 === 0 ? [0, 1] : [1, 0]) {
        const before = await cpuNow();
        const took = await saturate(many[index] as Target, plain, s.concurrency, s.throughputRequests);
        wall[index] = (wall[index] ?? 0) + took;
        const drained = await settle();
        // After the drain, so the CPU the recording of this round took is counted, even where it lagged.
        const after = await cpuNow();
        const spent = cpu[index] as Map<string, number>;
        watched.forEach((w, i) => {
          spent.set(
            w.name,
            (spent.get(w.name) ?? 0) + ((after[i] ?? Number.NaN) - (before[i] ?? Number.NaN)),
          );
        });
        if (index === 1) {
          recordedWall += took + drained.ms;
          if (drained.pendingBefore >= backlog.pendingBefore) backlog = drained;
        }
      }
    }
    const total = s.throughputRequests * s.rounds;
    const rps = wall.map((ms) => total / (ms / 1000)) as [number, number];
    const recordedRps = total / (recordedWall / 1000);

    progress(`${layout}: ${s.streams} streams of ${s.deltas} deltas per target, one in flight`);
    await alternating(one, s.warmup, 1, (to) => stream(to, streamed), settle);
    const streaming = await alternating(one, s.streams, s.blocks, (to) => stream(to, streamed), settle);

    const recording = await agent.ask<RecordingState>("recording");
    memory.peak = await residentBytes(agent.info.pid, "VmHWM");
    const end = await busy();
    const otherLoad =
      start.machine === null || end.machine === null || start.own === null || end.own === null
        ? null
        : (end.machine - start.machine - (end.own - start.own)) / ((end.at - start.at) * cpus().length);
    return {
      deployment,
      sequential,
      streaming,
      rps,
      recordedRps,
      cpu,
      backlog,
      memory,
      recording,
      otherLoad,
    };
  } finally {
    await Promise.all(pools.map((pool) => pool.destroy()));
  }
}

/** Holds `count` streams open through the agent mid-way, measures the agent process, then lets them finish. */
async function openStreamsMemory(
  deployment: Deployment,
  upstream: BenchChild<UpstreamInfo>,
  body: Buffer,
  count: number,
  holdAfter: number,
  atStart: number,
): Promise<Memory> {
  const { agent } = deployment;
  const before = await rss(agent);
  const clients = target("via agent", deployment.grant.connectionUrl, bearer(deployment.grant), count);
  try {
    let reached = 0;
    let allReached: () => void = () => undefined;
    const allHeld = new Promise<void>((resolve) => {
      allReached = resolve;
    });
    const running = Array.from({ length: count }, () => {
      let counted = false;
      return stream(clients, body, (events) => {
        if (!counted && events >= holdAfter) {
          counted = true;
          reached += 1;
          if (reached === count) allReached();
        }
      });
    });
    // A stream that fails before it is held would leave allHeld pending: fail at once instead.
    await Promise.race([allHeld, Promise.all(running).then(() => undefined)]);
    if (reached < count) throw new BenchFailure(`only ${reached} of ${count} streams were held open`);
    let held = 0;
    for (let sample = 0; sample < 5; sample++) {
      held = Math.max(held, await rss(agent));
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const heap = await agent.ask<NodeJS.MemoryUsage>("memory");
    await upstream.ask("release");
    await Promise.all(running);
    await agent.ask<DrainResult>("drain");
    return { atStart, before, held, peak: null, heap };
  } finally {
    await clients.pool.destroy();
  }
}

const bearer = (grant: SessionGrant) => ({ authorization: `Bearer ${grant.token}` });

// ---------------------------------------------------------------- report

const ms = (value: number) => `${value.toFixed(2)} ms`;
const added = (value: number) => `${value >= 0 ? "+" : "−"}${Math.abs(value).toFixed(2)} ms`;
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;
const verdict = (met: boolean) => (met ? "met" : "MISSED");

function report(r: Result, s: Settings): string[] {
  const p = percentile;
  const [seqDirect, seqVia] = r.sequential;
  const firstByte = r.streaming.map((timings) => timings.map((t) => t.firstByteMs)) as [number[], number[]];
  const whole = r.streaming.map((timings) => timings.map((t) => t.totalMs)) as [number[], number[]];
  const [rpsDirect, rpsVia] = r.rps;
  const diff = (pair: [number[], number[]], q: number) => p(pair[1], q) - p(pair[0], q);
  const row = (
    scenario: string,
    metric: string,
    pair: [number[], number[]],
    q: number,
    target = "",
    limit = 0,
  ) => [
    scenario,
    metric,
    ms(p(pair[0], q)),
    ms(p(pair[1], q)),
    added(diff(pair, q)),
    target,
    target ? verdict(diff(pair, q) < limit) : "",
  ];
  const ratio = rpsVia / rpsDirect;
  const m = r.memory;
  const agentProcess = r.deployment.layout === "split" ? "agent RSS" : "gateway RSS";
  const total = s.throughputRequests * s.rounds;
  const perRequest = (index: 0 | 1, names: string[]) =>
    names
      .map((name) => {
        const used = r.cpu[index].get(name) ?? Number.NaN;
        return `${name} ${Number.isNaN(used) ? "?" : ((used * 1000) / total).toFixed(0)}`;
      })
      .join(", ");
  const gatehouse = r.deployment.children.map((c) => c.name);
  return [
    `${LAYOUTS[r.deployment.layout]} (pids ${r.deployment.children.map((c) => `${c.name} ${c.info.pid}`).join(", ")})`,
    table([
      ["scenario", "metric", "direct", "via agent", "added / ratio", "target", "verdict"],
      row(`1 in flight (${s.sequential}/target)`, "latency p50", r.sequential, 50, "< 1 ms added", 1),
      row("", "latency p99", r.sequential, 99),
      [
        `${s.concurrency} in flight (${s.rounds}×${s.throughputRequests}/target)`,
        "throughput",
        `${rpsDirect.toFixed(0)} req/s`,
        `${rpsVia.toFixed(0)} req/s`,
        `${ratio.toFixed(2)}×`,
        "≥ 0.5× direct",
        verdict(ratio >= 0.5),
      ],
      [
        "",
        "…until recorded",
        "",
        `${r.recordedRps.toFixed(0)} req/s`,
        `${(r.recordedRps / rpsDirect).toFixed(2)}×`,
        "",
        "",
      ],
      row(
        `streaming, ${s.deltas} deltas (${s.streams}/target)`,
        "first byte p50",
        firstByte,
        50,
        "< 2 ms added",
        2,
      ),
      row("", "first byte p99", firstByte, 99),
      row("", "whole stream p50", whole, 50),
      [
        `${s.openStreams} streams open at once`,
        agentProcess,
        "",
        mb(m.held),
        `at start ${mb(m.atStart)}, warmed up ${mb(m.before)}; run's peak ${m.peak === null ? "?" : mb(m.peak)}`,
        "< 150 MB",
        verdict(m.held < 150e6),
      ],
    ]),
    `CPU per request at ${s.concurrency} in flight, recording included (µs, all threads): direct: ${perRequest(0, ["load generator", "upstream"])}; ` +
      `via agent: ${perRequest(1, ["load generator", "upstream", ...gatehouse])}.`,
    `recording: ${r.recording.ackedSeq} events stored and acknowledged, ${r.recording.pending} pending. ` +
      `Largest backlog when a ${s.concurrency}-in-flight round stopped: ${r.backlog.pendingBefore} events, durable ` +
      `${r.backlog.ms.toFixed(0)} ms later.`,
    otherLoadNote(r.otherLoad),
    `${agentProcess.split(" ")[0]} heap at ${s.openStreams} open streams: ${mb(m.heap.heapUsed)} used of ` +
      `${mb(m.heap.heapTotal)}, external ${mb(m.heap.external)}; p50s of ${seqDirect.length}/${seqVia.length} samples.`,
  ];
}

// ---------------------------------------------------------------- run

async function main(): Promise<number> {
  const settings = readFlags("npm run bench", FLAGS);
  const deltas = positiveInt(settings, "deltas");
  const s: Settings = {
    sequential: positiveInt(settings, "sequential"),
    streams: positiveInt(settings, "streams"),
    blocks: positiveInt(settings, "blocks"),
    warmup: positiveInt(settings, "warmup"),
    concurrency: positiveInt(settings, "concurrency"),
    throughputRequests: positiveInt(settings, "throughput-requests"),
    rounds: positiveInt(settings, "rounds"),
    deltas,
    openStreams: positiveInt(settings, "open-streams"),
    promptBytes: positiveInt(settings, "prompt-bytes"),
    // message_start, content_block_start, ping, then half the deltas.
    holdAfter: 3 + Math.floor(deltas / 2),
  };
  const timeoutS = positiveInt(settings, "timeout");
  const gatewayNodeArgs = settings["gateway-node-args"].split(/\s+/).filter(Boolean);
  const layouts = settings.layouts.split(",").map((l) => l.trim());
  for (const layout of layouts) {
    if (!(layout in LAYOUTS))
      throw new Error(`--layouts takes one-process and/or split; got ${JSON.stringify(layout)}`);
  }

  giveUpAfter(timeoutS);

  const say = (text = "") => process.stdout.write(`${text}\n`);
  say(`Gatehouse proxy benchmark, ${new Date().toISOString()}`);
  say(machineLine());
  say(
    `settings: sequential=${s.sequential} streams=${s.streams} blocks=${s.blocks} warmup=${s.warmup} ` +
      `concurrency=${s.concurrency} throughput-requests=${s.throughputRequests} rounds=${s.rounds} deltas=${s.deltas} ` +
      `open-streams=${s.openStreams} (held after ${s.holdAfter} events) prompt-bytes=${s.promptBytes} ` +
      `layouts=${layouts.join(",")} log-level=${settings["log-level"]}` +
      (gatewayNodeArgs.length > 0 ? ` gateway-node-args="${gatewayNodeArgs.join(" ")}"` : ""),
  );

  const here = (file: string) => fileURLToPath(new URL(file, import.meta.url));
  const upstream = await BenchChild.start<UpstreamInfo>(
    "upstream",
    here("./upstream.js"),
    ["--deltas", String(s.deltas), "--hold-after", String(s.holdAfter)],
    [],
  );
  say(
    `load generator pid ${process.pid}, fake upstream pid ${upstream.info.pid}; ` +
      `load average at start ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
  );
  say();
  let pending = 0;
  try {
    for (const layout of layouts as Layout[]) {
      const common = ["--log-level", settings["log-level"]];
      const deployment = await deploy(layout, here("./gateway.js"), upstream.info, common, gatewayNodeArgs);
      try {
        const result = await measure(deployment, upstream, s, await rss(deployment.agent));
        pending += result.recording.pending;
        for (const line of report(result, s)) say(line);
        say();
      } finally {
        for (const child of deployment.children) await child.stop();
      }
    }
  } finally {
    await upstream.stop();
  }
  return pending === 0 ? 0 : 1;
}

run(main);
