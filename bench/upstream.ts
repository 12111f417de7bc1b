/**
 * Child process of the benchmark: the fake Anthropic API (test/support), which
 * both the direct and the via-agent load reach. Every reply is the same text
 * block, so a non-streamed reply is one JSON message and a streamed one has
 * `--deltas` text deltas. A request whose `metadata.user_id` is
 * {@link HOLD_USER} is held after `--hold-after` events until the parent sends
 * `release`.
 *
 * Prints `{"url","apiKey","pid"}` on stdout once listening.
 */
import { parseArgs } from "node:util";
import type * as FakeModule from "../test/support/fake-anthropic.js";
import { HOLD_USER, serveCommands, type UpstreamInfo } from "./child.js";

/** Characters per text delta. */
const DELTA_CHARS = 20;

const { values } = parseArgs({
  options: {
    deltas: { type: "string", default: "50" },
    "hold-after": { type: "string", default: "28" },
  },
});
const deltas = Number(values.deltas);
const holdAfter = Number(values["hold-after"]);

// The fake is compiled in the test project (test/dist), which this file's output
// does not sit beside, so its runtime path is resolved from here; the types
// come from the project reference.
const fakeUrl = new URL("../../test/dist/support/fake-anthropic.js", import.meta.url);
const { startFakeAnthropic } = (await import(fakeUrl.href)) as typeof FakeModule;

const fake = await startFakeAnthropic({ recordRequests: false });

let release: () => void = () => undefined;
let held = new Promise<void>((resolve) => {
  release = resolve;
});

// The text splits into exactly `deltas` pieces of DELTA_CHARS characters.
const text = "lorem ipsum dolor si".repeat(deltas).slice(0, deltas * DELTA_CHARS);
fake.reply((body) => {
  const metadata = body.metadata as { user_id?: unknown } | undefined;
  const hold = metadata?.user_id === HOLD_USER ? { afterEvents: holdAfter, until: held } : undefined;
  return {
    content: [{ type: "text", text }],
    usage: { input_tokens: 100, output_tokens: 250 },
    streaming: { pieces: deltas, ...(hold ? { hold } : {}) },
  };
});

serveCommands(
  {
    release: async () => {
      const done = release;
      held = new Promise<void>((resolve) => {
        release = resolve;
      });
      done();
      return null;
    },
  },
  () => fake.close(),
);

process.stdout.write(
  `${JSON.stringify({ url: fake.url, apiKey: fake.apiKey, pid: process.pid } satisfies UpstreamInfo)}\n`,
);
