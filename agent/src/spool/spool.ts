/**
 * The agent's spool: a durable FIFO of session events between the proxy, which
 * records them, and the AgentLink, which sends them to the control plane. A record
 * leaves the spool only after the control plane acknowledges that it is durable
 * in the store, so neither an agent crash nor a control-plane outage loses events.
 *
 * On-disk format, version 1. All integers are little-endian.
 *
 * ```text
 * <dir>/00000000000000000001.seg  segment: records only, no file header. Named by the
 *                                 seq of its first record, zero-padded to 20 digits
 *                                 (any u64), so name order is seq order.
 * <dir>/state.json                {"format":"gatehouse-spool","version":1,
 *                                  "ackedSeq":N,"reservedSeq":M}
 * <dir>/state.json.tmp            a state write in progress; removed at open.
 *
 * record:  offset 0   u32  payload length L
 *                 4   u32  CRC-32 (zlib) of bytes 8..16+L: the seq bytes, then the payload
 *                 8   u64  seq
 *                16   L    payload: sessionEventCodec.encode(event), a protobuf SessionEvent
 * ```
 *
 * - Within a segment seqs are consecutive. Each process run writes to new segments
 *   only, so a torn write can only ever sit at the tail of the newest segment, which
 *   open() cuts off. Anything wrong before that is reported with file and offset,
 *   never skipped. A segment is fdatasync'ed before the next one is started.
 * - `ackedSeq`: every record with seq <= ackedSeq is durable in the control plane's
 *   store. Segments whose records are all acknowledged are deleted.
 * - `reservedSeq`: no record with a seq above it has been written. Records become readable (and so
 *   sendable) once they are in the page cache, before they are fsync'ed, so a power loss
 *   can take away records the control plane has already seen. Persisting a reservation
 *   (in blocks of {@link RESERVATION_BLOCK}) before any seq above it is written lets the
 *   next run start above every seq that may have been sent. A clean close lowers the
 *   reservation to the last seq used, so seqs continue without a gap; after a crash they
 *   jump, and are strictly increasing but not consecutive across the restart.
 *
 * @see https://nodejs.org/api/zlib.html#zlibcrc32data-value
 * @see https://man7.org/linux/man-pages/man2/fdatasync.2.html
 * @see https://man7.org/linux/man-pages/man2/rename.2.html (atomic replacement of state.json)
 */
import { EventEmitter } from "node:events";
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { crc32 } from "node:zlib";
import { type SessionEvent, type SessionEvent__Output, sessionEventCodec } from "@gatehouse/proto";
import { GatehouseError } from "@gatehouse/proto/errors";

/**
 * One spooled event and its spool sequence number (the seq the control plane
 * acknowledges). The event stays encoded as it is stored, so the link can send it
 * without decoding and re-encoding it.
 */
export class SpoolRecord {
  constructor(
    readonly seq: number,
    /** The encoded SessionEvent. */
    readonly payload: Uint8Array,
  ) {}

  /** The event, decoded. */
  get event(): SessionEvent__Output {
    return sessionEventCodec.decode(this.payload);
  }
}

export interface SpoolOptions {
  /** Directory of the spool; created if missing. One Spool per directory. */
  dir: string;
  /** Roll to a new segment file after this many bytes (default 64 MiB). */
  segmentBytes?: number;
  /**
   * Power-loss window: fdatasync at most this often while there are unsynced writes
   * (default 100 ms). 0 = sync every write batch, before it is reported as written.
   * A process crash loses nothing either way: written records are in the page cache.
   */
  fsyncIntervalMs?: number;
  /**
   * Written records not yet read are kept in memory for fast sending, up to this many
   * bytes (default 64 MiB); beyond that, read() goes to the segment files. Records
   * appended but not yet written are held regardless until their write completes.
   */
  memoryBytes?: number;
  /**
   * Acknowledgements are persisted at most this often (default 1000 ms); 0 = at once.
   * A position not yet persisted when the agent crashes only means that records the
   * control plane already has are sent again, and it stores each event once; so the
   * default saves a file write and two fsyncs per acknowledgement under load.
   */
  ackPersistIntervalMs?: number;
}

/** What open() found on disk and what it repaired. */
export interface SpoolRecovery {
  /** How state.json was: "missing" (a new spool) or "invalid" (unreadable, so seqs skip ahead by a reservation block). */
  state: "ok" | "missing" | "invalid";
  /** Segment files kept. */
  segments: number;
  /** Records on disk not yet acknowledged; read() returns them first. */
  pendingRecords: number;
  /** The torn or corrupt tail cut off the newest segment, if there was one. */
  truncated: { file: string; offset: number; droppedBytes: number; reason: string } | null;
  /** Segment files removed because every record in them was acknowledged, or they were empty. */
  deletedSegments: string[];
  ackedSeq: number;
  /** The seq the next append gets. */
  nextSeq: number;
}

/** Events a Spool emits. */
export interface SpoolEvents {
  /** After each batch write, with the highest written seq: records up to it can now be read. */
  written: [lastWrittenSeq: number];
  /**
   * The spool could not write and stopped accepting events. Emitted only when someone
   * listens; append(), flushed() and close() report the same error either way.
   */
  error: [error: GatehouseError];
}

