import assert from "node:assert/strict";
import {
  appendFile,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rm,
  stat,
  truncate,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Spool, type SpoolOptions, SpoolRecord } from "@gatehouse/agent/spool/spool.js";
import { type SessionEvent, sessionEventCodec } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";
import fc from "fast-check";

/** Most tests check the persisted ack position right after ack() resolves, so they persist at once. */
function openSpool(options: SpoolOptions): Promise<Spool> {
  return Spool.open({ ackPersistIntervalMs: 0, ...options });
}

const HEADER_BYTES = 16;

/** A response-body event of a fixed size for a given body length (ids are zero-padded). */
function event(i: number, bodyBytes = 400): SessionEvent {
  const exchange = `x${String(i).padStart(8, "0")}`;
  const body = Buffer.alloc(bodyBytes, `body of event ${i};`);
  return {
    id: `${exchange}:0`,
    sessionId: "s1",
    exchangeId: exchange,
    timeUnixMicros: 1_700_000_000_000_000 + i,
    responseBody: { data: body },
  };
}

function frameBytes(e: SessionEvent): number {
  return HEADER_BYTES + sessionEventCodec.encode(e).length;
}

async function withDir(run: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), "gatehouse-spool-"));
  try {
    await run(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Everything read() hands out from `from` on, page by page, the way a sender drains the spool. */
async function drain(spool: Spool, from = 0, pageRecords = 64, pageBytes = 1 << 20): Promise<SpoolRecord[]> {
  const all: SpoolRecord[] = [];
  let next = from;
  for (;;) {
    const page = await spool.read(next, pageRecords, pageBytes);
    const last = page.at(-1);
    if (last === undefined) return all;
    all.push(...page);
    next = last.seq + 1;
  }
}

function ids(records: SpoolRecord[]): string[] {
  return records.map((r) => r.event.id);
}

function idRange(first: number, last: number): string[] {
  const out: string[] = [];
  for (let i = first; i <= last; i++) out.push(`x${String(i).padStart(8, "0")}:0`);
  return out;
}

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => name.endsWith(".seg")).sort();
}

function segName(seq: number): string {
  return `${String(seq).padStart(20, "0")}.seg`;
}

async function appendAll(spool: Spool, first: number, last: number, bodyBytes?: number): Promise<number[]> {
  const seqs: number[] = [];
  for (let i = first; i <= last; i++) seqs.push(spool.append(event(i, bodyBytes)));
  await spool.flushed();
  return seqs;
}

