import type * as Y from 'yjs';
import type { z } from 'zod';
import type { JsonLimits } from '../crypto/canonical.js';
import { type EntryVerdict, type MalformedEntry, parseEntry } from '../documents/entries.js';
import { type SignedResult, signedResultSchema } from '../schemas/report.js';
import {
  type PlanCosignature,
  planCosignatureSchema,
  type RolloutId,
  type SignedPlan,
  type SignedRolloutAction,
  signedPlanSchema,
  signedRolloutActionSchema,
} from './schemas.js';

// fleet/rollout-<id>: written only by the coordinator, after it checked each entry as readers
// will (a fleet document); read by agents, relays and admins, who check every entry again. Four
// append-only arrays: the signed plan, co-signatures, admin actions, and evidence (hosts' own
// signed results).
export const ROLLOUT_DOC_PREFIX = 'fleet/rollout-';
export const rolloutDocName = (id: RolloutId): string => `${ROLLOUT_DOC_PREFIX}${id}`;
export const rolloutIdOfDoc = (name: string): string | null =>
  name.startsWith(ROLLOUT_DOC_PREFIX) ? name.slice(ROLLOUT_DOC_PREFIX.length) : null;

export const ROLLOUT_KEYS = {
  plans: 'plans',
  cosignatures: 'cosignatures',
  actions: 'actions',
  evidence: 'evidence',
} as const;

const KIB = 1024;
export const ROLLOUT_ENTRY_LIMITS = {
  // 10,000 hosts at ~250 bytes each.
  plan: { maxDepth: 16, maxBytes: 4 * 1024 * KIB },
  cosignature: { maxDepth: 8, maxBytes: 4 * KIB },
  action: { maxDepth: 8, maxBytes: 8 * KIB },
  result: { maxDepth: 32, maxBytes: 64 * KIB },
} satisfies Record<string, JsonLimits>;

// Entries are stored as JSON text, one string each: a coordinator serving this document to a
// thousand agents then copies bytes, where nested objects would be walked and re-encoded key by
// key for every one of them (a 1,000-host plan has 4,000 fields). Readers bound the text, parse
// it, and bound and check the value like any entry.
export const encodeRolloutEntry = (value: unknown): string => JSON.stringify(value);

function parseStored<S extends z.ZodType>(raw: unknown, schema: S, limits: JsonLimits): EntryVerdict<z.infer<S>> {
  if (typeof raw !== 'string') return parseEntry(raw, schema, limits);
  if (raw.length > limits.maxBytes) return { ok: false, error: `larger than ${limits.maxBytes} bytes of JSON` };
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { ok: false, error: 'not JSON' };
  }
  return parseEntry(value, schema, limits);
}

// Stored entries never change, and an agent reads the document again at every change of it: each
// entry is bounded and parsed once (per schema; the newest 20,000 texts are remembered).
const MAX_CACHED = 20_000;
let textVerdicts = new WeakMap<z.ZodType, Map<string, EntryVerdict<unknown>>>();

// For benchmarks that time a reader's first look at a document.
export function forgetParsedEntries(): void {
  textVerdicts = new WeakMap();
}
const objectVerdicts = new WeakMap<object, EntryVerdict<unknown>>();

function parseCached<S extends z.ZodType>(raw: unknown, schema: S, limits: JsonLimits): EntryVerdict<z.infer<S>> {
  if (typeof raw === 'string') {
    let cache = textVerdicts.get(schema);
    if (!cache) {
      cache = new Map();
      textVerdicts.set(schema, cache);
    }
    let verdict = cache.get(raw);
    if (verdict === undefined) {
      verdict = parseStored(raw, schema, limits);
      if (cache.size >= MAX_CACHED) cache.delete(cache.keys().next().value!);
      cache.set(raw, verdict);
    }
    return verdict as EntryVerdict<z.infer<S>>;
  }
  if (typeof raw !== 'object' || raw === null) return parseStored(raw, schema, limits);
  let verdict = objectVerdicts.get(raw);
  if (verdict === undefined) {
    verdict = parseStored(raw, schema, limits);
    objectVerdicts.set(raw, verdict);
  }
  return verdict as EntryVerdict<z.infer<S>>;
}

