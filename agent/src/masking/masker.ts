/**
 * Masks secrets in text: whole strings (`Masker.mask`), or text that arrives in pieces
 * (`StreamMasker`), which releases everything it can at once and holds back only a bounded
 * tail that might still turn out to be part of a secret.
 *
 * Pure code: no I/O, no clock.
 */
import { GatehouseError } from "@gatehouse/proto/errors";
import { MASKING_PATTERN } from "@gatehouse/proto/masking";
import { DETECTORS, type Detector, TRIGGER_MAX_LENGTH } from "./detectors.js";

/** How many secrets of each type were masked. */
export type MaskCounts = Map<string, number>;

/** A pattern from policy (`masking.custom: [{name, pattern}]`), masked like the built-in ones. */
export interface CustomPattern {
  /** The type named in the marker: lowercase letters, digits and dashes. */
  name: string;
  /**
   * A regular expression (source text, or a RegExp whose flags are kept). It must not match
   * whitespace and looks at most one character behind its match, like the built-in detectors;
   * a group named `secret` masks only that part of the match.
   */
  pattern: string | RegExp;
  /** The longest text a match spans (default 256, at most 4096): it bounds the streamed hold-back. */
  maxLength?: number;
}

/** The marker that replaces a masked value. */
export function marker(type: string): string {
  return `[MASKED:${type}]`;
}

function customDetector(custom: CustomPattern): Detector {
  if (!MASKING_PATTERN.name.test(custom.name)) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `masking pattern name ${JSON.stringify(custom.name)} is invalid; use lowercase letters, digits and dashes (at most 64)`,
    );
  }
  const maxLength = custom.maxLength ?? 256;
  if (!Number.isSafeInteger(maxLength) || maxLength < 1 || maxLength > MASKING_PATTERN.maxLength) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `masking pattern '${custom.name}': maxLength must be a whole number from 1 to ${MASKING_PATTERN.maxLength}`,
    );
  }
  const source = typeof custom.pattern === "string" ? custom.pattern : custom.pattern.source;
  const given = typeof custom.pattern === "string" ? "" : custom.pattern.flags.replace(/[gdy]/g, "");
  let pattern: RegExp;
  try {
    pattern = new RegExp(source, given);
    pattern = new RegExp(source, `${given}g${/\(\?<secret>/.test(source) ? "d" : ""}`);
  } catch {
    // The engine's message quotes the pattern, which may hold a secret.
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `masking pattern '${custom.name}' is not a valid regular expression; check its syntax`,
    );
  }
  if (pattern.test("")) {
    throw new GatehouseError(
      "GATE_CONFIG_INVALID",
      `masking pattern '${custom.name}' matches empty text; it must match at least one character`,
    );
  }
  return { name: custom.name, pattern, maxLength };
}

/** One match: the masked span [start, end) and its type. */
interface Hit {
  start: number;
  end: number;
  type: string;
}

/** A raw match of one detector, before overlapping matches are resolved. */
interface Raw extends Hit {
  /** The whole match, which decides overlaps and where a stream may be cut. */
  matchStart: number;
  matchEnd: number;
  rank: number;
}

const WHITESPACE = /\s/;

/** `\s` as regular expressions see it, without a regular expression per character. */
function isWhitespace(code: number): boolean {
  if (code <= 0x20) return code === 0x20 || (code >= 0x09 && code <= 0x0d);
  if (code < 0xa0) return false;
  return WHITESPACE.test(String.fromCharCode(code));
}

/** A detector with a trigger, ready to run where its trigger is found. */
interface Armed {
  detector: Detector;
  rank: number;
  /** The pattern, sticky (it matches only where it is started), without indices. */
  sticky: RegExp;
  /** With a group named `secret`: the pattern, sticky, with indices, for where `secretSpan` cannot tell. */
  indexed: RegExp | undefined;
  lead: number;
}

