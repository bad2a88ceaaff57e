import * as Y from 'yjs';

// The shape of the values an update writes (ContentAny, ContentJSON, embeds and formatting
// attributes: any nested JSON-like value), checked before the update is applied.
//
// A server keeps every open document decoded, and Yjs keeps every object and array of those values
// as a JavaScript object: ~100 bytes of heap each, against 2 encoded bytes for `[]` or `{}`. A
// writer who packs its updates with empty arrays and objects made the fuzzer's relay hold 50–110
// times the update log's bytes in memory (docs/fuzzing.md, finding 8), so the size limits, which
// count encoded bytes, bounded memory only loosely. Entries the project writes (signed envelopes of
// strings) carry dozens of bytes per object; the default of at most 64 objects and arrays per KiB
// (one per 16 bytes) keeps a document's heap within ~5 times its encoded size. Nesting is bounded
// as canonical JSON bounds it (64 levels by default): deeper values could never be signed anyway.
export interface ValueLimits {
  maxValueDepth: number;
  maxValueObjectsPerKib: number;
}

// A reason to refuse the update, or null. Throws on an update Yjs cannot decode (the caller treats
// that as a malformed update, as applying it would).
export function updateValueProblem(update: Uint8Array, limits: ValueLimits): string | null {
  return structsValueProblem(Y.decodeUpdate(update).structs, update.length, limits);
}

// The same for structs already decoded from an update of `updateBytes` bytes.
export function structsValueProblem(
  structs: (Y.Item | Y.GC | Y.Skip)[],
  updateBytes: number,
  limits: ValueLimits,
): string | null {
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
    if (depth >= limits.maxValueDepth)
      return `a value nests deeper than ${limits.maxValueDepth} levels (--max-value-depth); write flatter values`;
    // Binary values (Uint8Array) hold no children.
    if (ArrayBuffer.isView(value)) continue;
    const children: unknown[] = Array.isArray(value) ? value : Object.values(value);
    for (const child of children) stack.push({ value: child, depth: depth + 1 });
  }
  if (containers * 1024 > updateBytes * limits.maxValueObjectsPerKib)
    return (
      `update holds ${containers} objects and arrays in ${updateBytes} bytes, more than ` +
      `${limits.maxValueObjectsPerKib} per KiB (--max-value-objects-per-kib; each costs the server ~100 bytes of memory); write fewer, fuller values`
    );
  return null;
}
