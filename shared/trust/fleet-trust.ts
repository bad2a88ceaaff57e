import * as Y from 'yjs';
import { z } from 'zod';
import { verifyCheckpoint } from '../audit/checkpoint.js';
import { POLICY_DOC, readCheckpoint, readPolicyEntries, readTimestamp, TIMESTAMP_DOC } from '../documents/fleet.js';
import type { Logger } from '../log.js';
import type { SignedCheckpoint } from '../schemas/checkpoint.js';
import type { SignedIntent } from '../schemas/intent.js';
import { type Policy, policySchema, signedTimestampSchema, unknownPolicyFields } from '../schemas/policy.js';
import { isoTimeSchema } from '../schemas/primitives.js';
import { evaluateFreshness, type Freshness, judgeTimestamp, mergeNamed, policyStillNamed } from './freshness.js';
import { walkPolicyChain } from './policy-chain.js';
import { verifyIntentUnderPolicy } from './policy-intent.js';
import type { IntentVerifier } from './verify-intent.js';

// A reader's view of fleet trust (agent, auditor, web editor): the policy chain walked from the
// pinned org root and persisted, so a reader offline for months walks on from where it was and
// never accepts an older version again; signed timestamps for freshness; and a clock that never
// goes backwards.
const trustFileSchema = z.object({
  version: z.literal(1),
  chain: z.array(policySchema),
  timeFloor: z.number(),
  lastTimestamp: signedTimestampSchema.nullable(),
  // A newer policy version a signed timestamp named (freshness.ts); persisted, so a restart
  // cannot make the reader forget that it is behind.
  policyNamed: z.object({ version: z.number().int().positive(), key: z.string() }).nullable().default(null),
  // The latest stretch without fresh signed timestamps longer than the freeze limit: from the last
  // timestamp before it (null: none ever) to the first after it. Intents issued in it get their
  // delivery window from its end (verify-intent.ts, DeliveryWindow).
  contactGap: z.object({ from: isoTimeSchema.nullable(), until: isoTimeSchema }).nullable().default(null),
});
type TrustFile = z.infer<typeof trustFileSchema>;

export type { Freshness } from './freshness.js';
export { acceptTimestamp } from './freshness.js';

export interface FleetTrust {
  chain(): Policy[];
  now(): number;
  verifier(host: string): IntentVerifier;
  // The epoch of the policy version an intent names (0 when unknown).
  epochOf(signed: SignedIntent): number;
  freshness(): Freshness;
  onChange(listener: () => void): void;
  close(): Promise<void>;
}

// Where a reader keeps its walked chain and time floor (a file on Node, IndexedDB in a browser).
export interface TrustStore {
  // Where the state lives, for error messages.
  readonly where: string;
  // The saved text, or null when nothing was saved yet.
  load(): Promise<string | null>;
  save(text: string): Promise<void>;
}

// A replicated document the reader follows (policy, timestamps); the platform opens it.
export interface FollowedDocument {
  doc: Y.Doc;
  close(): void;
}

export interface FleetTrustOptions {
  orgRootKeys: string[];
  store: TrustStore;
  follow: (documentName: string) => FollowedDocument;
  freezeAfterMs: number;
  // How late an intent issued while this reader was in contact may arrive (default 7 days).
  deliveryWindowMs?: number;
  logger: Logger;
  // Given each newer signed checkpoint of the log heads that verifies under the walked chain; the
  // platform keeps some, as evidence of what the coordinator's log held (docs/audit.md).
  keepCheckpoint?: (signed: SignedCheckpoint) => void;
}

export const DEFAULT_DELIVERY_WINDOW_MS = 7 * 86_400_000;

// What a peer may make a reader hold of the documents it follows (threat 11, an endless document
// stream). The policy document keeps every version (a few KiB to a few MiB each) and is measured
// by the bytes received; the timestamp document collects garbage, so it is measured by its size.
export const MAX_POLICY_DOCUMENT_BYTES = 64 * 2 ** 20;
export const MAX_TIMESTAMP_DOCUMENT_BYTES = 2 ** 20;
// Changes are handled at most this often, however fast a peer sends them.
const COALESCE_MS = 20;

interface BoundedFollow {
  doc(): Y.Doc;
  close(): void;
}