/** The detectors that share one trigger (`://` starts two). */
interface TriggerGroup {
  armed: Armed[];
  /** The group in `Masker.#starts` that its trigger fills where it starts. */
  capture: number;
}

/** Where a trigger was found, and whose it is. */
interface TriggerHit {
  at: number;
  group: TriggerGroup;
}

function sticky(pattern: RegExp, indices: boolean): RegExp {
  return new RegExp(pattern.source, `${pattern.flags.replace(/[gyd]/g, "")}y${indices ? "d" : ""}`);
}

/**
 * The detectors to apply: the built-in ones and any custom patterns. Immutable, shareable across
 * exchanges; each stream gets its own `StreamMasker`.
 *
 * Text is searched once for every trigger at the same time; each detector's expression then runs
 * only at the places its trigger allows (from `lead` characters before the trigger up to it), so
 * ordinary text costs one pass of a single expression.
 */
export class Masker {
  /** Finds where any trigger starts, in one pass over the text. */
  readonly #finder: RegExp;
  /**
   * Sticky, run where the finder stopped: fills each group's `capture` if its trigger starts
   * there (triggers may overlap, as `sk-` and `sk-ant-` do).
   */
  readonly #starts: RegExp;
  readonly #groups: readonly TriggerGroup[];
  /** Detectors without a trigger (custom patterns): they run over all text. */
  readonly #untriggered: readonly { detector: Detector; rank: number }[];
  readonly #pending: readonly { detector: Detector; group: TriggerGroup | undefined }[];
  /** The longest whitespace-free match: a stream cuts a longer run of text at this distance from its end. */
  readonly #runMax: number;
  /**
   * The most text a `StreamMasker` holds back after a push: the longest shape (a PEM block), or
   * twice the longest whitespace-free shape when a match straddles a forced cut.
   */
  readonly maxHold: number;