export const DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_FSYNC_INTERVAL_MS = 100;
export const DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024;
export const DEFAULT_ACK_PERSIST_INTERVAL_MS = 1000;
/** Largest encoded event the spool accepts; bodies are chunked into events far smaller than this. */
export const MAX_RECORD_BYTES = 256 * 1024 * 1024;
/** Seqs reserved per durable state write; see the file comment. */
export const RESERVATION_BLOCK = 2 ** 20;

const HEADER_BYTES = 16;
/** Events hold prompts and responses: only the agent's own user may read the spool. */
const DIR_MODE = 0o700;
const FILE_MODE = 0o600;
const STATE_FILE = "state.json";
const STATE_TMP = "state.json.tmp";
const STATE_FORMAT = "gatehouse-spool";
const SEGMENT_NAME = /^(\d{20})\.seg$/;
/** A (seq, offset) pair is indexed at least this often, so a read scans at most this much to find its start. */
const CHECKPOINT_BYTES = 64 * 1024;
const READ_CHUNK_BYTES = 1024 * 1024;
/** Bounds the buffer one write call concatenates when a large backlog has built up. */
const MAX_WRITE_BYTES = 8 * 1024 * 1024;
const EMPTY = Buffer.alloc(0);

interface Checkpoint {
  seq: number;
  offset: number;
}

interface Segment {
  readonly firstSeq: number;
  readonly path: string;
  /** Seq of the last complete record; firstSeq - 1 while empty. */
  lastSeq: number;
  /** Bytes of complete records: where the next write goes, and where reads stop. */
  size: number;
  readonly checkpoints: Checkpoint[];
}

/** A contiguous range of seqs that exist and are not acknowledged. */
interface Run {
  first: number;
  last: number;
}

interface FlushWaiter {
  seq: number;
  resolve: () => void;
  reject: (error: GatehouseError) => void;
}

interface State {
  ackedSeq: number;
  reservedSeq: number;
}

/**
 * A durable FIFO of session events on local disk.
 *
 * Seqs are strictly increasing. read() never returns acknowledged records, and returns
 * records in seq order; after a crash the seqs may jump (see the file comment), so a
 * sender that batches consecutive seqs must start a new batch at a gap.
 */
export class Spool extends EventEmitter<SpoolEvents> {
  /** What open() found and repaired. */
  readonly recovery: SpoolRecovery;

  private readonly dir: string;
  private readonly segmentBytes: number;
  private readonly fsyncIntervalMs: number;
  private readonly memoryBytes: number;
  private readonly segments: Segment[];
  private active: { segment: Segment; handle: FileHandle } | undefined;

  private nextSeq: number;
  /** Highest seq handed to the writer. */
  private submittedSeq: number;
  private writtenSeq: number;
  private acked: number;
  private reservedSeq: number;
  private persistedAcked: number;
  private readonly runs: Run[];
  private pendingCount: number;

  /** Records of this run not yet dropped: frames[head + k] has seq cacheSeq + k. Unwritten ones are always here. */
  private frames: Buffer[] = [];
  private head = 0;
  private cacheSeq: number;
  private cacheBytesUsed = 0;
  /** Where the previous disk read stopped, so sequential reads need not search. */
  private cursor: { segment: Segment; seq: number; offset: number } | undefined;

  private pumping = false;
  private pumpPromise: Promise<void> = Promise.resolve();
  private syncDue = false;
  private unsynced = false;
  private dirUnsynced = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private readonly flushWaiters: FlushWaiter[] = [];
  private failure: GatehouseError | undefined;

  private stateDirty = false;
  private statePersisting = false;
  private statePromise: Promise<void> = Promise.resolve();
  private readonly ackPersistIntervalMs: number;
  /** A deferred persist of the ack position: its timer, and the promise ack() callers await. */
  private ackPersist:
    | { timer: NodeJS.Timeout; done: Promise<void>; settle: (error?: unknown) => void }
    | undefined;

  private closing = false;
  private closed = false;
  private closePromise: Promise<void> | undefined;

  private constructor(options: Required<SpoolOptions>, recovered: Recovered) {
    super();
    this.dir = options.dir;
    this.segmentBytes = options.segmentBytes;
    this.fsyncIntervalMs = options.fsyncIntervalMs;
    this.memoryBytes = options.memoryBytes;
    this.ackPersistIntervalMs = options.ackPersistIntervalMs;
    this.segments = recovered.segments;
    this.recovery = recovered.report;
    this.nextSeq = recovered.report.nextSeq;
    this.submittedSeq = this.nextSeq - 1;
    this.cacheSeq = this.nextSeq;
    this.acked = recovered.state.ackedSeq;
    this.persistedAcked = this.acked;
    this.reservedSeq = recovered.state.reservedSeq;
    this.writtenSeq = Math.max(recovered.lastSeqOnDisk, this.acked);
    this.runs = [];
    this.pendingCount = 0;
    for (const segment of this.segments) {
      const first = Math.max(segment.firstSeq, this.acked + 1);
      if (first > segment.lastSeq) continue;
      this.runs.push({ first, last: segment.lastSeq });
      this.pendingCount += segment.lastSeq - first + 1;
    }
  }

