import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import { POLICY_DOC, readPolicies, readTimestamp, TIMESTAMP_DOC } from '../documents/fleet.js';
import type { Logger } from '../log.js';
import { writeFileDurably } from '../node/durable-file.js';
import type { SignedIntent } from '../schemas/intent.js';
import {
  type Policy,
  policySchema,
  type SignedTimestamp,
  signedTimestampSchema,
  unknownPolicyFields,
} from '../schemas/policy.js';
import { connectDocument, type DocumentConnection } from '../sync/connect.js';
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

export interface FleetTrustOptions {
  serverUrl: string;
  // Every sync endpoint (coordinator, relays) to fail over between; defaults to serverUrl.
  endpoints?: string[];
  orgRootKeys: string[];
  stateDir: string;
  freezeAfterMs: number;
  logger: Logger;
  // Reconnect backoff of the policy and timestamp documents (agents on satellite links: minutes).
  backoff?: { baseBackoffMs: number; maxBackoffMs: number };
}

export function trustFile(stateDir: string): string {
  return join(stateDir, 'trust.json');
}

async function loadTrustFile(path: string): Promise<TrustFile> {
  try {
    const parsed = trustFileSchema.safeParse(JSON.parse(await fs.readFile(path, 'utf8')));
    if (!parsed.success)
      throw new Error(
        `${path} is invalid: ${parsed.error.issues[0]?.message}; move it aside to re-walk from the pinned org root`,
      );
    return parsed.data;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT')
      return { version: 1, chain: [], timeFloor: 0, lastTimestamp: null };
    throw error;
  }
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
  const path = trustFile(options.stateDir);
  let state = await loadTrustFile(path);
  const openedAt = Date.now();
  const pinned = new Set(options.orgRootKeys);
  const listeners: (() => void)[] = [];
  const endpoints = options.endpoints ?? [options.serverUrl];
  const policyConnection: DocumentConnection = connectDocument(endpoints, POLICY_DOC, { ...options.backoff });
  const timestampConnection: DocumentConnection = connectDocument(endpoints, TIMESTAMP_DOC, { ...options.backoff });
  let saving: Promise<void> = Promise.resolve();

  const now = (): number => Math.max(Date.now(), state.timeFloor);
  const persist = (): void => {
    state = { ...state, timeFloor: now() };
    const snapshot = JSON.stringify(state);
    saving = saving
      .then(() => writeFileDurably(path, snapshot))
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