  constructor(custom: readonly CustomPattern[] = []) {
    const detectors = [...DETECTORS, ...custom.map(customDetector)];
    const groups = new Map<string, TriggerGroup>();
    const untriggered: { detector: Detector; rank: number }[] = [];
    const pending: { detector: Detector; group: TriggerGroup | undefined }[] = [];
    detectors.forEach((detector, rank) => {
      const trigger = detector.trigger;
      let group: TriggerGroup | undefined;
      if (trigger === undefined) {
        untriggered.push({ detector, rank });
      } else {
        // Groups are numbered in the order of `#starts`, which is the map's.
        group = groups.get(trigger) ?? { armed: [], capture: groups.size + 1 };
        groups.set(trigger, group);
        const pattern = detector.pattern;
        group.armed.push({
          detector,
          rank,
          sticky: sticky(pattern, false),
          indexed: pattern.hasIndices ? sticky(pattern, true) : undefined,
          lead: detector.lead ?? 0,
        });
      }
      if (detector.pendingFrom !== undefined) pending.push({ detector, group });
    });
    this.#groups = [...groups.values()];
    const triggers = [...groups.keys()];
    this.#finder = new RegExp(triggers.map((trigger) => `(?:${trigger})`).join("|"), "g");
    // An empty alternative after each look-ahead: the expression always matches, and a trigger
    // that does not start here leaves its group unset.
    this.#starts = new RegExp(triggers.map((trigger) => `(?:(?=(${trigger}))|)`).join(""), "y");
    this.#untriggered = untriggered;
    this.#pending = pending;
    const runs = detectors.filter((d) => d.pendingFrom === undefined).map((d) => d.maxLength + 1);
    this.#runMax = Math.max(...runs);
    this.maxHold = Math.max(2 * this.#runMax, ...pending.map((p) => p.detector.maxLength + 1));
  }

  /** Masks every secret in `text`. */
  mask(text: string): { text: string; found: MaskCounts } {
    const found: MaskCounts = new Map();
    const hits: TriggerHit[] = [];
    this.triggers(text, 0, hits);
    return { text: render(text, 0, text.length, resolve(this.scan(text, 0, hits)), found), found };
  }

  /** A masker for one stream of text (one content block). */
  stream(): StreamMasker {
    return new StreamMasker(this);
  }

  /** Adds to `hits` every trigger that starts at or after `from` and before `until`, in order. */
  triggers(text: string, from: number, hits: TriggerHit[], until = text.length): void {
    const finder = this.#finder;
    const starts = this.#starts;
    finder.lastIndex = from;
    for (let m = finder.exec(text); m !== null && m.index < until; m = finder.exec(text)) {
      starts.lastIndex = m.index;
      const started = starts.exec(text);
      if (started !== null) {
        for (const group of this.#groups) {
          if (started[group.capture] !== undefined) hits.push({ at: m.index, group });
        }
      }
      finder.lastIndex = m.index + 1;
    }
  }

  /**
   * Every raw match starting at or after `from` and before `before`, given the triggers in `text`
   * from there; `text[from - 1]` is context for look-behinds. Each detector's matches are the ones
   * its global expression would find from `from`: the leftmost, then the leftmost after that one's end.
   */
  scan(text: string, from: number, hits: readonly TriggerHit[], before = text.length): Raw[] {
    const raws: Raw[] = [];
    if (hits.length > 0) {
      /** Per detector rank: where its next match may start. */
      const next: number[] = [];
      for (const { at, group } of hits) {
        for (const { detector, rank, sticky: re, indexed, lead } of group.armed) {
          const first = Math.max(from, at - lead, next[rank] ?? from);
          const last = Math.min(at, before - 1);
          if (first > last) continue;
          next[rank] = at + 1;
          for (let start = first; start <= last; start++) {
            re.lastIndex = start;
            const m = re.exec(text);
            if (m === null || m[0].length === 0) continue;
            raws.push(raw(m, detector, rank, indexed && secretSpan(m, text, indexed)));
            next[rank] = m.index + m[0].length;
            break;
          }
        }
      }
    }
    for (const { detector, rank } of this.#untriggered) {
      const re = detector.pattern;
      re.lastIndex = from;
      for (let m = re.exec(text); m !== null && m.index < before; m = re.exec(text)) {
        if (m[0].length === 0) {
          re.lastIndex++;
          continue;
        }
        // Custom patterns must not match whitespace: a stream cuts text at whitespace.
        if (WHITESPACE.test(m[0])) continue;
        raws.push(raw(m, detector, rank, m.indices?.groups?.secret));
      }
    }
    return raws;
  }

  /**
   * Where the text from `from` on may be cut, as far as its shape says: after its last whitespace
   * (`space`, the start of the text after it), at most a run's length from its end, and before any match still arriving. Matches found
   * before this point may move the cut back further (`settle`).
   */
  hold(text: string, from: number, space: number, hits: readonly TriggerHit[]): number {
    let cut = Math.max(space, from);
    if (text.length - cut > this.#runMax) cut = text.length - this.#runMax;
    for (const { detector, group } of this.#pending) {
      // A pending match that has not yet shown its trigger is within the last run, held already.
      if (group !== undefined && !shows(hits, group)) continue;
      const at = detector.pendingFrom?.(text, from) ?? -1;
      if (at !== -1 && at < cut) cut = at;
    }
    return cut;
  }

  /**
   * Whether text that gained no whitespace since the last push still releases nothing, as the
   * last push left it: true unless the text after its last whitespace outgrew the longest
   * whitespace-free match, or a match that may hold whitespace is arriving. Otherwise the cut
   * (after the last whitespace) has not moved, and no match reaches it.
   */
  waits(text: string, from: number, space: number, hits: readonly TriggerHit[]): boolean {
    if (text.length - Math.max(space, from) > this.#runMax) return false;
    for (const { group } of this.#pending) {
      if (group === undefined || shows(hits, group)) return false;
    }
    return true;
  }

  /** The cut moved back so that no match reaches it, and not inside a surrogate pair. */
  settle(text: string, from: number, cut: number, raws: readonly Raw[]): number {
    // A match that reaches the cut might continue past it, and one that crosses it must not be split.
    let moved = true;
    while (moved) {
      moved = false;
      for (const raw of raws) {
        if (raw.matchStart < cut && raw.matchEnd >= cut) {
          cut = raw.matchStart;
          moved = true;
        }
      }
    }
    if (cut > from && cut < text.length) {
      const code = text.charCodeAt(cut - 1);
      if (code >= 0xd800 && code <= 0xdbff) cut--;
    }
    return Math.max(cut, from);
  }
}

/** A custom pattern a masker was built without, and why (never quoting the pattern). */
export interface RejectedPattern {
  name: string;
  reason: string;
}

/**
 * A masker with the built-in detectors and every custom pattern it can use. One it cannot use
 * (invalid where this engine compiles it, or matching empty text) is left out and named in
 * `rejected`, so that it takes neither the other patterns nor the built-in ones with it.
 */
export function usableMasker(custom: readonly CustomPattern[]): {
  masker: Masker;
  rejected: RejectedPattern[];
} {
  const usable: CustomPattern[] = [];
  const rejected: RejectedPattern[] = [];
  for (const pattern of custom) {
    try {
      customDetector(pattern);
      usable.push(pattern);
    } catch (error) {
      if (!(error instanceof GatehouseError)) throw error;
      rejected.push({ name: pattern.name, reason: error.message });
    }
  }
  return { masker: new Masker(usable), rejected };
}

/** Whether `group`'s trigger is among `hits`. */
function shows(hits: readonly TriggerHit[], group: TriggerGroup): boolean {
  for (const hit of hits) if (hit.group === group) return true;
  return false;
}

/** A match as a raw hit: with the span of a group named `secret`, only that group is masked. */
function raw(
  m: RegExpExecArray,
  detector: Detector,
  rank: number,
  secret: [number, number] | undefined,
): Raw {
  const matchStart = m.index;
  const matchEnd = matchStart + m[0].length;
  const [start, end] = secret ?? [matchStart, matchEnd];
  return { start, end, type: detector.name, matchStart, matchEnd, rank };
}

/**
 * Where the group named `secret` of a built-in detector's match `m` (found without indices) is.
 * The group lies inside the match, so where its text occurs there just once, that is its place;
 * otherwise `indexed` matches again for the indices, which cost several times the match itself.
 */
function secretSpan(m: RegExpExecArray, text: string, indexed: RegExp): [number, number] | undefined {
  const secret = m.groups?.secret;
  if (secret === undefined) return undefined;
  const at = m[0].indexOf(secret);
  if (at !== -1 && at === m[0].lastIndexOf(secret)) return [m.index + at, m.index + at + secret.length];
  indexed.lastIndex = m.index;
  return indexed.exec(text)?.indices?.groups?.secret;
}

/** Keeps the matches that win: the earliest, then the longest, then the first detector. */
function resolve(raws: Raw[]): Hit[] {
  if (raws.length === 0) return [];
  raws.sort(
    (a, b) =>
      a.matchStart - b.matchStart ||
      b.matchEnd - b.matchStart - (a.matchEnd - a.matchStart) ||
      a.rank - b.rank,
  );
  const hits: Hit[] = [];
  let end = -1;
  for (const raw of raws) {
    if (raw.matchStart < end) continue;
    hits.push(raw);
    end = raw.matchEnd;
  }
  return hits;
}

/** `text[from, to)` with each hit inside it replaced by its marker; counts what was masked. */
function render(text: string, from: number, to: number, hits: readonly Hit[], found: MaskCounts): string {
  let out = "";
  let at = from;
  for (const hit of hits) {
    if (hit.start < from || hit.end > to) continue;
    out += text.slice(at, hit.start) + marker(hit.type);
    at = hit.end;
    found.set(hit.type, (found.get(hit.type) ?? 0) + 1);
  }
  return at === from && to === text.length && from === 0 ? text : out + text.slice(at, to);
}

/**
 * Masks one stream of text that arrives in pieces (one content block of a streamed message).
 * Whatever the pieces, the concatenation of what `push` and `flush` return equals
 * `masker.mask(whole text).text`. After each push at most `masker.maxHold` characters are held;
 * usually far fewer, since text is released up to its last whitespace.
 */
export class StreamMasker {
  readonly #masker: Masker;
  /**
   * The last character released (context for the detectors' one-character look-behind), then
   * the unreleased text.
   */
  #text = "";
  /** Where the unreleased text starts in `#text`: 0 before anything is released, then 1. */
  #from = 0;
  /** The triggers found in the unreleased text so far, in the order of where they start. */
  #hits: TriggerHit[] = [];
  /** How much of `#text` has been searched for triggers (less those left to the next search). */
  #searched = 0;
  /** Where the text after the last whitespace in `#text` starts (`#from` when there is none). */
  #space = 0;
  /** Secrets masked in this stream so far. */
  readonly found: MaskCounts = new Map();

  constructor(masker: Masker) {
    this.#masker = masker;
  }

  /** How many characters are held back. */
  get held(): number {
    return this.#text.length - this.#from;
  }

  /** Adds text; returns the masked text that can be released now (possibly empty). */
  push(text: string): string {
    if (text.length === 0) return "";
    const space = this.#space;
    const end = this.#text.length;
    this.#text += text;
    const joined = this.#text;
    for (let i = joined.length - 1; i >= end; i--) {
      if (isWhitespace(joined.charCodeAt(i))) {
        this.#space = i + 1;
        break;
      }
    }
    // Mostly the middle of a long token: it is only held, and searched with the next piece.
    if (this.#space === space && this.#masker.waits(this.#text, this.#from, space, this.#hits)) return "";
    this.#search(space, false);
    return this.#release(false);
  }

  /** At the end of the stream: the rest, masked. */
  flush(): string {
    this.#search(this.#space, true);
    return this.#release(true);
  }

  /**
   * Finds the triggers in text not yet searched; `space` is `#space` before that text came.
   * Without whitespace after it, a trigger near the end may still grow into another (`sk-an` into
   * `sk-ant-`): it is left to the next search, which starts where this one leaves off.
   */
  #search(space: number, final: boolean): void {
    // Back to the last whitespace (no trigger holds any) for a trigger the new text completes.
    const again = Math.max(space, this.#searched - TRIGGER_MAX_LENGTH + 1);
    this.#searched = this.#text.length;
    // Where the next search starts again.
    const until = final ? this.#searched : Math.max(this.#space, this.#searched - TRIGGER_MAX_LENGTH + 1);
    this.#masker.triggers(this.#text, again, this.#hits, until);
  }

  #release(final: boolean): string {
    const text = this.#text;
    const from = this.#from;
    if (text.length === from) return "";
    const hits = this.#hits;
    // Matches that start where the text is held anyway do not matter yet: they are not looked for.
    const limit = final ? text.length : this.#masker.hold(text, from, this.#space, hits);
    // Held from where the unreleased text starts (a match still arriving there): nothing to look for.
    if (limit <= from) return "";
    const raws = this.#masker.scan(text, from, hits, limit);
    const cut = final ? text.length : this.#masker.settle(text, from, limit, raws);
    if (cut === from) return "";
    const hitsFinal = resolve(raws.filter((r) => r.matchEnd < cut || (final && r.matchEnd <= cut)));
    const out = render(text, from, cut, hitsFinal, this.found);
    // Keep the last released character as context; positions shift by what was dropped.
    const dropped = cut - 1;
    this.#text = text.slice(dropped);
    this.#from = 1;
    this.#searched -= dropped;
    this.#space = Math.max(this.#space - dropped, this.#from);
    if (hits.length > 0) {
      this.#hits = hits.filter((hit) => hit.at >= cut);
      for (const hit of this.#hits) hit.at -= dropped;
    }
    return out;
  }
}