  /**
   * Opens (creating if needed) the spool in `options.dir` and recovers it: validates every
   * record of every segment that holds unacknowledged records, cuts a torn tail off the
   * newest segment (reported in {@link Spool.recovery}), and deletes segments that are
   * wholly acknowledged. Rejects, naming the file and offset, if a record before the
   * newest segment's tail is corrupt.
   */
  static async open(options: SpoolOptions): Promise<Spool> {
    const resolved: Required<SpoolOptions> = {
      dir: options.dir,
      segmentBytes: checkedOption("segmentBytes", options.segmentBytes, DEFAULT_SEGMENT_BYTES, 1),
      fsyncIntervalMs: checkedOption(
        "fsyncIntervalMs",
        options.fsyncIntervalMs,
        DEFAULT_FSYNC_INTERVAL_MS,
        0,
      ),
      memoryBytes: checkedOption("memoryBytes", options.memoryBytes, DEFAULT_MEMORY_BYTES, 0),
      ackPersistIntervalMs: checkedOption(
        "ackPersistIntervalMs",
        options.ackPersistIntervalMs,
        DEFAULT_ACK_PERSIST_INTERVAL_MS,
        0,
      ),
    };
    return new Spool(resolved, await recover(resolved.dir));
  }

  /** Highest seq whose record is written to its segment file (page cache), or acknowledged. */
  get lastWrittenSeq(): number {
    return this.writtenSeq;
  }

  /** Every record with seq <= ackedSeq is durable in the control plane and gone from the spool. */
  get ackedSeq(): number {
    return this.acked;
  }

  /** Records appended (written or not) and not yet acknowledged; what a heartbeat reports as spool_pending. */
  get pending(): number {
    return this.pendingCount;
  }

  /** Bytes of records held in memory, including those waiting for their write. */
  get cachedBytes(): number {
    return this.cacheBytesUsed;
  }

  /**
   * Queues an event and returns its seq without waiting for I/O. The event is encoded
   * now, so later changes to the object do not affect the record. Appends made in the
   * same tick go to disk in one write, shortly after; await {@link flushed} to know when.
   *
   * @throws GatehouseError GATE_NOT_READY after close() or a write failure,
   *   GATE_BODY_TOO_LARGE if the encoded event exceeds {@link MAX_RECORD_BYTES},
   *   GATE_INTERNAL if the object is not a valid SessionEvent.
   */
  append(event: SessionEvent): number {
    if (this.failure) throw this.failure;
    if (this.closing) throw this.closedError();
    let payload: Uint8Array;
    try {
      payload = sessionEventCodec.encode(event);
    } catch (cause) {
      throw new GatehouseError(
        "GATE_INTERNAL",
        `session event ${event.id ?? ""} cannot be encoded as a SessionEvent; it was not recorded`,
        { cause },
      );
    }
    if (payload.length > MAX_RECORD_BYTES) {
      throw new GatehouseError(
        "GATE_BODY_TOO_LARGE",
        `session event ${event.id ?? ""} encodes to ${payload.length} bytes, more than the spool's limit of ${MAX_RECORD_BYTES}; split the body into smaller chunks`,
      );
    }
    const seq = this.nextSeq++;
    const frame = Buffer.allocUnsafe(HEADER_BYTES + payload.length);
    frame.writeUInt32LE(payload.length, 0);
    frame.writeUInt32LE(seq % 2 ** 32, 8);
    frame.writeUInt32LE(Math.floor(seq / 2 ** 32), 12);
    frame.set(payload, HEADER_BYTES);
    frame.writeUInt32LE(checksum(frame.subarray(8, 16), frame.subarray(HEADER_BYTES)), 4);
    this.frames.push(frame);
    this.cacheBytesUsed += frame.length;
    const run = this.runs.at(-1);
    if (run !== undefined && run.last === seq - 1) run.last = seq;
    else this.runs.push({ first: seq, last: seq });
    this.pendingCount++;
    this.evictForMemory();
    this.kick();
    return seq;
  }

