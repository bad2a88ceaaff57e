import * as encoding from 'lib0/encoding';
import { MAX_CANONICAL_DEPTH } from '../crypto/canonical.js';

// Values nested too deep, or packed too dense, in a Yjs update (v1), found and defused before Yjs
// decodes them.
//
// lib0 decodes a ContentAny value recursively: a value a few thousand levels deep overflows the
// stack while the update is applied, y-protocols catches the RangeError and only prints it, the
// update is lost, and every later update from that writer waits for it in pendingStructs for
// ever: a reader (the agent) silently stops seeing new entries (docs/fuzzing.md, finding 10).
// Servers refuse such values (coordinator/update-values.ts), but a compromised coordinator or
// relay can still send them. This module walks the update's bytes without recursion (an explicit
// counter per value) and rewrites every top-level value nested deeper than the limit as `null`
// (a ContentDoc's options as `{}`), keeping every struct's ID and length: the update still
// integrates, later updates build on it, and the entry holding it is invalid, as it would be
// anyway (canonical JSON refuses more than 64 levels). JSON strings (ContentJSON, embeds,
// formatting attributes) are checked alike: V8's JSON.parse does not overflow, but the deep value
// it makes would reach code that recurses.
//
// The same walk counts containers. Yjs keeps every object and array of a value as a JavaScript
// object of ~100 bytes against 2 encoded bytes for `[]`: one 33 MiB message (the most a Node
// client accepts) packed with empty arrays costs ~1.8 GB decoded (docs/fuzzing.md, finding 8).
// The servers refuse updates with more than 64 objects and arrays per KiB
// (coordinator/update-values.ts, --max-value-objects-per-kib); signed entries, strings for the
// most part, are far below it. An update over that ratio has each value that alone packs more
// than it per KiB of its own bytes defused the same way (`null`), so what is left is within it.

export const MAX_VALUE_DEPTH = MAX_CANONICAL_DEPTH;
// The servers' default (coordinator/limits.ts DEFAULT_LIMITS): at the limit a document's heap
// stays within ~5 times its encoded size.
export const MAX_VALUE_OBJECTS_PER_KIB = 64;

export interface DeepValue {
  // The writer's Yjs client id and the clock of the struct that held the value.
  client: number;
  clock: number;
  // How deep it nests (objects and arrays; a Uint8Array counts as one level) and how many objects
  // and arrays it packs, in how many encoded bytes.
  depth: number;
  containers: number;
  bytes: number;
  // Which bound it broke: nested past maxDepth, or too many objects and arrays for its size.
  bound: 'depth' | 'objects';
}

export type DefusedCounts = Record<DeepValue['bound'], number>;

export interface DeepValueScan {
  // The update to apply: the input itself when nothing was defused (byte-identical).
  update: Uint8Array;
  // The first 64 values defused, and how many were for each bound.
  replaced: DeepValue[];
  counts: DefusedCounts;
  // The update could not be walked (truncated, unknown content or value tags, numbers Yjs would
  // misread): `update` is then an empty update. Yjs would refuse such an update too (it throws
  // while reading it, and the caller would lose it the same way), and passing on what the walk
  // cannot vouch for would let a value through unchecked.
  malformed: boolean;
}

class Truncated extends Error {}

export class Reader {
  pos = 0;
  constructor(readonly bytes: Uint8Array) {}
  byte(): number {
    if (this.pos >= this.bytes.length) throw new Truncated('unexpected end of update');
    return this.bytes[this.pos++]!;
  }
  skip(count: number): void {
    // Also refuses NaN, which lib0 computes from a varuint padded past 2^1024.
    if (!(count <= this.bytes.length - this.pos)) throw new Truncated('unexpected end of update');
    this.pos += count;
  }
  // lib0's readVarUint, step for step (7 bits per byte, low first; it refuses a value past 2^53
  // only after a continuation byte, so zero bytes of padding are accepted): the walk must read
  // every number as Yjs will, or a padded count would end the walk where Yjs goes on.
  varUint(): number {
    let value = 0;
    let mult = 1;
    for (;;) {
      const b = this.byte();
      value += (b & 0x7f) * mult;
      mult *= 128;
      if (b < 0x80) return value;
      if (value > Number.MAX_SAFE_INTEGER) throw new Truncated('varuint out of range');
    }
  }
  // lib0 varint: skipped only (sign in the first byte's bit 6, continuation in bit 7).
  skipVarInt(): void {
    while (this.byte() & 0x80) {
      // continuation
    }
  }
  skipId(): void {
    this.varUint();
    this.varUint();
  }
  skipVarBytes(): void {
    this.skip(this.varUint());
  }
  string(): string {
    const length = this.varUint();
    const start = this.pos;
    this.skip(length);
    return new TextDecoder().decode(this.bytes.subarray(start, this.pos));
  }
}

