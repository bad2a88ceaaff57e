import type * as Y from 'yjs';
import { type SignedIntent, signedIntentSchema } from '../schemas/intent.js';

// hosts/<id>/desired: an append-only array of signed intents. Readers never trust the
// array's contents: every entry is parsed here and verified later by the reader's policy.
export const INTENTS_KEY = 'intents';

export interface IntentEntry {
  index: number;
  signed: SignedIntent;
}

export interface MalformedEntry {
  index: number;
  error: string;
}

export function intentsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(INTENTS_KEY);
}

export function readIntentEntries(doc: Y.Doc): { entries: IntentEntry[]; malformed: MalformedEntry[] } {
  const entries: IntentEntry[] = [];
  const malformed: MalformedEntry[] = [];
  intentsArray(doc)
    .toArray()
    .forEach((raw, index) => {
      const parsed = signedIntentSchema.safeParse(raw);
      if (parsed.success) entries.push({ index, signed: parsed.data });
      else
        malformed.push({
          index,
          error: parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
        });
    });
  return { entries, malformed };
}

export function appendIntent(doc: Y.Doc, signed: SignedIntent): void {
  intentsArray(doc).push([signedIntentSchema.parse(signed)]);
}