  /** Resolves once every record appended so far is written to its file (page cache); rejects if the spool failed. */
  flushed(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    const target = this.nextSeq - 1;
    // Below cacheSeq means nothing appended in this run is still unwritten (or nothing was appended at all).
    if (target <= this.writtenSeq || target < this.cacheSeq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.flushWaiters.push({ seq: target, resolve, reject });
    });
  }

  /**
   * Written records with seq >= fromSeq (and above ackedSeq), in seq order: at most
   * `maxRecords`, and at most `maxBytes` of records (counted with their 16-byte headers):
   * the read stops before a record that would pass maxBytes, unless it is the first, so
   * an event larger than maxBytes still gets through, on its own.
   * Served from memory while cached, else from the segment files. Records returned are
   * dropped from memory: reading them again (after a reconnect) goes to disk.
   *
   * @throws GatehouseError GATE_INTERNAL if a segment file is corrupt or missing.
   */
  async read(fromSeq: number, maxRecords: number, maxBytes: number): Promise<SpoolRecord[]> {
    if (this.closed) throw this.closedError();
    const records: SpoolRecord[] = [];
    if (maxRecords < 1) return records;
    const limit = this.writtenSeq;
    let bytes = 0;
    let seq = Math.max(Math.ceil(fromSeq), this.acked + 1);
    const full = (): boolean => records.length >= maxRecords || (records.length > 0 && bytes >= maxBytes);
    while (seq <= limit && !full()) {
      if (seq >= this.cacheSeq) {
        for (; seq <= limit && !full(); seq++) {
          const frame = this.frames[this.head + seq - this.cacheSeq];
          if (frame === undefined) break;
          if (records.length > 0 && bytes + frame.length > maxBytes) break;
          records.push(new SpoolRecord(seq, frame.subarray(HEADER_BYTES)));
          bytes += frame.length;
        }
        break;
      }
      const segment = this.segments.find((s) => s.lastSeq >= seq);
      if (segment === undefined) break;
      if (segment.firstSeq > seq) {
        seq = segment.firstSeq;
        continue;
      }
      const last = Math.min(segment.lastSeq, limit, this.cacheSeq - 1);
      const found = await this.readSegment(
        segment,
        seq,
        last,
        maxRecords - records.length,
        maxBytes - bytes,
        records.length > 0,
      );
      if (found === null) {
        // The file went away while we looked: fine if an ack deleted it, fatal otherwise.
        if (this.segments.includes(segment)) {
          throw new GatehouseError(
            "GATE_INTERNAL",
            `spool segment ${segment.path} disappeared while it still held unacknowledged events; something other than the agent removed it`,
          );
        }
        seq = Math.max(seq, this.acked + 1);
        continue;
      }
      if (found.records.length === 0) break;
      records.push(...found.records);
      bytes += found.bytes;
      seq = found.nextSeq;
    }
    const lastRead = records.at(-1);
    if (lastRead !== undefined) this.evictThrough(lastRead.seq);
    return records;
  }

  /**
   * Records that everything with seq <= upToSeq is durable elsewhere. The position is
   * clamped to {@link lastWrittenSeq} (a record not yet written cannot have been sent),
   * never moves backwards, and is persisted to state.json (temp file, fsync, rename)
   * within `ackPersistIntervalMs`; acks meanwhile share one write. Then segments wholly
   * acknowledged are deleted. Resolves when the position is persisted. Ignored after close().
   */
  async ack(upToSeq: number): Promise<void> {
    if (!Number.isSafeInteger(upToSeq) || upToSeq < 0) {
      throw new GatehouseError(
        "GATE_INVALID_REQUEST",
        `spool acknowledgement must be a non-negative integer seq; got ${String(upToSeq)}`,
      );
    }
    if (this.closed) return;
    const target = Math.min(upToSeq, this.writtenSeq);
    if (target <= this.acked) {
      if (this.statePersisting) await this.statePromise;
      return;
    }
    while (this.runs.length > 0) {
      const run = this.runs[0];
      if (run === undefined || run.first > target) break;
      if (run.last <= target) {
        this.pendingCount -= run.last - run.first + 1;
        this.runs.shift();
      } else {
        this.pendingCount -= target - run.first + 1;
        run.first = target + 1;
      }
    }
    this.acked = target;
    this.evictThrough(target);
    await this.persistAckSoon();
  }

  private persistAckSoon(): Promise<void> {
    if (this.ackPersistIntervalMs === 0) return this.persistState();
    if (this.ackPersist === undefined) {
      let settle: (error?: unknown) => void = () => {};
      const done = new Promise<void>((resolve, reject) => {
        settle = (error) => (error === undefined ? resolve() : reject(error));
      });
      // Whoever awaits ack() sees a failure; nobody awaiting is not an unhandled rejection.
      done.catch(() => {});
      const timer = setTimeout(() => this.runDeferredAckPersist(), this.ackPersistIntervalMs);
      this.ackPersist = { timer, done, settle };
    }
    return this.ackPersist.done;
  }

  private runDeferredAckPersist(): void {
    const pending = this.ackPersist;
    if (pending === undefined) return;
    this.ackPersist = undefined;
    clearTimeout(pending.timer);
    this.persistState().then(
      () => pending.settle(),
      (error: unknown) => pending.settle(error),
    );
  }

  /**
   * Stops accepting appends, writes and fsyncs everything pending, persists the ack
   * position, and closes the files. Rejects with the write failure if there was one
   * (then records after {@link lastWrittenSeq} may be missing on disk).
   */
  close(): Promise<void> {
    this.closePromise ??= this.shutDown();
    return this.closePromise;
  }

  private async shutDown(): Promise<void> {
    this.closing = true;
    while (this.pumping) {
      await this.pumpPromise;
    }
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    // A deferred ack persist happens below, with the final state.
    const deferredAck = this.ackPersist;
    this.ackPersist = undefined;
    clearTimeout(deferredAck?.timer);
    let error = this.failure;
    try {
      if (error === undefined) await this.sync();
    } catch (cause) {
      error = this.fail(cause);
    } finally {
      const active = this.active;
      this.active = undefined;
      await active?.handle.close();
    }
    try {
      // Everything used is on disk now, so the next run may continue right after it.
      if (error === undefined) this.reservedSeq = this.nextSeq - 1;
      await this.persistState();
    } catch (cause) {
      error ??= asSpoolError(cause, this.dir, "persist its state");
    }
    deferredAck?.settle(error);
    this.closed = true;
    this.frames = [];
    this.head = 0;
    this.cacheBytesUsed = 0;
    if (error !== undefined) throw error;
  }

  /** Starts the writer on the next turn of the event loop, so that appends of this tick share one write. */
  private kick(): void {
    if (this.pumping || this.failure || this.closed) return;
    this.pumping = true;
    this.pumpPromise = new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.pump());
  }

  /** The only code that touches the active segment's handle: writes, rolls and syncs, one at a time. */
  private async pump(): Promise<void> {
    try {
      for (;;) {
        if (this.failure) break;
        // Sync first when due, so a steady stream of appends cannot stretch the power-loss window.
        if (this.syncDue) await this.sync();
        else if (this.submittedSeq < this.nextSeq - 1) await this.writeBatch();
        else break;
      }
    } catch (cause) {
      this.fail(cause);
    } finally {
      // Synchronously after the last check, so an append that follows always sees the writer idle and kicks it.
      this.pumping = false;
    }
  }

  private async writeBatch(): Promise<void> {
    const first = this.submittedSeq + 1;
    const batch: Buffer[] = [];
    let batchBytes = 0;
    for (let seq = first; seq < this.nextSeq; seq++) {
      const frame = this.frames[this.head + seq - this.cacheSeq];
      if (frame === undefined) throw new Error(`record ${seq} left memory before it was written`);
      if (batch.length > 0 && batchBytes + frame.length > MAX_WRITE_BYTES) break;
      batch.push(frame);
      batchBytes += frame.length;
    }
    const last = first + batch.length - 1;
    this.submittedSeq = last;
    if (last > this.reservedSeq) {
      this.reservedSeq = last + RESERVATION_BLOCK;
      await this.persistState();
    }
    let i = 0;
    while (i < batch.length) {
      const head = batch[i] ?? EMPTY;
      let target = this.active;
      if (
        target === undefined ||
        (target.segment.size > 0 && target.segment.size + head.length > this.segmentBytes)
      ) {
        target = await this.roll(first + i);
      }
      const segment = target.segment;
      let bytes = 0;
      let j = i;
      for (; j < batch.length; j++) {
        const length = batch[j]?.length ?? 0;
        if (j > i && segment.size + bytes + length > this.segmentBytes) break;
        bytes += length;
      }
      const chunk = j - i === 1 ? head : Buffer.concat(batch.slice(i, j), bytes);
      await writeFully(target.handle, chunk, segment.size);
      let offset = segment.size;
      for (let k = i; k < j; k++) {
        addCheckpoint(segment, first + k, offset);
        offset += batch[k]?.length ?? 0;
      }
      segment.size = offset;
      segment.lastSeq = first + j - 1;
      this.unsynced = true;
      i = j;
    }
    if (this.fsyncIntervalMs === 0) await this.sync();
    else this.armSyncTimer();
    this.writtenSeq = last;
    this.evictForMemory();
    while (this.flushWaiters.length > 0) {
      const waiter = this.flushWaiters[0];
      if (waiter === undefined || waiter.seq > last) break;
      this.flushWaiters.shift();
      waiter.resolve();
    }
    // A listener that throws must not be mistaken for a write failure.
    queueMicrotask(() => this.emit("written", last));
  }

  private async roll(firstSeq: number): Promise<{ segment: Segment; handle: FileHandle }> {
    const previous = this.active;
    if (previous !== undefined) {
      // A torn tail is only tolerated in the newest segment, so an older one must be complete on disk.
      try {
        if (this.unsynced) await previous.handle.datasync();
        this.unsynced = false;
      } finally {
        this.active = undefined;
        await previous.handle.close();
      }
    }
    const path = join(this.dir, segmentFileName(firstSeq));
    const handle = await open(path, "wx", FILE_MODE);
    const segment: Segment = { firstSeq, path, lastSeq: firstSeq - 1, size: 0, checkpoints: [] };
    this.segments.push(segment);
    this.active = { segment, handle };
    this.dirUnsynced = true;
    if (previous !== undefined && previous.segment.lastSeq <= this.persistedAcked) {
      // Failing to delete loses nothing: the next open deletes segments the ack covers.
      this.deleteAcknowledgedSegments().catch(() => undefined);
    }
    return this.active;
  }

  private async sync(): Promise<void> {
    this.syncDue = false;
    if (this.unsynced && this.active !== undefined) {
      this.unsynced = false;
      await this.active.handle.datasync();
    }
    if (this.dirUnsynced) {
      this.dirUnsynced = false;
      await syncDirectory(this.dir);
    }
  }

  private armSyncTimer(): void {
    if (this.syncTimer !== undefined) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.syncDue = true;
      this.kick();
    }, this.fsyncIntervalMs);
    this.syncTimer.unref();
  }

  private fail(cause: unknown): GatehouseError {
    if (this.failure) return this.failure;
    const failure = asSpoolError(cause, this.dir, `write events after seq ${this.writtenSeq}`);
    this.failure = failure;
    clearTimeout(this.syncTimer);
    this.syncTimer = undefined;
    for (const waiter of this.flushWaiters.splice(0)) waiter.reject(failure);
    if (this.listenerCount("error") > 0) queueMicrotask(() => this.emit("error", failure));
    return failure;
  }

  /**
   * Writes state.json. Callers that arrive while a write is in flight share the next
   * one, so acks are coalesced to one write per fsync round trip.
   */
  private persistState(): Promise<void> {
    this.stateDirty = true;
    if (!this.statePersisting) {
      this.statePersisting = true;
      this.statePromise = this.runStatePersist();
    }
    return this.statePromise;
  }

  private async runStatePersist(): Promise<void> {
    try {
      while (this.stateDirty) {
        this.stateDirty = false;
        const state: State = { ackedSeq: this.acked, reservedSeq: this.reservedSeq };
        await writeState(this.dir, state);
        this.persistedAcked = Math.max(this.persistedAcked, state.ackedSeq);
        await this.deleteAcknowledgedSegments();
      }
    } finally {
      this.statePersisting = false;
    }
  }

  /** Deletes the oldest segments while every record in them is acknowledged on disk; never the one being written. */
  private async deleteAcknowledgedSegments(): Promise<void> {
    for (;;) {
      const segment = this.segments[0];
      if (segment === undefined || segment === this.active?.segment || segment.lastSeq > this.persistedAcked)
        return;
      this.segments.shift();
      if (this.cursor?.segment === segment) this.cursor = undefined;
      await rm(segment.path, { force: true });
    }
  }

  private async readSegment(
    segment: Segment,
    from: number,
    last: number,
    maxRecords: number,
    maxBytes: number,
    haveSome: boolean,
  ): Promise<{ records: SpoolRecord[]; bytes: number; nextSeq: number } | null> {
    let handle: FileHandle;
    try {
      handle = await open(segment.path, "r");
    } catch (error) {
      if (hasCode(error, "ENOENT")) return null;
      throw asSpoolError(error, this.dir, `read ${segment.path}`);
    }
    try {
      const records: SpoolRecord[] = [];
      let bytes = 0;
      const start = this.startOffset(segment, from);
      const end = await scanFrames(handle, start, segment.size, (frame) => {
        if (frame.offset === start && frame.seq > from) {
          throw new GatehouseError(
            "GATE_INTERNAL",
            `spool index of ${segment.path} points past seq ${from} (offset ${start} holds seq ${frame.seq})`,
          );
        }
        if (frame.seq < from) return true;
        if (frame.seq > last || records.length >= maxRecords) return false;
        if ((haveSome || records.length > 0) && bytes + frame.size > maxBytes) return false;
        records.push(new SpoolRecord(frame.seq, frame.payload));
        bytes += frame.size;
        return true;
      });
      if (end.problem !== null) throw corruptSegment(segment.path, end.offset, end.problem);
      const lastRecord = records.at(-1);
      if (lastRecord === undefined) return { records, bytes, nextSeq: from };
      this.cursor = { segment, seq: lastRecord.seq + 1, offset: end.offset };
      return { records, bytes, nextSeq: lastRecord.seq + 1 };
    } finally {
      await handle.close();
    }
  }

  private startOffset(segment: Segment, seq: number): number {
    if (this.cursor?.segment === segment && this.cursor.seq === seq) return this.cursor.offset;
    const checkpoints = segment.checkpoints;
    let low = 0;
    let high = checkpoints.length - 1;
    let offset = 0;
    while (low <= high) {
      const middle = (low + high) >>> 1;
      const checkpoint = checkpoints[middle];
      if (checkpoint === undefined) break;
      if (checkpoint.seq <= seq) {
        offset = checkpoint.offset;
        low = middle + 1;
      } else {
        high = middle - 1;
      }
    }
    return offset;
  }

  /** Drops written records with seq <= seq from memory. */
  private evictThrough(seq: number): void {
    const upTo = Math.min(seq, this.writtenSeq);
    while (this.cacheSeq <= upTo && this.head < this.frames.length) this.dropFront();
    this.compactCache();
  }

  private evictForMemory(): void {
    while (
      this.cacheBytesUsed > this.memoryBytes &&
      this.cacheSeq <= this.writtenSeq &&
      this.head < this.frames.length
    ) {
      this.dropFront();
    }
    this.compactCache();
  }

  private dropFront(): void {
    this.cacheBytesUsed -= this.frames[this.head]?.length ?? 0;
    this.frames[this.head] = EMPTY;
    this.head++;
    this.cacheSeq++;
  }

  private compactCache(): void {
    if (this.head === this.frames.length) {
      this.frames = [];
      this.head = 0;
    } else if (this.head > 1024 && this.head * 2 > this.frames.length) {
      this.frames = this.frames.slice(this.head);
      this.head = 0;
    }
  }

  private closedError(): GatehouseError {
    return new GatehouseError(
      "GATE_NOT_READY",
      `the event spool in ${this.dir} is closed; the agent is shutting down and records no more events`,
    );
  }
}