// How a value nests and how many containers it packs: objects and arrays (and Uint8Arrays, which
// lib0 also decodes into an object of their own), each of which Yjs keeps as a JavaScript object.
export interface ValueShape {
  depth: number;
  containers: number;
}

// One lib0 "any" value starting at the reader's position: skips it and returns its shape (depth 0
// for a primitive). Iterative: one stack entry per open object or array, holding how many of its
// values are still to read (objects put a key string before each value).
export function skipAnyValue(reader: Reader): ValueShape {
  const remaining: number[] = [];
  const isObject: boolean[] = [];
  let deepest = 0;
  let containers = 0;
  let first = true;
  for (;;) {
    if (!first) {
      while (remaining.length > 0 && remaining[remaining.length - 1] === 0) {
        remaining.pop();
        isObject.pop();
      }
      if (remaining.length === 0) return { depth: deepest, containers };
      remaining[remaining.length - 1]! -= 1;
      if (isObject[isObject.length - 1]) reader.skipVarBytes();
    }
    first = false;
    const tag = reader.byte();
    switch (tag) {
      case 125:
        reader.skipVarInt();
        break;
      case 124:
        reader.skip(4);
        break;
      case 123:
      case 122:
        reader.skip(8);
        break;
      case 119:
        reader.skipVarBytes();
        break;
      case 116: // Uint8Array: one level, no children
        deepest = Math.max(deepest, remaining.length + 1);
        containers += 1;
        reader.skipVarBytes();
        break;
      case 118: // object
      case 117: // array
        remaining.push(reader.varUint());
        isObject.push(tag === 118);
        deepest = Math.max(deepest, remaining.length);
        containers += 1;
        break;
      case 127: // undefined
      case 126: // null
      case 121: // false
      case 120: // true
        break;
      default:
        // lib0 has no reader for it and throws.
        throw new Truncated(`unknown value tag ${tag}`);
    }
  }
}

// JSON text's shape, scanning brackets outside strings (no parse, no recursion).
export function jsonTextShape(text: string): ValueShape {
  let depth = 0;
  let deepest = 0;
  let containers = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      deepest = Math.max(deepest, ++depth);
      containers += 1;
    } else if (c === 0x5d || c === 0x7d) depth -= 1;
  }
  return { depth: deepest, containers };
}

const NULL_ANY = Uint8Array.of(126);
// No clients, no deletions.
const EMPTY_UPDATE = Uint8Array.of(0, 0);
const EMPTY_OBJECT_ANY = Uint8Array.of(118, 0);
const NULL_JSON_STRING = Uint8Array.of(4, 0x6e, 0x75, 0x6c, 0x6c); // varstring "null"

// One value of an update as the walk meets it: its bytes [start, end), its shape, the struct that
// holds it, and what replaces it when it is defused.
type VisitValue = (
  start: number,
  end: number,
  shape: ValueShape,
  client: number,
  clock: number,
  replacement: Uint8Array,
) => void;

export interface ValueBounds {
  maxDepth: number;
  // Objects and arrays per KiB of the update (see MAX_VALUE_OBJECTS_PER_KIB).
  maxObjectsPerKib: number;
}

const DEFAULT_BOUNDS: ValueBounds = { maxDepth: MAX_VALUE_DEPTH, maxObjectsPerKib: MAX_VALUE_OBJECTS_PER_KIB };
// Reported values per update (the count is always exact).
const MAX_REPORTED = 64;

