import fc from 'fast-check';
import * as encoding from 'lib0/encoding';

// Byte-level building blocks shared by every input class: mutations of valid encodings (the
// inputs that get past the first length check), lengths and counts at the edges of varint and
// float ranges, and deep nesting.

export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'duplicate'; at: number; length: number }
  | { kind: 'varint'; at: number; value: number };

// Numbers where decoders, Math and JSON disagree or overflow.
export const EDGE_NUMBERS = [
  0,
  1,
  127,
  128,
  255,
  256,
  16_383,
  16_384,
  65_535,
  65_536,
  2 ** 31 - 1,
  2 ** 31,
  2 ** 32 - 1,
  2 ** 32,
  2 ** 53 - 1,
  2 ** 53,
  2 ** 63,
  2 ** 64,
] as const;

export const edgeNumber = (): fc.Arbitrary<number> =>
  fc.oneof(fc.constantFrom(...EDGE_NUMBERS), fc.nat({ max: 2 ** 32 - 1 }), fc.nat({ max: 300 }));

export function bytes(maxLength = 64): fc.Arbitrary<Uint8Array> {
  return fc.uint8Array({ maxLength });
}

// lib0's varUint of any number up to 2^64, written without lib0's own range checks.
export function rawVarUint(value: number): Uint8Array {
  const out: number[] = [];
  let rest = BigInt(Math.floor(Math.max(0, value)));
  do {
    const low = Number(rest & 0x7fn);
    rest >>= 7n;
    out.push(rest > 0n ? low | 0x80 : low);
  } while (rest > 0n && out.length < 10);
  return new Uint8Array(out);
}

export const mutation = (): fc.Arbitrary<Mutation> =>
  fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat({ max: 7 }) }),
    fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0, 0x7f, 0x80, 0xff, 1, 2) }),
    fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: bytes(8) }),
    fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 8 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
    fc.record({ kind: fc.constant('varint' as const), at: fc.nat(), value: edgeNumber() }),
  );

export function mutate(input: Uint8Array, mutations: readonly Mutation[]): Uint8Array {
  let data = input;
  const splice = (at: number, remove: number, insert: Uint8Array): Uint8Array => {
    const out = new Uint8Array(data.length - Math.min(remove, data.length - at) + insert.length);
    out.set(data.subarray(0, at), 0);
    out.set(insert, at);
    out.set(data.subarray(at + remove), at + insert.length);
    return out;
  };
  for (const m of mutations) {
    const at = m.at % (data.length + 1);
    switch (m.kind) {
      case 'flip':
      case 'set':
        if (at < data.length) {
          data = data.slice();
          data[at] = m.kind === 'flip' ? data[at]! ^ (1 << m.bit) : m.value;
        }
        break;
      case 'insert':
        data = splice(at, 0, m.bytes);
        break;
      case 'delete':
        data = splice(at, m.length, new Uint8Array(0));
        break;
      case 'truncate':
        data = data.subarray(0, at);
        break;
      case 'duplicate':
        data = splice(at, 0, data.slice(at, at + m.length));
        break;
      case 'varint':
        data = splice(at, 0, rawVarUint(m.value));
        break;
    }
  }
  return data;
}

// An encoding with 0-4 mutations applied (none keeps the valid input in the mix).
export function mutated(valid: fc.Arbitrary<Uint8Array>, maxMutations = 4): fc.Arbitrary<Uint8Array> {
  return fc
    .tuple(valid, fc.array(mutation(), { maxLength: maxMutations }))
    .map(([input, mutations]) => mutate(input, mutations));
}

export function encode(write: (encoder: encoding.Encoder) => void): Uint8Array {
  const encoder = encoding.createEncoder();
  write(encoder);
  return encoding.toUint8Array(encoder);
}

// Arrays and objects nested `depth` levels around a leaf, built without recursion.
export function nested(depth: number, leaf: unknown = 1): unknown {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = i % 2 === 0 ? [value] : { n: value };
  return value;
}

// JSON.stringify recurses: a mutated document nested past what the driver's stack allows (deep
// edits compound) threw RangeError inside fast-check's generator and ended a long run at 570,093
// inputs. The same text, without recursion, for anything the fuzzer serialises.
export function stringifyJson(value: unknown): string | undefined {
  try {
    return JSON.stringify(value);
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
  }
  const out: string[] = [];
  const stack: { items: [string | null, unknown][]; index: number; close: string }[] = [];
  const emit = (v: unknown): void => {
    if (Array.isArray(v)) {
      out.push('[');
      stack.push({ items: v.map((item): [null, unknown] => [null, item]), index: 0, close: ']' });
    } else if (v !== null && typeof v === 'object') {
      out.push('{');
      const entries = Object.entries(v).filter(([, item]) => item !== undefined && typeof item !== 'function');
      stack.push({ items: entries, index: 0, close: '}' });
    } else out.push(JSON.stringify(v) ?? 'null');
  };
  emit(value);
  for (let top = stack.at(-1); top; top = stack.at(-1)) {
    if (top.index >= top.items.length) {
      out.push(top.close);
      stack.pop();
      continue;
    }
    const [key, item] = top.items[top.index]!;
    if (top.index > 0) out.push(',');
    top.index += 1;
    if (key !== null) out.push(`${JSON.stringify(key)}:`);
    emit(item);
  }
  return out.join('');
}

export function nestedJsonText(depth: number): string {
  return `${'['.repeat(depth)}1${']'.repeat(depth)}`;
}

// Strings that break naive handling: NUL, lone surrogates, RTL marks, very long, path tricks.
export const nastyString = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.string({ unit: 'grapheme', maxLength: 20 }),
    fc.constantFrom(
      '',
      '\0',
      '\uD800',
      '\uDFFF',
      '\u202E',
      '\uFEFF',
      '__proto__',
      'constructor',
      'toString',
      '../../etc/passwd',
      '%00',
      '%E0%A4%A',
      '\r\n',
      '{}',
      'null',
    ),
    fc.integer({ min: 1_000, max: 70_000 }).map((n) => 'x'.repeat(n)),
  );

// JSON-compatible values with the numbers and strings that break validation.
export const weirdJson = (maxDepth = 4): fc.Arbitrary<unknown> =>
  fc.letrec<{ value: unknown }>((tie) => ({
    value: fc.oneof(
      { depthSize: 'small', maxDepth },
      fc.constantFrom(null, true, false, 0, -0, -1, 1.5, 1e308, -1e308, 2 ** 53 + 1, Number.MAX_SAFE_INTEGER, 5e-324),
      fc.double({ noNaN: true, noDefaultInfinity: true }),
      fc.integer(),
      nastyString(),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(nastyString(), tie('value'), { maxKeys: 4 }),
    ),
  })).value;