// Follows a document through `follow`; when a peer sends more than `limit` the copy is dropped
// (an empty one stands in) and the document followed afresh after a growing pause.
function followWithin(
  options: FleetTrustOptions,
  name: string,
  limit: { receivedBytes?: number; documentBytes?: number },
  changed: () => void,
): BoundedFollow {
  let followed = options.follow(name);
  let received = 0;
  let drops = 0;
  let closed = false;
  let pending: ReturnType<typeof setTimeout> | null = null;
  let reopen: ReturnType<typeof setTimeout> | null = null;
  const tooLarge = (bytes: number, max: number): void => {
    drops += 1;
    const pauseMs = Math.min(300_000, 1000 * 2 ** Math.min(drops, 10));
    options.logger.error(
      { event: 'document-too-large', document: name, bytes, limit: max, retryInMs: pauseMs },
      `peers sent more than ${max} bytes for ${name}: dropped it, following it afresh in ${Math.round(pauseMs / 1000)} s (a relay or coordinator may be flooding it)`,
    );
    const old = followed;
    followed = { doc: new Y.Doc(), close: () => undefined };
    setTimeout(() => old.close(), 0);
    reopen = setTimeout(() => {
      reopen = null;
      if (!closed) attach(options.follow(name));
    }, pauseMs);
  };
  const attach = (next: FollowedDocument): void => {
    followed = next;
    received = 0;
    next.doc.on('update', (update: Uint8Array) => {
      if (followed !== next) return;
      received += update.length;
      if (limit.receivedBytes !== undefined && received > limit.receivedBytes) {
        tooLarge(received, limit.receivedBytes);
        return;
      }
      pending ??= setTimeout(() => {
        pending = null;
        if (closed || followed !== next) return;
        if (limit.documentBytes !== undefined) {
          const size = Y.encodeStateAsUpdate(next.doc).byteLength;
          if (size > limit.documentBytes) {
            tooLarge(size, limit.documentBytes);
            return;
          }
        }
        changed();
      }, COALESCE_MS);
    });
  };
  attach(followed);
  return {
    doc: () => followed.doc,
    close() {
      closed = true;
      for (const timer of [pending, reopen]) if (timer) clearTimeout(timer);
      followed.close();
    },
  };
}

