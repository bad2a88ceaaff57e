import fc from 'fast-check';
import { CanonicalJsonError } from '../../shared/crypto/canonical.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { type Signature, type SignedKind, signPayload } from '../../shared/crypto/signatures.js';
import { nastyString, nested, nestedJsonText, stringifyJson, weirdJson } from './bytes.js';

// Mutations of valid JSON documents (signed policies, intents, enrollment entries): a field set
// to a value of the wrong type or at a numeric edge, removed, renamed, wrapped, an unknown field
// added (also deeply nested), or the whole document replaced by deep nesting.

export type JsonEdit =
  | { kind: 'set'; pick: number; value: unknown }
  | { kind: 'remove'; pick: number }
  | { kind: 'add'; pick: number; key: string; value: unknown }
  | { kind: 'wrap'; pick: number }
  | { kind: 'deep'; pick: number; depth: number };

export const jsonEdit = (maxDepth: number): fc.Arbitrary<JsonEdit> =>
  fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant('set' as const), pick: fc.nat(), value: weirdJson(3) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), pick: fc.nat() }) },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant('add' as const),
        pick: fc.nat(),
        key: nastyString().map((s) => s.slice(0, 200)),
        value: weirdJson(3),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('wrap' as const), pick: fc.nat() }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('deep' as const),
        pick: fc.nat(),
        depth: fc.oneof(fc.integer({ min: 10, max: 200 }), fc.integer({ min: 200, max: maxDepth })),
      }),
    },
  );

type Container = Record<string, unknown> | unknown[];

// Every object and array in the value, with the key under which it sits in its parent.
function containers(value: unknown): { parent: Container | null; key: string | number | null; node: Container }[] {
  const found: { parent: Container | null; key: string | number | null; node: Container }[] = [];
  const stack: { parent: Container | null; key: string | number | null; node: unknown }[] = [
    { parent: null, key: null, node: value },
  ];
  while (stack.length > 0 && found.length < 10_000) {
    const { parent, key, node } = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    const container = node as Container;
    found.push({ parent, key, node: container });
    if (Array.isArray(container))
      for (const [i, child] of container.entries()) stack.push({ parent: container, key: i, node: child });
    else for (const [k, child] of Object.entries(container)) stack.push({ parent: container, key: k, node: child });
  }
  return found;
}

// Applies edits to a deep copy; the root may be replaced (a 'wrap' or 'deep' at the top).
export function applyJsonEdits(value: unknown, edits: readonly JsonEdit[]): unknown {
  let root = structuredClone(value);
  for (const edit of edits) {
    const all = containers(root);
    if (all.length === 0) return root;
    const target = all[edit.pick % all.length]!;
    const keys = Array.isArray(target.node) ? target.node.map((_, i) => i) : Object.keys(target.node);
    const key = keys.length > 0 ? keys[edit.pick % keys.length]! : null;
    const set = (k: string | number, v: unknown): void => {
      (target.node as Record<string | number, unknown>)[k] = v;
    };
    switch (edit.kind) {
      case 'set':
        if (key !== null) set(key, edit.value);
        break;
      case 'remove':
        if (key === null) break;
        if (Array.isArray(target.node)) target.node.splice(key as number, 1);
        else delete (target.node as Record<string, unknown>)[key as string];
        break;
      case 'add':
        if (Array.isArray(target.node)) target.node.push(edit.value);
        else set(edit.key, edit.value);
        break;
      case 'wrap':
      case 'deep': {
        const depth = edit.kind === 'wrap' ? 1 : edit.depth;
        if (target.parent === null) root = nested(depth, root);
        else (target.parent as Record<string | number, unknown>)[target.key!] = nested(depth, target.node);
        break;
      }
    }
  }
  return root;
}

// Request bodies: mutated documents, unrelated JSON, deep nesting as text (deeper than any
// object the fuzzer itself could serialise), broken JSON and bodies over the size limit.
export function jsonBody(documents: fc.Arbitrary<unknown>): fc.Arbitrary<Uint8Array> {
  const text = fc.oneof(
    { weight: 8, arbitrary: documents.map((d) => stringifyJson(d) ?? 'null') },
    { weight: 2, arbitrary: weirdJson(4).map((d) => stringifyJson(d) ?? 'null') },
    { weight: 1, arbitrary: fc.integer({ min: 1_000, max: 100_000 }).map(nestedJsonText) },
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 1_000, max: 60_000 })
        .map((depth) => `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`),
    },
    {
      weight: 1,
      arbitrary: documents.chain((d) =>
        fc.nat().map((cut) => {
          const full = stringifyJson(d) ?? '';
          return full.slice(0, cut % (full.length + 1));
        }),
      ),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom('', '{', 'null', '[]', '"x"', '1e999999', '{"__proto__":{"x":1}}', '\uFEFF{}'),
    },
    { weight: 1, arbitrary: fc.integer({ min: 256 * 1024 - 8, max: 300 * 1024 }).map((n) => `"${'z'.repeat(n)}"`) },
  );
  return text.map((t) => new TextEncoder().encode(t));
}

// Signs a fuzzed payload. One canonical JSON refuses to sign (nested deeper than 64 levels, over
// 16 MiB) gets a signature of the right shape that verifies against nothing, which is all an
// attacker could send with it too; the readers must refuse it by its depth or size first.
export function signFuzzed(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  try {
    return signPayload(kind, payload, key);
  } catch (error) {
    if (!(error instanceof CanonicalJsonError)) throw error;
    return { publicKey: key.publicKey, signature: Buffer.alloc(64, 0x5a).toString('base64') };
  }
}

// Nesting depths for values placed in signed documents: mostly within what can be signed, some
// beyond (then signFuzzed forges the signature).
export const signedNestingDepth = (): fc.Arbitrary<number> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 10, max: 56 }) },
    { weight: 1, arbitrary: fc.integer({ min: 57, max: 1_500 }) },
  );