describe("Spool", () => {
  test("reads records in append order with their content, and never returns acknowledged ones", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir });
      const written: number[] = [];
      spool.on("written", (seq) => written.push(seq));
      const seqs = await appendAll(spool, 1, 100);
      assert.deepEqual(
        seqs,
        Array.from({ length: 100 }, (_, k) => k + 1),
      );
      assert.equal(spool.lastWrittenSeq, 100);
      assert.equal(spool.pending, 100);

      const all = await spool.read(0, 1000, 1 << 30);
      assert.deepEqual(ids(all), idRange(1, 100));
      assert.deepEqual(
        all.map((r) => r.seq),
        seqs,
      );
      const first = all[0]?.event;
      assert.equal(first?.payload, "responseBody");
      assert.equal(first?.timeUnixMicros, 1_700_000_000_000_001);
      assert.deepEqual(first?.responseBody?.data, event(1).responseBody?.data);

      await spool.ack(40);
      assert.equal(spool.ackedSeq, 40);
      assert.equal(spool.pending, 60);
      assert.deepEqual(ids(await drain(spool, 0)), idRange(41, 100));
      assert.deepEqual(ids(await spool.read(41, 10, 1 << 30)), idRange(41, 50));
      // maxBytes smaller than one record still yields one, or a sender would stall.
      assert.deepEqual(ids(await spool.read(41, 10, 1)), idRange(41, 41));

      // Acknowledgements never move backwards.
      await spool.ack(10);
      assert.equal(spool.ackedSeq, 40);
      await spool.close();
      assert.equal(written.at(-1), 100);
    });
  });

  test("appends made while a write is in flight are written after it, in order", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir });
      let next = 11;
      spool.on("written", () => {
        if (next > 60) return;
        for (const end = next + 10; next < end; next++) spool.append(event(next));
      });
      await appendAll(spool, 1, 10);
      while (spool.lastWrittenSeq < 60) await new Promise((resolve) => spool.once("written", resolve));
      assert.deepEqual(ids(await drain(spool)), idRange(1, 60));
      await spool.close();
    });
  });

  test("reopening after close returns exactly the unacknowledged records, and seqs continue without a gap", async () => {
    await withDir(async (dir) => {
      const first = await openSpool({ dir });
      await appendAll(first, 1, 50);
      await first.ack(20);
      await first.close();

      const second = await openSpool({ dir });
      assert.equal(second.recovery.state, "ok");
      assert.equal(second.recovery.pendingRecords, 30);
      assert.equal(second.recovery.truncated, null);
      assert.equal(second.ackedSeq, 20);
      assert.equal(second.pending, 30);
      assert.deepEqual(ids(await drain(second)), idRange(21, 50));
      assert.equal(second.append(event(51)), 51);
      await second.close();

      const third = await openSpool({ dir });
      assert.deepEqual(
        (await drain(third)).map((r) => r.seq),
        idRange(21, 51).map((_, k) => 21 + k),
      );
      await third.close();
    });
  });

  test("an ack beyond the written records is clamped, so records appended later are kept", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir });
      await appendAll(spool, 1, 5);
      await spool.ack(1000);
      assert.equal(spool.ackedSeq, 5);
      assert.equal(spool.pending, 0);
      await appendAll(spool, 6, 10);
      assert.equal(spool.pending, 5);
      assert.deepEqual(ids(await drain(spool)), idRange(6, 10));
      await spool.close();

      const reopened = await openSpool({ dir });
      assert.deepEqual(ids(await drain(reopened)), idRange(6, 10));
      await reopened.close();
    });
  });

  test("close while writes are in flight writes everything first; appends after close are refused", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir, fsyncIntervalMs: 0 });
      for (let i = 1; i <= 1000; i++) spool.append(event(i));
      const closing = spool.close();
      assert.throws(
        () => spool.append(event(1001)),
        (error: unknown) => error instanceof GatehouseError && error.code === "GATE_NOT_READY",
      );
      await closing;
      await spool.ack(1000); // after close: ignored, not an error

      const reopened = await openSpool({ dir });
      assert.equal(reopened.ackedSeq, 0);
      assert.deepEqual(ids(await drain(reopened)), idRange(1, 1000));
      await reopened.close();
    });
  });

  test("an empty or missing directory opens as an empty spool; bad options are refused by name", async () => {
    await withDir(async (dir) => {
      await assert.rejects(openSpool({ dir, segmentBytes: 0 }), (error: unknown) => {
        assert.ok(error instanceof GatehouseError);
        assert.equal(error.code, "GATE_CONFIG_INVALID");
        assert.match(error.message, /segmentBytes/);
        return true;
      });
      for (const path of [dir, join(dir, "not", "yet", "there")]) {
        const spool = await openSpool({ dir: path });
        assert.equal(spool.recovery.state, "missing");
        assert.equal(spool.pending, 0);
        assert.deepEqual(await spool.read(0, 10, 1 << 20), []);
        await spool.flushed();
        assert.equal(spool.append(event(1)), 1);
        await spool.close();
      }
    });
  });

  test("a record torn in half at the tail is cut off; earlier records survive and its seq is never reused", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir });
      await appendAll(spool, 1, 10);
      await spool.close();
      const [segment] = await segmentFiles(dir);
      assert.ok(segment !== undefined);
      const path = join(dir, segment);
      const size = (await stat(path)).size;
      await truncate(path, size - 7);

      const reopened = await openSpool({ dir });
      assert.deepEqual(reopened.recovery.truncated, {
        file: path,
        offset: size - frameBytes(event(10)),
        droppedBytes: frameBytes(event(10)) - 7,
        reason: `incomplete record: ${frameBytes(event(10)) - 7} bytes where ${frameBytes(event(10))} were expected`,
      });
      assert.deepEqual(ids(await drain(reopened)), idRange(1, 9));
      // Record 10 was readable before the crash, so it may have been sent: 10 must not name another event.
      assert.equal(reopened.append(event(11)), 11);
      await reopened.close();

      const again = await openSpool({ dir });
      assert.equal(again.recovery.truncated, null);
      assert.deepEqual(
        (await drain(again)).map((r) => r.seq),
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 11],
      );
      await again.close();
    });
  });

  test("garbage after the last record is cut off and every record survives", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir });
      await appendAll(spool, 1, 10);
      await spool.close();
      const [segment] = await segmentFiles(dir);
      assert.ok(segment !== undefined);
      const path = join(dir, segment);
      const size = (await stat(path)).size;
      await appendFile(path, Buffer.from("\x08\x00\x00\x00this is not a spool record, it is noise"));

      const reopened = await openSpool({ dir });
      assert.equal(reopened.recovery.truncated?.offset, size);
      assert.equal(reopened.recovery.truncated?.reason, "checksum mismatch");
      assert.equal((await stat(path)).size, size);
      assert.deepEqual(ids(await drain(reopened)), idRange(1, 10));
      await reopened.close();
    });
  });

  test("corruption inside an older segment fails open, naming the file and offset, instead of skipping records", async () => {
    await withDir(async (dir) => {
      const frame = frameBytes(event(1));
      const spool = await openSpool({ dir, segmentBytes: 4 * frame });
      await appendAll(spool, 1, 12);
      await spool.close();
      const path = join(dir, segName(1));
      const bytes = await readFile(path);
      const target = 2 * frame + HEADER_BYTES + 20; // inside record 3's payload
      bytes[target] = (bytes[target] ?? 0) ^ 0xff;
      await writeFile(path, bytes);

      await assert.rejects(openSpool({ dir }), (error: unknown) => {
        assert.ok(error instanceof GatehouseError);
        assert.equal(error.code, "GATE_INTERNAL");
        assert.match(
          error.message,
          new RegExp(`${segName(1)} is corrupt at byte offset ${2 * frame} \\(checksum mismatch\\)`),
        );
        return true;
      });
    });
  });

  test("segments roll at segmentBytes and are deleted once every record in them is acknowledged", async () => {
    await withDir(async (dir) => {
      const frame = frameBytes(event(1));
      const spool = await openSpool({ dir, segmentBytes: 4 * frame });
      await appendAll(spool, 1, 18);
      assert.deepEqual(await segmentFiles(dir), [1, 5, 9, 13, 17].map(segName));
      assert.ok((await stat(join(dir, segName(1)))).size === 4 * frame);

      await spool.ack(10);
      assert.deepEqual(await segmentFiles(dir), [9, 13, 17].map(segName));
      assert.deepEqual(ids(await drain(spool)), idRange(11, 18));

      // The segment being written is kept even when all of it is acknowledged.
      await spool.ack(18);
      assert.deepEqual(await segmentFiles(dir), [17].map(segName));
      // Once closed it is no longer being written, so it goes too.
      await spool.close();
      assert.deepEqual(await segmentFiles(dir), []);

      const reopened = await openSpool({ dir, segmentBytes: 4 * frame });
      assert.deepEqual(await drain(reopened), []);
      assert.equal(reopened.append(event(19)), 19);
      await reopened.close();
      assert.deepEqual(await segmentFiles(dir), [segName(19)]);
    });
  });

  test("segments the persisted ack covers are deleted at open (crash between ack and delete)", async () => {
    await withDir(async (dir) => {
      const frame = frameBytes(event(1));
      const spool = await openSpool({ dir, segmentBytes: 4 * frame });
      await appendAll(spool, 1, 12);
      const saved = join(dir, "saved");
      await mkdir(saved);
      for (const name of await segmentFiles(dir)) await copyFile(join(dir, name), join(saved, name));
      await spool.ack(9);
      await spool.close();
      for (const name of await readdir(saved)) await copyFile(join(saved, name), join(dir, name));
      assert.deepEqual(await segmentFiles(dir), [1, 5, 9].map(segName));

      const reopened = await openSpool({ dir, segmentBytes: 4 * frame });
      assert.deepEqual(reopened.recovery.deletedSegments, [1, 5].map(segName));
      assert.deepEqual(await segmentFiles(dir), [segName(9)]);
      assert.equal(reopened.pending, 3);
      assert.deepEqual(ids(await drain(reopened)), idRange(10, 12));
      await reopened.close();
    });
  });

  test("beyond memoryBytes, records are read back from the segment files", async () => {
    await withDir(async (dir) => {
      const memoryBytes = 4 * frameBytes(event(1));
      const spool = await openSpool({ dir, memoryBytes, segmentBytes: 64 * 1024 });
      await appendAll(spool, 1, 300);
      assert.ok(spool.cachedBytes <= memoryBytes, `${spool.cachedBytes} bytes cached`);
      assert.deepEqual(ids(await drain(spool, 0, 7)), idRange(1, 300));
      // Random access, not only sequential draining.
      assert.deepEqual(ids(await spool.read(150, 3, 1 << 20)), idRange(150, 152));
      assert.deepEqual(ids(await spool.read(20, 2, 1 << 20)), idRange(20, 21));
      await spool.close();
    });
  });

  test("random reads inside a segment of over a MiB start at the right record", async () => {
    await withDir(async (dir) => {
      const spool = await openSpool({ dir, memoryBytes: 0 });
      await appendAll(spool, 1, 1500, 1000);
      // Backwards, so every read has to find its start from the index rather than the previous read.
      for (let from = 1500; from >= 1; from--) {
        const [record] = await spool.read(from, 1, 1 << 20);
        assert.equal(record?.seq, from);
      }
      assert.deepEqual(ids(await drain(spool, 0, 500)), idRange(1, 1500));
      await spool.close();
    });
  });

  test("acks are persisted within ackPersistIntervalMs; a crash before that only means resending acknowledged records", async () => {
    await withDir(async (dir) => {
      const spool = await Spool.open({ dir, ackPersistIntervalMs: 60_000 });
      await appendAll(spool, 1, 30);
      const persisted = spool.ack(20);
      assert.equal(spool.ackedSeq, 20, "the position moves at once in memory");
      assert.equal(spool.pending, 10);
      // A crash now (before the deferred write): the next run resends 1..30, which the control plane dedupes.
      const early = await Spool.open({ dir, ackPersistIntervalMs: 0 });
      assert.deepEqual(ids(await drain(early)), idRange(1, 30));
      await early.close();
      // close() writes the deferred position at once and settles the ack's promise.
      await spool.close();
      await persisted;
      const later = await Spool.open({ dir, ackPersistIntervalMs: 0 });
      assert.deepEqual(ids(await drain(later)), idRange(21, 30));
      await later.close();
    });
  });

  test("a deferred ack is written once its interval has passed, without a close", async () => {
    await withDir(async (dir) => {
      const spool = await Spool.open({ dir, ackPersistIntervalMs: 20 });
      await appendAll(spool, 1, 10);
      await spool.ack(7);
      const reopened = await Spool.open({ dir, ackPersistIntervalMs: 0 });
      assert.deepEqual(ids(await drain(reopened)), idRange(8, 10));
      await reopened.close();
      await spool.close();
    });
  });

  test("after a crash (no close) a new Spool finds every flushed record and continues above every seq used", async () => {
    await withDir(async (dir) => {
      const crashed = await openSpool({ dir, segmentBytes: 256 * 1024 });
      await appendAll(crashed, 1, 2000);
      await crashed.ack(100);

      // Like a restart after kill -9: the first instance never closes its files.
      const restarted = await openSpool({ dir, segmentBytes: 256 * 1024 });
      assert.equal(restarted.recovery.truncated, null);
      assert.equal(restarted.ackedSeq, 100);
      assert.equal(restarted.recovery.pendingRecords, 1900);
      assert.deepEqual(ids(await drain(restarted)), idRange(101, 2000));
      const seq = restarted.append(event(2001));
      assert.ok(seq > 2000, `next seq ${seq}`);
      await restarted.flushed();
      const tail = await drain(restarted);
      assert.equal(tail.at(-1)?.seq, seq);
      assert.equal(tail.length, 1901);
      await restarted.close();
      await crashed.close();
    });
  });

  test("records lost in a power failure after they could be read never have their seqs reused", async () => {
    await withDir(async (dir) => {
      const crashed = await openSpool({ dir });
      await appendAll(crashed, 1, 100);
      assert.equal((await drain(crashed)).length, 100); // the sender may have sent all of them
      await crashed.ack(10);
      // The page cache dies with the machine: only part of the segment reached the disk.
      const path = join(dir, segName(1));
      await truncate(path, Math.floor((await stat(path)).size / 2) + 3);

      const restarted = await openSpool({ dir });
      assert.ok(restarted.recovery.truncated !== null);
      const survivors = await drain(restarted);
      assert.ok(survivors.length < 100);
      assert.deepEqual(ids(survivors), idRange(11, 10 + survivors.length));
      const seq = restarted.append(event(101));
      assert.ok(seq > 100, `seq ${seq} may already name another event at the control plane`);
      await restarted.close();
      await crashed.close();
    });
  });

  test("1 MiB events round-trip through memory and through the segment files", async () => {
    await withDir(async (dir) => {
      const big = 1024 * 1024;
      const options: SpoolOptions = { dir, segmentBytes: 256 * 1024 };
      const spool = await openSpool(options);
      spool.append(event(1, big));
      spool.append(event(2, 10));
      spool.append(event(3, big));
      await spool.flushed();
      // Each big record is larger than a segment, so it gets one of its own.
      assert.deepEqual(await segmentFiles(dir), [1, 2, 3].map(segName));
      const fromMemory = await drain(spool, 0, 10, 1);
      assert.deepEqual(ids(fromMemory), idRange(1, 3));
      assert.deepEqual(fromMemory[0]?.event.responseBody?.data, event(1, big).responseBody?.data);
      await spool.close();

      const reopened = await openSpool(options);
      const fromDisk = await drain(reopened, 0, 10, 1);
      assert.deepEqual(
        fromDisk.map((r) => r.event.responseBody?.data.length),
        [big, 10, big],
      );
      assert.deepEqual(fromDisk[2]?.event.responseBody?.data, event(3, big).responseBody?.data);
      await reopened.close();
    });
  });

  test("a tail cut anywhere, with or without trailing noise, keeps exactly the whole records before the cut", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 20 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.uint8Array({ maxLength: 64 }),
        async (bodySizes, cutAt, noise) => {
          await withDir(async (dir) => {
            const spool = await openSpool({ dir });
            const ends: number[] = [];
            let size = 0;
            for (const [k, bytes] of bodySizes.entries()) {
              spool.append(event(k + 1, bytes));
              size += frameBytes(event(k + 1, bytes));
              ends.push(size);
            }
            await spool.close();
            const path = join(dir, segName(1));
            const original = await readFile(path);
            const cut = Math.floor(cutAt * size);
            await truncate(path, cut);
            await appendFile(path, noise);

            const reopened = await openSpool({ dir });
            // Whole records are those the file still holds byte for byte. Regression: noise can
            // put back the very bytes the cut removed (a record of spaces cut one byte short, then
            // a space), and that record is whole again; counting by the cut alone said it was not.
            const file = Buffer.concat([original.subarray(0, cut), noise]);
            const kept = ends.filter(
              (end) => end <= file.length && file.subarray(0, end).equals(original.subarray(0, end)),
            ).length;
            assert.deepEqual(ids(await drain(reopened)), idRange(1, kept));
            const tailBytes = file.length - (ends[kept - 1] ?? 0);
            assert.equal(reopened.recovery.truncated?.droppedBytes ?? 0, tailBytes);
            assert.equal(reopened.append(event(99)), bodySizes.length + 1);
            await reopened.close();
          });
        },
      ),
      { numRuns: 40 },
    );
  });

  test("any mix of appends, acks, clean restarts and crashes delivers every unacknowledged record once, in order", async () => {
    type Step =
      | { kind: "append"; count: number; bodyBytes: number }
      | { kind: "ack"; fraction: number }
      | { kind: "restart"; crash: boolean };
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({
        kind: fc.constant("append" as const),
        count: fc.integer({ min: 1, max: 40 }),
        bodyBytes: fc.integer({ min: 0, max: 1500 }),
      }),
      fc.record({ kind: fc.constant("ack" as const), fraction: fc.double({ min: 0, max: 1, noNaN: true }) }),
      fc.record({ kind: fc.constant("restart" as const), crash: fc.boolean() }),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 1, maxLength: 12 }),
        fc.integer({ min: 0, max: 20_000 }),
        async (steps, memoryBytes) => {
          await withDir(async (dir) => {
            const options: SpoolOptions = { dir, segmentBytes: 8 * 1024, memoryBytes };
            const abandoned: Spool[] = [];
            let spool = await openSpool(options);
            let expected: SpoolRecord[] = [];
            let highestSeq = 0;
            let n = 0;
            try {
              for (const s of steps) {
                if (s.kind === "append") {
                  for (let k = 0; k < s.count; k++) {
                    const e = event(++n, s.bodyBytes);
                    const seq = spool.append(e);
                    assert.ok(seq > highestSeq, `seq ${seq} after ${highestSeq}`);
                    highestSeq = seq;
                    expected.push(new SpoolRecord(seq, sessionEventCodec.encode(e)));
                  }
                } else if (s.kind === "ack") {
                  await spool.flushed();
                  const upTo = expected[Math.floor(s.fraction * expected.length)]?.seq ?? spool.ackedSeq;
                  await spool.ack(upTo);
                  expected = expected.filter((r) => r.seq > upTo);
                } else {
                  if (s.crash) {
                    await spool.flushed();
                    abandoned.push(spool);
                  } else {
                    await spool.close();
                  }
                  spool = await openSpool(options);
                }
                assert.equal(spool.pending, expected.length);
              }
              await spool.flushed();
              const got = await drain(spool, 0, 13, 4096);
              assert.deepEqual(
                got.map((r) => r.seq),
                expected.map((r) => r.seq),
              );
              assert.deepEqual(
                got.map((r) => [r.seq, r.event]),
                expected.map((r) => [r.seq, r.event]),
              );
            } finally {
              await spool.close();
              for (const old of abandoned) await old.close();
            }
          });
        },
      ),
      { numRuns: 30 },
    );
  });
});