export interface RolloutEntries {
  plans: SignedPlan[];
  cosignatures: PlanCosignature[];
  actions: SignedRolloutAction[];
  evidence: SignedResult[];
  // Entries skipped (bounds or schema), with the array they were in.
  malformed: (MalformedEntry & { array: keyof typeof ROLLOUT_KEYS })[];
}

// The host a stored result claims to be from, before it is parsed: only to skip entries a reader
// does not need (they are never trusted on this; what is used is parsed and checked in full, and a
// writer who lies here can only hide an entry, as it could by leaving it out).
function claimedHost(raw: unknown): unknown {
  if (typeof raw === 'string') return /"host":"([a-z0-9-]{1,63})"/.exec(raw.slice(0, 512))?.[1];
  if (typeof raw !== 'object' || raw === null) return undefined;
  const result = (raw as { result?: unknown }).result;
  return typeof result === 'object' && result !== null ? (result as { host?: unknown }).host : undefined;
}

// Every entry, or with `evidenceHosts` only the evidence of those hosts (an agent judges one wave:
// it need not parse the results of a thousand others), or with `arrays` only those arrays (a
// host's view checks a rollout intent against the plan and its co-signatures alone).
export function readRolloutEntries(
  doc: Y.Doc,
  options: { evidenceHosts?: ReadonlySet<string>; arrays?: ReadonlySet<keyof typeof ROLLOUT_KEYS> } = {},
): RolloutEntries {
  const out: RolloutEntries = { plans: [], cosignatures: [], actions: [], evidence: [], malformed: [] };
  const read = <S extends z.ZodType>(
    array: keyof typeof ROLLOUT_KEYS,
    schema: S,
    limits: JsonLimits,
    into: z.infer<S>[],
  ): void => {
    if (options.arrays && !options.arrays.has(array)) return;
    const only = array === 'evidence' ? options.evidenceHosts : undefined;
    doc
      .getArray<unknown>(ROLLOUT_KEYS[array])
      .toArray()
      .forEach((raw, index) => {
        if (only) {
          const host = claimedHost(raw);
          if (typeof host === 'string' && !only.has(host)) return;
        }
        const verdict = parseCached(raw, schema, limits);
        if (verdict.ok) into.push(verdict.value);
        else out.malformed.push({ array, index, error: verdict.error });
      });
  };
  read('plans', signedPlanSchema, ROLLOUT_ENTRY_LIMITS.plan, out.plans);
  read('cosignatures', planCosignatureSchema, ROLLOUT_ENTRY_LIMITS.cosignature, out.cosignatures);
  read('actions', signedRolloutActionSchema, ROLLOUT_ENTRY_LIMITS.action, out.actions);
  read('evidence', signedResultSchema, ROLLOUT_ENTRY_LIMITS.result, out.evidence);
  return out;
}

export function appendRolloutEntries(
  doc: Y.Doc,
  entries: Partial<Pick<RolloutEntries, 'plans' | 'cosignatures' | 'actions' | 'evidence'>>,
): void {
  const push = <S extends z.ZodType>(
    array: keyof typeof ROLLOUT_KEYS,
    schema: S,
    items: unknown[] | undefined,
  ): void => {
    if (items?.length)
      doc.getArray<unknown>(ROLLOUT_KEYS[array]).push(items.map((item) => encodeRolloutEntry(schema.parse(item))));
  };
  doc.transact(() => {
    push('plans', signedPlanSchema, entries.plans);
    push('cosignatures', planCosignatureSchema, entries.cosignatures);
    push('actions', signedRolloutActionSchema, entries.actions);
    push('evidence', signedResultSchema, entries.evidence);
  });
}
