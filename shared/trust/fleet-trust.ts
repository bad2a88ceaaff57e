import type * as Y from 'yjs';
import { z } from 'zod';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import { POLICY_DOC, readPolicies, readTimestamp, TIMESTAMP_DOC } from '../documents/fleet.js';
import type { Logger } from '../log.js';
import type { SignedIntent } from '../schemas/intent.js';
import {
  type Policy,
  policySchema,
  type SignedTimestamp,
  signedTimestampSchema,
  unknownPolicyFields,
} from '../schemas/policy.js';
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
});
type TrustFile = z.infer<typeof trustFileSchema>;

export interface Freshness {
  enforced: boolean;
  lastTimestampAt: string | null;
  frozen: boolean;
  // When, without a fresh timestamp, the reader will count as frozen (ms; null: never).
  freezesAt: number | null;
  reason: string;
}

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
  logger: Logger;
}

async function loadTrustState(store: TrustStore): Promise<TrustFile> {
  const text = await store.load();
  if (text === null) return { version: 1, chain: [], timeFloor: 0, lastTimestamp: null };
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

// A timestamp counts when signed by a timestamp key of the policy in force and newer than the last.
export function acceptTimestamp(
  signed: SignedTimestamp,
  policy: Policy | undefined,
  last: SignedTimestamp | null,
): boolean {
  if (!policy?.timestampKeys.includes(signed.signature.publicKey)) return false;
  if (!verifyPayloadSignature('timestamp', signed.timestamp, signed.signature)) return false;
  return (
    !last ||
    signed.timestamp.seq > last.timestamp.seq ||
    Date.parse(signed.timestamp.at) > Date.parse(last.timestamp.at)
  );
}

export async function openFleetTrust(options: FleetTrustOptions): Promise<FleetTrust> {
  const { logger } = options;
  let state = await loadTrustState(options.store);
  const openedAt = Date.now();
  const pinned = new Set(options.orgRootKeys);
  const listeners: (() => void)[] = [];
  const policyConnection = options.follow(POLICY_DOC);
  const timestampConnection = options.follow(TIMESTAMP_DOC);
  let saving: Promise<void> = Promise.resolve();

  const now = (): number => Math.max(Date.now(), state.timeFloor);
  const persist = (): void => {
    state = { ...state, timeFloor: now() };
    const snapshot = JSON.stringify(state);
    saving = saving
      .then(() => options.store.save(snapshot))
      .catch((error: Error) => logger.error({ event: 'trust-save-failed', err: error }, 'cannot save trust state'));
  };

  const onPolicies = (): void => {
    const walk = walkPolicyChain(state.chain, pinned, readPolicies(policyConnection.doc));
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
      state = { ...state, chain: walk.chain };
      logger.info(
        { event: 'policy-version', document: POLICY_DOC, version: walk.chain.at(-1)!.version },
        'policy in force',
      );
      persist();
      for (const listener of listeners) listener();
    }
  };
  const onTimestamp = (): void => {
    const signed = readTimestamp(timestampConnection.doc);
    if (!signed || !acceptTimestamp(signed, state.chain.at(-1), state.lastTimestamp)) return;
    state = { ...state, lastTimestamp: signed, timeFloor: Math.max(state.timeFloor, Date.parse(signed.timestamp.at)) };
    persist();
    for (const listener of listeners) listener();
  };
  policyConnection.doc.on('update', onPolicies);
  timestampConnection.doc.on('update', onTimestamp);

  return {
    chain: () => state.chain,
    now,
    verifier(host) {
      return (signed) => verifyIntentUnderPolicy(signed, { host, chain: state.chain, now: now() });
    },
    epochOf(signed) {
      return state.chain.find((p) => p.version === signed.intent.policyVersion)?.epoch ?? 0;
    },
    freshness() {
      const policy = state.chain.at(-1);
      if (!policy || policy.timestampKeys.length === 0)
        return {
          enforced: false,
          lastTimestampAt: null,
          frozen: false,
          freezesAt: null,
          reason: 'the policy names no timestamp keys',
        };
      const at = state.lastTimestamp?.timestamp.at ?? null;
      // A reader that never saw a timestamp counts from when it started looking.
      const freezesAt = (at ? Date.parse(at) : openedAt) + options.freezeAfterMs;
      const frozen = now() > freezesAt;
      return {
        enforced: true,
        lastTimestampAt: at,
        frozen,
        freezesAt,
        reason: frozen
          ? `no fresh signed timestamp since ${at ?? 'ever'} (limit ${Math.round(options.freezeAfterMs / 1000)} s): updates may be withheld`
          : 'fresh',
      };
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
