import * as Y from 'yjs';
import { MAX_CANONICAL_DEPTH } from '../shared/crypto/canonical.js';

// The shape of the values an update writes (ContentAny, ContentJSON, embeds and formatting
// attributes: any nested JSON-like value), checked before the update is applied.
//
// A server keeps every open document decoded, and Yjs keeps every object and array of those values
// as a JavaScript object: ~100 bytes of heap each, against 2 encoded bytes for `[]` or `{}`. A
// writer who packs its updates with empty arrays and objects made the fuzzer's relay hold 50–110
// times the update log's bytes in memory (docs/fuzzing.md, finding 8), so the size limits, which
// count encoded bytes, bounded memory only loosely. Entries the project writes (signed envelopes of
// strings) carry dozens of bytes per object; at least MIN_BYTES_PER_CONTAINER per object or array
// keeps a document's heap within a few times its encoded size. Nesting is bounded as canonical JSON
// bounds it: deeper values could never be signed or checked anyway.
export const MIN_BYTES_PER_CONTAINER = 16;
export const MAX_VALUE_DEPTH = MAX_CANONICAL_DEPTH;

// A reason to refuse the update, or null. Throws on an update Yjs cannot decode (the caller treats
// that as a malformed update, as applying it would).
export function updateValueProblem(update: Uint8Array): string | null {
  const { structs } = Y.decodeUpdate(update);
  const stack: { value: unknown; depth: number }[] = [];
  for (const struct of structs) {
    if (!(struct instanceof Y.Item)) continue;
    const content = struct.content;
    if (content instanceof Y.ContentAny || content instanceof Y.ContentJSON)
      for (const value of content.arr) stack.push({ value, depth: 0 });
    else if (content instanceof Y.ContentEmbed) stack.push({ value: content.embed, depth: 0 });
    else if (content instanceof Y.ContentFormat) stack.push({ value: content.value, depth: 0 });
  }
  let containers = 0;
  // Without recursion, so any depth is safe to inspect.
  while (stack.length > 0) {
    const { value, depth } = stack.pop()!;
    if (value === null || typeof value !== 'object') continue;
    containers += 1;
    if (depth >= MAX_VALUE_DEPTH)
      return `a value nests deeper than ${MAX_VALUE_DEPTH} levels (canonical JSON's limit); write flatter values`;
    // Binary values (Uint8Array) hold no children.
    if (ArrayBuffer.isView(value)) continue;
    const children: unknown[] = Array.isArray(value) ? value : Object.values(value);
    for (const child of children) stack.push({ value: child, depth: depth + 1 });
  }
  if (containers * MIN_BYTES_PER_CONTAINER > update.length)
    return (
      `update holds ${containers} objects and arrays in ${update.length} bytes, more than one per ` +
      `${MIN_BYTES_PER_CONTAINER} bytes (each costs the server ~100 bytes of memory); write fewer, fuller values`
    );
  return null;
}