// ---------------------------------------------------------------- recovery

interface Recovered {
  segments: Segment[];
  state: State;
  lastSeqOnDisk: number;
  report: SpoolRecovery;
}

async function recover(dir: string): Promise<Recovered> {
  try {
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    await rm(join(dir, STATE_TMP), { force: true });
    const names = (await readdir(dir)).filter((name) => SEGMENT_NAME.test(name)).sort();
    const { state, status } = await readState(dir);
    const segments: Segment[] = [];
    const deletedSegments: string[] = [];
    let truncated: SpoolRecovery["truncated"] = null;
    let lastSeqOnDisk = 0;
    for (const [index, name] of names.entries()) {
      const path = join(dir, name);
      const firstSeq = Number(name.slice(0, 20));
      if (!Number.isSafeInteger(firstSeq) || firstSeq < 1) {
        throw new GatehouseError(
          "GATE_INTERNAL",
          `spool segment ${path} is named for seq ${firstSeq}, outside 1..2^53-1; it was not written by this agent, move it out of ${dir}`,
        );
      }
      const next = names[index + 1];
      if (next !== undefined && Number(next.slice(0, 20)) - 1 <= state.ackedSeq) {
        // Every record is below the next segment's first seq, and that is acknowledged.
        await rm(path, { force: true });
        deletedSegments.push(name);
        lastSeqOnDisk = Math.max(lastSeqOnDisk, Number(next.slice(0, 20)) - 1);
        continue;
      }
      const scanned = await scanSegment(path, firstSeq, next === undefined);
      if (scanned.truncated !== null) truncated = scanned.truncated;
      const segment = scanned.segment;
      const previous = segments.at(-1);
      if (
        previous !== undefined &&
        previous.lastSeq >= segment.firstSeq &&
        segment.lastSeq >= segment.firstSeq
      ) {
        throw corruptSegment(
          path,
          0,
          `its first seq ${segment.firstSeq} is not after ${previous.path}'s last seq ${previous.lastSeq}`,
        );
      }
      lastSeqOnDisk = Math.max(lastSeqOnDisk, segment.lastSeq);
      if (segment.lastSeq < segment.firstSeq || segment.lastSeq <= state.ackedSeq) {
        await rm(path, { force: true });
        deletedSegments.push(name);
        continue;
      }
      segments.push(segment);
    }
    let nextSeq = Math.max(lastSeqOnDisk, state.ackedSeq, state.reservedSeq) + 1;
    // Without a readable reservation, records lost from the page cache may have been sent with higher seqs.
    if (status === "invalid" || (status === "missing" && names.length > 0)) nextSeq += RESERVATION_BLOCK;
    let pendingRecords = 0;
    for (const segment of segments) {
      pendingRecords += segment.lastSeq - Math.max(segment.firstSeq, state.ackedSeq + 1) + 1;
    }
    return {
      segments,
      state,
      lastSeqOnDisk,
      report: {
        state: status,
        segments: segments.length,
        pendingRecords,
        truncated,
        deletedSegments,
        ackedSeq: state.ackedSeq,
        nextSeq,
      },
    };
  } catch (error) {
    throw asSpoolError(error, dir, "open");
  }
}

