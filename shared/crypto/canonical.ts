// Canonical JSON: object keys sorted, no whitespace. Signatures cover these bytes, so two
// implementations (agent, web editor, auditor) must produce identical output for equal values.
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

// Values reach canonicalJson from documents any writer of them (a relay, a compromised
// coordinator) can fill, before any signature is checked. Nesting is bounded so a value 4,000
// levels deep is an error, not a stack overflow, and size so one value cannot cost unbounded time.
export const MAX_CANONICAL_DEPTH = 64;
export const MAX_CANONICAL_BYTES = 16 * 1024 * 1024;

export interface JsonLimits {
  maxDepth: number;
  // Counted as JSON text length (strings by their length, before escaping).
  maxBytes: number;
}

export type JsonBoundsVerdict = { ok: true; bytes: number } | { ok: false; reason: string };

function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value) as unknown;
  return prototype === Object.prototype || prototype === null;
}

// One value on checkJsonBounds' stack. Its path is written only for an error (a 1,000-host plan
// has 5,000 values, and each path string would be built and dropped).
interface PendingValue {
  value: unknown;
  depth: number;
  parent: PendingValue | null;
  key: string | number;
}

function pathOf(item: PendingValue): string {
  let path = '';
  for (let at: PendingValue | null = item; at?.parent; at = at.parent)
    path = typeof at.key === 'number' ? `[${at.key}]${path}` : `${at.parent.parent ? '.' : ''}${at.key}${path}`;
  return path || 'the value';
}

// Checks, without recursion (so any depth is safe to inspect), that `value` is plain JSON data
// (null, booleans, finite numbers, strings, arrays, plain objects; undefined object fields are
// dropped as canonicalJson drops them) within the limits. Stops at the first problem.
export function checkJsonBounds(value: unknown, limits: JsonLimits): JsonBoundsVerdict {
  let bytes = 0;
  const stack: PendingValue[] = [{ value, depth: 0, parent: null, key: '' }];
  while (stack.length > 0) {
    const item = stack.pop()!;
    const v = item.value;
    if (v === null) {
      bytes += 4;
    } else if (typeof v === 'boolean') {
      bytes += 5;
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v)) return { ok: false, reason: `${pathOf(item)} is the non-finite number ${v}` };
      bytes += 24;
    } else if (typeof v === 'string') {
      bytes += v.length + 2;
    } else if (typeof v === 'object') {
      if (item.depth >= limits.maxDepth)
        return { ok: false, reason: `${pathOf(item)} is nested deeper than ${limits.maxDepth} levels` };
      if (Array.isArray(v)) {
        bytes += 2 + v.length;
        if (bytes > limits.maxBytes) break;
        for (let i = v.length - 1; i >= 0; i--)
          stack.push({ value: v[i], depth: item.depth + 1, parent: item, key: i });
      } else {
        if (!isPlainObject(v))
          return {
            ok: false,
            reason: `${pathOf(item)} is not JSON data (${v.constructor?.name ?? 'an exotic object'})`,
          };
        const keys = Object.keys(v);
        bytes += 2 + keys.length;
        for (const key of keys) {
          bytes += key.length + 3;
          if (bytes > limits.maxBytes) break;
          const child = (v as Record<string, unknown>)[key];
          if (child !== undefined) stack.push({ value: child, depth: item.depth + 1, parent: item, key });
        }
      }
    } else if (v === undefined && item.depth > 0) {
      // An array hole or undefined element: canonicalJson refuses it below.
      return { ok: false, reason: `${pathOf(item)} is undefined, which JSON cannot carry` };
    } else {
      return { ok: false, reason: `${pathOf(item)} is a ${typeof v}, which JSON cannot carry` };
    }
    if (bytes > limits.maxBytes) break;
  }
  if (bytes > limits.maxBytes) return { ok: false, reason: `larger than ${limits.maxBytes} bytes of JSON` };
  return { ok: true, bytes };
}

export class CanonicalJsonError extends Error {
  override name = 'CanonicalJsonError';
}

// Written for speed (an agent's gate check encodes hundreds of results and a 250 KB plan): keys
// sorted by the default sort (UTF-16 code units, as `<` compares), strings appended in loops, no
// intermediate entry arrays. The unit test holds it equal to the plain map-sort-join encoder.
function encode(value: unknown, depth: number): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value))
        throw new CanonicalJsonError(`canonicalJson: non-finite number ${value} cannot be signed`);
      // What JSON.stringify writes for a finite number (-0 included: "0").
      return String(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (depth >= MAX_CANONICAL_DEPTH)
        throw new CanonicalJsonError(`canonicalJson: nested deeper than ${MAX_CANONICAL_DEPTH} levels`);
      if (Array.isArray(value)) {
        // Every index up to length, holes included (as undefined, refused below): "[1,,2]" is not JSON.
        let out = '[';
        for (let i = 0; i < value.length; i += 1) {
          if (i > 0) out += ',';
          out += encode(value[i], depth + 1);
        }
        return `${out}]`;
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      let out = '{';
      for (const key of keys) {
        const child = record[key];
        if (child === undefined) continue;
        if (out.length > 1) out += ',';
        out += `${JSON.stringify(key)}:${encode(child, depth + 1)}`;
      }
      return `${out}}`;
    }
    default:
      throw new CanonicalJsonError(`canonicalJson: ${typeof value} cannot be signed`);
  }
}

// Throws CanonicalJsonError (never a RangeError) for values too deep or too large to sign.
export function canonicalJson(value: unknown): string {
  const text = encode(value, 0);
  if (text.length > MAX_CANONICAL_BYTES)
    throw new CanonicalJsonError(`canonicalJson: larger than ${MAX_CANONICAL_BYTES} bytes`);
  return text;
}

const utf8 = new TextEncoder();

export function canonicalBytes(value: unknown): Uint8Array {
  return utf8.encode(canonicalJson(value));
}
