/**
 * Secret masking, in one process on one core: throughput of the StreamMasker over streamed text
 * (ordinary text, and text full of secrets), and the time masking adds to each server-sent event
 * on the relay path (parse, rewrite, re-frame), measured side by side with masking off.
 *
 * Targets: over 50 MB/s of streamed text per core; under 0.1 ms added per event. Each is printed
 * as met or MISSED; the run exits 0 once everything has been measured.
 */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Masker } from "@gatehouse/agent/masking/masker.js";
import { ResponseMasking } from "@gatehouse/agent/proxy/anthropic/masking.js";
import { SseParser } from "@gatehouse/agent/proxy/sse.js";
import type * as CanariesModule from "../test/support/masking-canaries.js";
import { heading, positiveInt, readFlags, run, table, testSupport } from "./cli.js";

const flags = readFlags("npm run bench:masking", {
  mb: { default: "16", help: "MB of text pushed through the StreamMasker per case" },
  delta: { default: "24", help: "characters per text delta (the API sends a few tokens per delta)" },
  events: { default: "200000", help: "server-sent events relayed per case" },
  rounds: { default: "3", help: "rounds per case; the best is reported" },
});

const ROOT = join(import.meta.dirname, "..", "..");

/** Ordinary output: the repository's own sources and the false-positive corpus, as one text. */
function ordinaryText(): string {
  const parts: string[] = [];
  for (const dir of ["agent/src", "control-plane/src", "test/fixtures/masking"]) {
    for (const file of readdirSync(join(ROOT, dir), { recursive: true }).map(String)) {
      if (/\.(ts|md|py)$/.test(file)) parts.push(readFileSync(join(ROOT, dir, file), "utf8"));
    }
  }
  return parts.join("\n");
}

/** Streamed text per core, in MB/s. */
const STREAM_MB_PER_S = 50;
/** Time masking may add to each relayed event, in µs. */
const ADDED_US_PER_EVENT = 100;

const verdict = (met: boolean) => (met ? "met" : "MISSED");

function repeatTo(text: string, chars: number): string {
  return text.repeat(Math.ceil(chars / text.length)).slice(0, chars);
}

function best(rounds: number, body: () => void): number {
  let fastest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < rounds; i++) {
    const start = process.hrtime.bigint();
    body();
    fastest = Math.min(fastest, Number(process.hrtime.bigint() - start) / 1e6);
  }
  return fastest;
}

async function main(): Promise<number> {
  const mb = positiveInt(flags, "mb");
  const delta = positiveInt(flags, "delta");
  const eventCount = positiveInt(flags, "events");
  const rounds = positiveInt(flags, "rounds");
  const { canaryProse } = await testSupport<typeof CanariesModule>("masking-canaries");
  const masker = new Masker();

  const size = mb * 1_000_000;
  const cases: [string, string][] = [
    ["ordinary text and code", repeatTo(ordinaryText(), size)],
    ["text with a secret every ~150 chars", repeatTo(canaryProse(), size)],
  ];
  const throughput: string[][] = [
    ["text", "MB", "MB/s per core (stream)", "MB/s per core (whole string)", "target", "verdict"],
  ];
  for (const [name, text] of cases) {
    const streamMs = best(rounds, () => {
      const stream = masker.stream();
      for (let at = 0; at < text.length; at += delta) stream.push(text.slice(at, at + delta));
      stream.flush();
    });
    const wholeMs = best(rounds, () => {
      for (let at = 0; at < text.length; at += 65_536) masker.mask(text.slice(at, at + 65_536));
    });
    const rate = text.length / 1e6 / (streamMs / 1000);
    throughput.push([
      name,
      (text.length / 1e6).toFixed(0),
      rate.toFixed(1),
      (text.length / 1e6 / (wholeMs / 1000)).toFixed(1),
      `> ${STREAM_MB_PER_S}`,
      verdict(rate > STREAM_MB_PER_S),
    ]);
  }

  // The relay path: upstream chunks parsed into events, each passed on (off) or through masking (on).
  const ordinary = cases[0]?.[1] ?? "";
  const frames: Buffer[] = [];
  for (let i = 0, at = 0; i < eventCount; i++, at += delta) {
    const text = ordinary.slice(at % (ordinary.length - delta), (at % (ordinary.length - delta)) + delta);
    const data = JSON.stringify({
      type: "content_block_delta",
      index: 0,
      delta: { type: "text_delta", text },
    });
    frames.push(Buffer.from(`event: content_block_delta\ndata: ${data}\n\n`));
  }
  const chunks: Buffer[] = [];
  for (let i = 0; i < frames.length; i += 8) chunks.push(Buffer.concat(frames.slice(i, i + 8)));
  const relay = (masking: boolean) => () => {
    const parser = new SseParser({ maxBlockBytes: 1 << 20 });
    const rewrite = masking ? new ResponseMasking({ masked: () => {} }, masker) : null;
    let bytes = 0;
    for (const chunk of chunks) {
      for (const block of parser.push(chunk)) {
        for (const out of rewrite ? rewrite.event(block) : [block]) bytes += out.raw.length;
      }
    }
    if (bytes === 0) throw new Error("nothing relayed");
  };
  const offMs = best(rounds, relay(false));
  const onMs = best(rounds, relay(true));
  const addedUs = ((onMs - offMs) * 1000) / eventCount;
  const perEvent = [
    ["masking", "events", "µs per event", "added µs per event", "target", "verdict"],
    ["off", String(eventCount), ((offMs * 1000) / eventCount).toFixed(2), "", "", ""],
    [
      "on",
      String(eventCount),
      ((onMs * 1000) / eventCount).toFixed(2),
      addedUs.toFixed(2),
      `< ${ADDED_US_PER_EVENT}`,
      verdict(addedUs < ADDED_US_PER_EVENT),
    ],
  ];

  process.stdout.write(
    [...heading("Gatehouse masking benchmark", flags), "", table(throughput), "", table(perEvent), ""].join(
      "\n",
    ),
  );
  return 0;
}

run(main);
