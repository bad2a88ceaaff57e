import { MAX_CANONICAL_DEPTH } from '../crypto/canonical.js';

// Values nested too deep in a Yjs update (v1), found and defused before Yjs decodes it.
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

export const MAX_VALUE_DEPTH = MAX_CANONICAL_DEPTH;

export interface DeepValue {
  // The writer's Yjs client id and the clock of the struct that held the value.
  client: number;
  clock: number;
  // How deep it nests (objects and arrays; a Uint8Array counts as one level), at least limit + 1.
  depth: number;
}

export interface DeepValueScan {
  // The update to apply: the input itself when nothing was too deep (byte-identical).
  update: Uint8Array;
  replaced: DeepValue[];
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

// One lib0 "any" value starting at the reader's position: skips it and returns how deep it nests
// (0 for a primitive). Iterative: one stack entry per open object or array, holding how many of
// its values are still to read (objects put a key string before each value).
export function skipAnyValue(reader: Reader): number {
  const remaining: number[] = [];
  const isObject: boolean[] = [];
  let deepest = 0;
  let first = true;
  for (;;) {
    if (!first) {
      while (remaining.length > 0 && remaining[remaining.length - 1] === 0) {
        remaining.pop();
        isObject.pop();
      }
      if (remaining.length === 0) return deepest;
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
        reader.skipVarBytes();
        break;
      case 118: // object
      case 117: // array
        remaining.push(reader.varUint());
        isObject.push(tag === 118);
        deepest = Math.max(deepest, remaining.length);
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

// JSON text's nesting depth, scanning brackets outside strings (no parse, no recursion).
export function jsonTextDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i += 1;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) deepest = Math.max(deepest, ++depth);
    else if (c === 0x5d || c === 0x7d) depth -= 1;
  }
  return deepest;
}

const NULL_ANY = Uint8Array.of(126);
// No clients, no deletions.
const EMPTY_UPDATE = Uint8Array.of(0, 0);
const EMPTY_OBJECT_ANY = Uint8Array.of(118, 0);
const NULL_JSON_STRING = Uint8Array.of(4, 0x6e, 0x75, 0x6c, 0x6c); // varstring "null"

// Walks a Yjs update (v1) and replaces each value nested deeper than `maxDepth` (see above).
export function defuseDeepValues(update: Uint8Array, maxDepth = MAX_VALUE_DEPTH): DeepValueScan {
  const reader = new Reader(update);
  // Byte ranges to replace, in order: [start, end, replacement].
  const cuts: [number, number, Uint8Array][] = [];
  const replaced: DeepValue[] = [];
  const jsonString = (client: number, clock: number): void => {
    const start = reader.pos;
    const text = reader.string();
    const depth = jsonTextDepth(text);
    if (depth > maxDepth) {
      cuts.push([start, reader.pos, NULL_JSON_STRING]);
      replaced.push({ client, clock, depth });
    }
  };
  const anyValue = (client: number, clock: number, replacement: Uint8Array): void => {
    const start = reader.pos;
    const depth = skipAnyValue(reader);
    if (depth > maxDepth) {
      cuts.push([start, reader.pos, replacement]);
      replaced.push({ client, clock, depth });
    }
  };
  try {
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
  } catch (error) {
    if (error instanceof Truncated) return { update: EMPTY_UPDATE, replaced: [], malformed: true };
    throw error;
  }
  if (cuts.length === 0) return { update, replaced, malformed: false };
  return { update: splice(update, cuts), replaced, malformed: false };
}

function splice(bytes: Uint8Array, cuts: [number, number, Uint8Array][]): Uint8Array {
  let size = bytes.length;
  for (const [start, end, replacement] of cuts) size += replacement.length - (end - start);
  const out = new Uint8Array(size);
  let from = 0;
  let to = 0;
  for (const [start, end, replacement] of cuts) {
    out.set(bytes.subarray(from, start), to);
    to += start - from;
    out.set(replacement, to);
    to += replacement.length;
    from = end;
  }
  out.set(bytes.subarray(from), to);
  return out;
}