async function scanSegment(
  path: string,
  firstSeq: number,
  isNewest: boolean,
): Promise<{ segment: Segment; truncated: SpoolRecovery["truncated"] }> {
  const handle = await open(path, isNewest ? "r+" : "r");
  try {
    const size = (await handle.stat()).size;
    const segment: Segment = { firstSeq, path, lastSeq: firstSeq - 1, size: 0, checkpoints: [] };
    const disorder: { message?: string } = {};
    const end = await scanFrames(handle, 0, size, (frame) => {
      if (frame.seq !== segment.lastSeq + 1) {
        disorder.message = `record has seq ${frame.seq} where ${segment.lastSeq + 1} belongs`;
        return false;
      }
      addCheckpoint(segment, frame.seq, frame.offset);
      segment.lastSeq = frame.seq;
      return true;
    });
    // A record with a valid checksum in the wrong place was written wrongly, not torn: never cut it off.
    if (disorder.message !== undefined) throw corruptSegment(path, end.offset, disorder.message);
    segment.size = end.offset;
    if (end.problem === null) return { segment, truncated: null };
    if (!isNewest) throw corruptSegment(path, end.offset, end.problem);
    await handle.truncate(end.offset);
    await handle.datasync();
    return {
      segment,
      truncated: { file: path, offset: end.offset, droppedBytes: size - end.offset, reason: end.problem },
    };
  } finally {
    await handle.close();
  }
}

