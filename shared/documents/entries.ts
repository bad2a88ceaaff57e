import type { z } from 'zod';
import { checkJsonBounds, type JsonLimits } from '../crypto/canonical.js';

// Every entry of a replicated document is written by whoever could write to that document — a
// relay or a compromised coordinator included — and read before any signature is checked. Each
// is bounded (depth, size, plain JSON) *before* zod or canonical JSON look inside it, so a value
// nested thousands of levels deep or megabytes large is one malformed entry, reported and
// skipped, never an exception that stops the reader.
const KIB = 1024;
export const ENTRY_LIMITS = {
  // An intent is ~1 KiB with a few signatures; fields added by newer versions fit many times.
  intent: { maxDepth: 32, maxBytes: 64 * KIB },
  // reason (2,000) and outputTail (8,192 characters) dominate.
  result: { maxDepth: 32, maxBytes: 64 * KIB },
  status: { maxDepth: 32, maxBytes: 64 * KIB },
  // Up to 1,000 admins, roles, groups and relays and 10,000 revoked keys.
  policy: { maxDepth: 32, maxBytes: 8 * 1024 * KIB },
  enrollment: { maxDepth: 32, maxBytes: 64 * KIB },
  timestamp: { maxDepth: 16, maxBytes: 4 * KIB },
  checkpoint: { maxDepth: 16, maxBytes: 4 * KIB },
  // A remote action request is ~1 KiB; its answer up to ~11 KiB (reason and output tail); a
  // collect bundle at most 48 KiB of output.
  action: { maxDepth: 16, maxBytes: 16 * KIB },
  actionResult: { maxDepth: 16, maxBytes: 16 * KIB },
  collectBundle: { maxDepth: 16, maxBytes: 64 * KIB },
} satisfies Record<string, JsonLimits>;

// An entry skipped by a reader: where it is and why, for the reader's log.
export interface MalformedEntry {
  index: number;
  error: string;
}

export type EntryVerdict<T> = { ok: true; value: T } | { ok: false; error: string };

export function parseEntry<S extends z.ZodType>(raw: unknown, schema: S, limits: JsonLimits): EntryVerdict<z.infer<S>> {
  const bounds = checkJsonBounds(raw, limits);
  if (!bounds.ok) return { ok: false, error: bounds.reason };
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { ok: true, value: parsed.data };
  return {
    ok: false,
    error: parsed.error.issues
      .slice(0, 5)
      .map((i) => `${i.path.join('.') || 'entry'}: ${i.message}`)
      .join('; '),
  };
}