// Walks a Yjs update (v1) and replaces each value nested deeper than `maxDepth`, and, when the
// update packs more than `maxObjectsPerKib` objects and arrays per KiB, each value that alone packs
// more than that per KiB of its own bytes (see above). Once those are gone, every value left is
// within the ratio, so the update is too. Two walks: the first only measures (the common case ends
// there, byte-identical); the second writes the update anew, streaming, so defusing millions of
// values keeps no list of them.
export function defuseDeepValues(update: Uint8Array, bounds: ValueBounds = DEFAULT_BOUNDS): DeepValueScan {
  const { maxDepth, maxObjectsPerKib } = bounds;
  const tooDense = (containers: number, bytes: number): boolean => containers * 1024 > bytes * maxObjectsPerKib;
  let deep = 0;
  let containersKept = 0;
  try {
    walkValues(update, (_start, _end, shape) => {
      if (shape.depth > maxDepth) deep += 1;
      else containersKept += shape.containers;
    });
  } catch (error) {
    if (error instanceof Truncated)
      return { update: EMPTY_UPDATE, replaced: [], counts: { depth: 0, objects: 0 }, malformed: true };
    throw error;
  }
  const dense = tooDense(containersKept, update.length);
  if (deep === 0 && !dense) return { update, replaced: [], counts: { depth: 0, objects: 0 }, malformed: false };
  const out = encoding.createEncoder();
  const replaced: DeepValue[] = [];
  const counts: DefusedCounts = { depth: 0, objects: 0 };
  let copied = 0;
  walkValues(update, (start, end, shape, client, clock, replacement) => {
    const bound =
      shape.depth > maxDepth ? 'depth' : dense && tooDense(shape.containers, end - start) ? 'objects' : null;
    if (!bound) return;
    counts[bound] += 1;
    if (replaced.length < MAX_REPORTED)
      replaced.push({ client, clock, depth: shape.depth, containers: shape.containers, bytes: end - start, bound });
    encoding.writeUint8Array(out, update.subarray(copied, start));
    encoding.writeUint8Array(out, replacement);
    copied = end;
  });
  encoding.writeUint8Array(out, update.subarray(copied));
  return { update: encoding.toUint8Array(out), replaced, counts, malformed: false };
}

// The walk itself: every value of every struct, in order; throws Truncated where Yjs would fail.
function walkValues(update: Uint8Array, visit: VisitValue): void {
  const reader = new Reader(update);
  const jsonString = (client: number, clock: number): void => {
    const start = reader.pos;
    const shape = jsonTextShape(reader.string());
    visit(start, reader.pos, shape, client, clock, NULL_JSON_STRING);
  };
  const anyValue = (client: number, clock: number, replacement: Uint8Array): void => {
    const start = reader.pos;
    const shape = skipAnyValue(reader);
    visit(start, reader.pos, shape, client, clock, replacement);
  };
  const clients = reader.varUint();
  for (let c = 0; c < clients; c++) {
    const structs = reader.varUint();
    const client = reader.varUint();
    let clock = reader.varUint();
    for (let s = 0; s < structs; s++) {
      const info = reader.byte();
      const ref = info & 0x1f;
      if (ref === 0 || ref === 10) {
        // GC or Skip: a length only.
        clock += reader.varUint();
        continue;
      }
      if (info & 0x80) reader.skipId(); // origin
      if (info & 0x40) reader.skipId(); // right origin
      if ((info & 0xc0) === 0) {
        // Parent: a root type's name, or an item's ID; then the map key when bit 6 is set.
        if (reader.varUint() === 1) reader.skipVarBytes();
        else reader.skipId();
        if (info & 0x20) reader.skipVarBytes();
      }
      let length = 1;
      switch (ref) {
        case 1: // deleted: a length
          length = reader.varUint();
          break;
        case 2: {
          // JSON: strings parsed with JSON.parse
          length = reader.varUint();
          for (let i = 0; i < length; i++) jsonString(client, clock + i);
          break;
        }
        case 3: // binary
          reader.skipVarBytes();
          break;
        case 4: {
          // string: its length in UTF-16 code units
          length = reader.string().length;
          break;
        }
        case 5: // embed
          jsonString(client, clock);
          break;
        case 6: // format: key, then JSON value
          reader.skipVarBytes();
          jsonString(client, clock);
          break;
        case 7: {
          // type: XmlElement (3) and XmlHook (5) carry a name
          const typeRef = reader.varUint();
          if (typeRef === 3 || typeRef === 5) reader.skipVarBytes();
          break;
        }
        case 8: {
          // any: a count of lib0 values
          length = reader.varUint();
          for (let i = 0; i < length; i++) anyValue(client, clock + i, NULL_ANY);
          break;
        }
        case 9: // subdocument: guid, then options (an object)
          reader.skipVarBytes();
          anyValue(client, clock, EMPTY_OBJECT_ANY);
          break;
        default:
          throw new Truncated(`unknown content ${ref}`);
      }
      clock += length;
    }
  }
  // The delete set that follows holds only numbers: copied as it is.
}