async function readState(dir: string): Promise<{ state: State; status: SpoolRecovery["state"] }> {
  let text: string;
  try {
    text = await readFile(join(dir, STATE_FILE), "utf8");
  } catch (error) {
    if (hasCode(error, "ENOENT")) return { state: { ackedSeq: 0, reservedSeq: 0 }, status: "missing" };
    throw error;
  }
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value === "object" && value !== null) {
      const { format, version, ackedSeq, reservedSeq } = value as Record<string, unknown>;
      if (format === STATE_FORMAT && version === 1 && isSeq(ackedSeq) && isSeq(reservedSeq)) {
        return { state: { ackedSeq, reservedSeq }, status: "ok" };
      }
    }
  } catch {
    // Unparseable: handled as invalid below.
  }
  return { state: { ackedSeq: 0, reservedSeq: 0 }, status: "invalid" };
}

async function writeState(dir: string, state: State): Promise<void> {
  const temporary = join(dir, STATE_TMP);
  const handle = await open(temporary, "w", FILE_MODE);
  try {
    await handle.writeFile(`${JSON.stringify({ format: STATE_FORMAT, version: 1, ...state })}\n`);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await rename(temporary, join(dir, STATE_FILE));
  await syncDirectory(dir);
}

// ---------------------------------------------------------------- records

interface Frame {
  seq: number;
  /** Offset of the record header in the file. */
  offset: number;
  /** Header plus payload. */
  size: number;
  payload: Buffer;
}

/**
 * Reads records from `start` up to `end`, calling `visit` for each valid one until it
 * returns false (that record then counts as not consumed). Returns the offset after the
 * last consumed record, and why the scan stopped early if the data was bad there.
 */
async function scanFrames(
  handle: FileHandle,
  start: number,
  end: number,
  visit: (frame: Frame) => boolean,
): Promise<{ offset: number; problem: string | null }> {
  let buffer = EMPTY;
  let bufferOffset = start;
  let position = 0;
  let fileOffset = start;
  for (;;) {
    let needed = HEADER_BYTES;
    while (buffer.length - position >= HEADER_BYTES) {
      const length = buffer.readUInt32LE(position);
      const offset = bufferOffset + position;
      if (length > MAX_RECORD_BYTES) {
        return { offset, problem: `record length ${length} exceeds the limit of ${MAX_RECORD_BYTES}` };
      }
      if (buffer.length - position < HEADER_BYTES + length) {
        needed = HEADER_BYTES + length;
        break;
      }
      const payload = buffer.subarray(position + HEADER_BYTES, position + HEADER_BYTES + length);
      if (
        checksum(buffer.subarray(position + 8, position + 16), payload) !== buffer.readUInt32LE(position + 4)
      ) {
        return { offset, problem: "checksum mismatch" };
      }
      const high = buffer.readUInt32LE(position + 12);
      if (high >= 2 ** 21) return { offset, problem: "seq beyond 2^53" };
      const seq = high * 2 ** 32 + buffer.readUInt32LE(position + 8);
      if (!visit({ seq, offset, size: HEADER_BYTES + length, payload })) return { offset, problem: null };
      position += HEADER_BYTES + length;
    }
    const rest = buffer.subarray(position);
    if (fileOffset >= end) {
      return {
        offset: bufferOffset + position,
        problem:
          rest.length === 0 ? null : `incomplete record: ${rest.length} bytes where ${needed} were expected`,
      };
    }
    const toRead = Math.min(end - fileOffset, Math.max(READ_CHUNK_BYTES, needed - rest.length));
    const next = Buffer.allocUnsafe(rest.length + toRead);
    rest.copy(next, 0);
    const { bytesRead } = await handle.read(next, rest.length, toRead, fileOffset);
    // A file shorter than expected ends here; the bytes read so far decide the outcome.
    fileOffset = bytesRead === 0 ? end : fileOffset + bytesRead;
    bufferOffset += position;
    buffer = next.subarray(0, rest.length + bytesRead);
    position = 0;
  }
}

function checksum(seqBytes: Buffer, payload: Buffer): number {
  return crc32(payload, crc32(seqBytes));
}

function addCheckpoint(segment: Segment, seq: number, offset: number): void {
  const last = segment.checkpoints.at(-1);
  if (last === undefined || offset - last.offset >= CHECKPOINT_BYTES)
    segment.checkpoints.push({ seq, offset });
}

async function writeFully(handle: FileHandle, buffer: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < buffer.length) {
    const { bytesWritten } = await handle.write(buffer, done, buffer.length - done, position + done);
    if (bytesWritten === 0) throw new Error("the file system accepted no bytes");
    done += bytesWritten;
  }
}

