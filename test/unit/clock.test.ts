/** The agent's system clock: timed work far in the future runs then, not at once. */
import assert from "node:assert/strict";
import { afterEach, describe, mock, test } from "node:test";
import { MAX_TIMER_MS, systemClock } from "@gatehouse/agent/clock.js";

describe("systemClock.after", () => {
  afterEach(() => mock.reset());

  test("a delay beyond setTimeout's limit is waited out in steps, and the task runs only at its time", () => {
    // Regression: Node runs a setTimeout longer than 2^31-1 ms after 1 ms, so a token with a
    // 45-day TTL (renewed at 2/3 of it, 30 days) was renewed again and again.
    mock.timers.enable({ apis: ["Date"], now: 0 });
    const armed: { delay: number; run: () => void }[] = [];
    mock.method(globalThis, "setTimeout", (run: () => void, delay: number) => {
      armed.push({ delay, run });
      return { unref: () => {} };
    });
    const thirtyDays = 30 * 86_400_000;
    let ran = 0;
    systemClock.after(thirtyDays, () => ran++);
    assert.equal(armed[0]?.delay, MAX_TIMER_MS);

    mock.timers.setTime(MAX_TIMER_MS);
    armed[0]?.run();
    assert.equal(ran, 0, "not due yet");
    assert.equal(armed[1]?.delay, thirtyDays - MAX_TIMER_MS);

    mock.timers.setTime(thirtyDays);
    armed[1]?.run();
    assert.equal(ran, 1);
  });

  test("a short delay is one timer", () => {
    mock.timers.enable({ apis: ["Date"], now: 0 });
    const delays: number[] = [];
    mock.method(globalThis, "setTimeout", (_run: () => void, delay: number) => {
      delays.push(delay);
      return { unref: () => {} };
    });
    systemClock.after(40_000, () => {});
    assert.deepEqual(delays, [40_000]);
  });
});
