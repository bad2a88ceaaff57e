import type * as Y from 'yjs';
import { type SignedAction, signedActionSchema } from '../schemas/action.js';
import { type SignedIntent, signedIntentSchema } from '../schemas/intent.js';
import { ENTRY_LIMITS, type MalformedEntry, parseEntry } from './entries.js';

// hosts/<id>/desired: an append-only array of signed intents. Readers never trust the
// array's contents: every entry is bounded and parsed here (a malformed one is reported with its
// index, never thrown) and verified later by the reader's policy.
export const INTENTS_KEY = 'intents';

export interface IntentEntry {
  index: number;
  signed: SignedIntent;
}

export type { MalformedEntry } from './entries.js';

export function intentsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(INTENTS_KEY);
}

export function readIntentEntries(doc: Y.Doc): { entries: IntentEntry[]; malformed: MalformedEntry[] } {
  const entries: IntentEntry[] = [];
  const malformed: MalformedEntry[] = [];
  intentsArray(doc)
    .toArray()
    .forEach((raw, index) => {
      const parsed = parseEntry(raw, signedIntentSchema, ENTRY_LIMITS.intent);
      if (parsed.ok) entries.push({ index, signed: parsed.value });
      else malformed.push({ index, error: parsed.error });
    });
  return { entries, malformed };
}

export function appendIntent(doc: Y.Doc, signed: SignedIntent): void {
  intentsArray(doc).push([signedIntentSchema.parse(signed)]);
}

// Remote action requests (shared/schemas/action.ts) live beside the intents, in an array of
// their own, read with the same bounds: a malformed entry is reported by index, never thrown.
export const ACTIONS_KEY = 'actions';

export interface ActionEntry {
  index: number;
  signed: SignedAction;
}

export function actionsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(ACTIONS_KEY);
}

export function readActionEntries(doc: Y.Doc): { entries: ActionEntry[]; malformed: MalformedEntry[] } {
  const entries: ActionEntry[] = [];
  const malformed: MalformedEntry[] = [];
  actionsArray(doc)
    .toArray()
    .forEach((raw, index) => {
      const parsed = parseEntry(raw, signedActionSchema, ENTRY_LIMITS.action);
      if (parsed.ok) entries.push({ index, signed: parsed.value });
      else malformed.push({ index, error: parsed.error });
    });
  return { entries, malformed };
}

export function appendAction(doc: Y.Doc, signed: SignedAction): void {
  actionsArray(doc).push([signedActionSchema.parse(signed)]);
}