/** Makes a file creation, deletion or rename in `dir` durable. */
async function syncDirectory(dir: string): Promise<void> {
  // Windows cannot open a directory for flushing; NTFS journals the metadata itself.
  if (process.platform === "win32") return;
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function segmentFileName(firstSeq: number): string {
  return `${String(firstSeq).padStart(20, "0")}.seg`;
}

function isSeq(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

function hasCode(error: unknown, code: string): boolean {
  return error instanceof Error && (error as NodeJS.ErrnoException).code === code;
}

function corruptSegment(path: string, offset: number, problem: string): GatehouseError {
  return new GatehouseError(
    "GATE_INTERNAL",
    `spool segment ${path} is corrupt at byte offset ${offset} (${problem}). Restore the file, or move it out of the spool directory to start without it; its unacknowledged events will then never reach the control plane`,
  );
}

function asSpoolError(error: unknown, dir: string, action: string): GatehouseError {
  if (error instanceof GatehouseError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new GatehouseError(
    "GATE_NOT_READY",
    `the event spool in ${dir} could not ${action}: ${detail}. Check free space and permissions there, then restart the agent`,
    { cause: error },
  );
}

function checkedOption(name: string, value: number | undefined, fallback: number, minimum: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < minimum) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `spool option ${name} must be an integer >= ${minimum}; got ${String(value)}`,
    );
  }
  return value;
}