async function loadTrustState(store: TrustStore): Promise<TrustFile> {
  const text = await store.load();
  if (text === null)
    return { version: 1, chain: [], timeFloor: 0, lastTimestamp: null, policyNamed: null, contactGap: null };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${store.where} is not JSON; move it aside to re-walk from the pinned org root`);
  }
  const parsed = trustFileSchema.safeParse(json);
  if (!parsed.success)
    throw new Error(
      `${store.where} is invalid: ${parsed.error.issues[0]?.message}; move it aside to re-walk from the pinned org root`,
    );
  return parsed.data;
}

export async function openFleetTrust(options: FleetTrustOptions): Promise<FleetTrust> {
  const { logger } = options;
  let state = await loadTrustState(options.store);
  const openedAt = Date.now();
  const pinned = new Set(options.orgRootKeys);
  const listeners: (() => void)[] = [];
  let saving: Promise<void> = Promise.resolve();

  const now = (): number => Math.max(Date.now(), state.timeFloor);
  const persist = (): void => {
    state = { ...state, timeFloor: now() };
    const snapshot = JSON.stringify(state);
    saving = saving
      .then(() => options.store.save(snapshot))
      .catch((error: Error) => logger.error({ event: 'trust-save-failed', err: error }, 'cannot save trust state'));
  };

  // Entries skipped as malformed or out of bounds, reported once each.
  const reportedMalformed = new Set<string>();
  const onPolicies = (): void => {
    const { entries, malformed } = readPolicyEntries(policyConnection.doc());
    for (const entry of malformed) {
      const key = `${entry.index}:${entry.error}`;
      if (reportedMalformed.has(key) || reportedMalformed.size >= 100) continue;
      reportedMalformed.add(key);
      logger.warn(
        { event: 'policy-malformed', document: POLICY_DOC, index: entry.index, reason: entry.error },
        `ignoring malformed entry ${entry.index} of ${POLICY_DOC}: ${entry.error}`,
      );
    }
    const walk = walkPolicyChain(state.chain, pinned, entries);
    for (const refused of walk.refused)
      logger.warn(
        { event: 'policy-refused', document: POLICY_DOC, version: refused.version, reason: refused.reason },
        'refusing policy version',
      );
    if (walk.chain.length > state.chain.length) {
      for (const policy of walk.chain.slice(state.chain.length)) {
        const unknown = unknownPolicyFields(policy);
        if (unknown.length)
          logger.warn(
            { event: 'policy-unknown-fields', document: POLICY_DOC, version: policy.version, fields: unknown },
            `policy version ${policy.version} has fields this outpost does not know and ignores (${unknown.join(', ')}); upgrade it`,
          );
      }
      const policy = walk.chain.at(-1)!;
      state = { ...state, chain: walk.chain, policyNamed: policyStillNamed(state.policyNamed, policy) };
      logger.info({ event: 'policy-version', document: POLICY_DOC, version: policy.version }, 'policy in force');
      persist();
      for (const listener of listeners) listener();
      // A timestamp that arrived before the policy could be checked against it counts now.
      onTimestamp();
    }
  };
  let lastCheckpointSeq = 0;
  const onCheckpoint = (): void => {
    if (!options.keepCheckpoint) return;
    const signed = readCheckpoint(timestampConnection.doc());
    if (!signed || signed.checkpoint.seq <= lastCheckpointSeq || !verifyCheckpoint(signed, state.chain).ok) return;
    lastCheckpointSeq = signed.checkpoint.seq;
    options.keepCheckpoint(signed);
  };
  const onTimestamp = (): void => {
    onCheckpoint();
    const signed = readTimestamp(timestampConnection.doc());
    if (!signed) return;
    const policy = state.chain.at(-1);
    const verdict = judgeTimestamp(signed, policy, state.lastTimestamp);
    if (!verdict.accepted) return;
    const named = mergeNamed(state.policyNamed, verdict.namesNewerPolicy);
    if (verdict.namesNewerPolicy && named !== state.policyNamed)
      logger.warn(
        {
          event: 'policy-behind',
          document: TIMESTAMP_DOC,
          version: policy?.version ?? null,
          named: named?.version ?? null,
        },
        `a signed timestamp names policy version ${named?.version}, this reader has version ${policy?.version}: installing nothing until it arrives (a relay or coordinator may be withholding it)`,
      );
    // A timestamp after a silence longer than the freeze limit (or the first ever) ends a gap in
    // contact: what was issued during it could not have arrived before now.
    const previousAt = state.lastTimestamp ? Date.parse(state.lastTimestamp.timestamp.at) : null;
    const at = Date.parse(signed.timestamp.at);
    const contactGap =
      previousAt === null || at - previousAt > options.freezeAfterMs
        ? { from: state.lastTimestamp?.timestamp.at ?? null, until: signed.timestamp.at }
        : state.contactGap;
    if (contactGap !== state.contactGap)
      logger.info(
        { event: 'contact-resumed', document: TIMESTAMP_DOC, from: contactGap?.from ?? null, until: contactGap?.until },
        `fresh signed timestamps again after ${previousAt === null ? 'none ever' : `${Math.round((at - previousAt) / 1000)} s without`}: intents issued meanwhile get their delivery window from now`,
      );
    state = {
      ...state,
      lastTimestamp: signed,
      policyNamed: named,
      contactGap,
      timeFloor: Math.max(state.timeFloor, Date.parse(signed.timestamp.at)),
    };
    persist();
    for (const listener of listeners) listener();
  };
  const policyConnection = followWithin(options, POLICY_DOC, { receivedBytes: MAX_POLICY_DOCUMENT_BYTES }, onPolicies);
  const timestampConnection = followWithin(
    options,
    TIMESTAMP_DOC,
    { documentBytes: MAX_TIMESTAMP_DOCUMENT_BYTES },
    onTimestamp,
  );

  return {
    chain: () => state.chain,
    now,
    verifier(host) {
      return (signed) =>
        verifyIntentUnderPolicy(signed, {
          host,
          chain: state.chain,
          now: now(),
          // Only where signed timestamps say when the reader was in contact (the policy names
          // timestamp keys); without them `expiresAt` alone bounds an intent.
          ...((state.chain.at(-1)?.timestampKeys.length ?? 0) > 0
            ? {
                delivery: {
                  // A silence up to the freeze limit is still contact, so an intent may take that long.
                  windowMs: Math.max(options.deliveryWindowMs ?? DEFAULT_DELIVERY_WINDOW_MS, options.freezeAfterMs),
                  // Never a timestamp yet: out of contact until the first, so nothing is late.
                  gap: !state.lastTimestamp
                    ? { from: null, until: now() }
                    : state.contactGap
                      ? {
                          from: state.contactGap.from === null ? null : Date.parse(state.contactGap.from),
                          until: Date.parse(state.contactGap.until),
                        }
                      : null,
                },
              }
            : {}),
        });
    },
    epochOf(signed) {
      return state.chain.find((p) => p.version === signed.intent.policyVersion)?.epoch ?? 0;
    },
    freshness() {
      return evaluateFreshness({
        policy: state.chain.at(-1),
        lastTimestamp: state.lastTimestamp,
        policyNamed: state.policyNamed,
        openedAt,
        now: now(),
        freezeAfterMs: options.freezeAfterMs,
      });
    },
    onChange(listener) {
      listeners.push(listener);
    },
    async close() {
      policyConnection.close();
      timestampConnection.close();
      await saving;
    },
  };
}
