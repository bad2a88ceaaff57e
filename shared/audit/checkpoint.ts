import * as encoding from 'lib0/encoding';
import { digest } from 'lib0/hash/sha256';
import * as Y from 'yjs';
import { toHex, utf8Bytes } from '../crypto/encoding.js';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import { POLICY_DOC, readPolicyEntries, TIMESTAMP_DOC } from '../documents/fleet.js';
import type { SignedCheckpoint } from '../schemas/checkpoint.js';
import type { Policy } from '../schemas/policy.js';
import { walkPolicyChain } from '../trust/policy-chain.js';
import type { Anomaly, AuditSource } from './history.js';
import type { LogHead } from './log-chain.js';

// Signed checkpoints: the coordinator's timestamp key signs, next to each freshness timestamp, a
// hash of every document's log head (fleet/timestamp's own excepted: it changes with every
// checkpoint). The coordinator stores the heads behind each checkpoint (only those that changed
// since the one before); whoever kept a signed checkpoint — an agent does (shared/audit/kept-checkpoints.ts) — can later
// make a coordinator show which heads it signed, and check the history it serves against them.
// A coordinator that rewrites or cuts history after a checkpoint was kept either serves the heads
// it signed, which the rewritten chains no longer reach (head-mismatch), or other heads, which do
// not hash to what it signed (checkpoint-mismatch), or none (checkpoint-missing).

// The heads behind checkpoint `seq`: the documents whose head moved since the checkpoint before.
export interface CheckpointHeads {
  seq: number;
  at: string;
  changed: LogHead[];
}

const DOMAIN = utf8Bytes('outpost-heads-v1\n');

export const checkpointedDocument = (document: string): boolean => document !== TIMESTAMP_DOC;

// sha256 over the heads in document order, each as (document, seq, hash), length-prefixed.
export function headsRoot(heads: readonly LogHead[]): string {
  const sorted = [...heads].sort((a, b) => (a.document < b.document ? -1 : a.document > b.document ? 1 : 0));
  const encoder = encoding.createEncoder();
  encoding.writeUint8Array(encoder, DOMAIN);
  encoding.writeVarUint(encoder, sorted.length);
  for (const head of sorted) {
    encoding.writeVarString(encoder, head.document);
    encoding.writeVarUint(encoder, head.seq);
    encoding.writeVarString(encoder, head.hash);
  }
  return toHex(digest(encoding.toUint8Array(encoder)));
}

// Every head at checkpoint `seq`, folded from the stored changes up to it; null when the
// coordinator stored nothing under that seq.
export function headsAtCheckpoint(stored: readonly CheckpointHeads[], seq: number): LogHead[] | null {
  if (!stored.some((c) => c.seq === seq)) return null;
  const heads = new Map<string, LogHead>();
  for (const checkpoint of [...stored].sort((a, b) => a.seq - b.seq)) {
    if (checkpoint.seq > seq) break;
    for (const head of checkpoint.changed) heads.set(head.document, head);
  }
  return [...heads.values()];
}

// The policy chain a history's policy document walks to from the pinned root keys.
export function policyChainOf(source: AuditSource, orgRootKeys: readonly string[]): Policy[] {
  if (!source.documents.includes(POLICY_DOC)) return [];
  const doc = new Y.Doc({ gc: false });
  for (const entry of source.entries(POLICY_DOC)) {
    try {
      Y.applyUpdate(doc, entry.update);
    } catch {
      // An undecodable entry is named by the audit itself.
    }
  }
  const chain = walkPolicyChain([], new Set(orgRootKeys), readPolicyEntries(doc).entries).chain;
  doc.destroy();
  return chain;
}

// Is this checkpoint signed by a timestamp key of the policy version it names?
export function verifyCheckpoint(
  signed: SignedCheckpoint,
  chain: readonly Policy[],
): { ok: true } | { ok: false; reason: string } {
  const { checkpoint, signature } = signed;
  const policy = chain.find((p) => p.version === checkpoint.policyVersion);
  if (!policy)
    return {
      ok: false,
      reason: `it names policy version ${checkpoint.policyVersion}, which the history's policy chain does not reach`,
    };
  if (!policy.timestampKeys.includes(signature.publicKey))
    return {
      ok: false,
      reason: `its key ${signature.publicKey.slice(0, 12)}… is not a timestamp key of policy version ${policy.version}`,
    };
  if (!verifyPayloadSignature('checkpoint', checkpoint, signature))
    return { ok: false, reason: 'its signature does not verify' };
  return { ok: true };
}

// Kept checkpoints → heads the history must still reach (checked like heads an auditor kept),
// or anomalies saying why a checkpoint gives none. `stored` is what the coordinator (or the
// bundle) says lies behind each checkpoint; null when it gave nothing at all.
export function headsFromKeptCheckpoints(
  kept: readonly SignedCheckpoint[],
  chain: readonly Policy[],
  stored: readonly CheckpointHeads[] | null,
): { heads: LogHead[]; anomalies: Anomaly[] } {
  const heads: LogHead[] = [];
  const anomalies: Anomaly[] = [];
  const anomaly = (code: Anomaly['code'], detail: string): void => {
    anomalies.push({ code, document: TIMESTAMP_DOC, logSeq: null, receivedAt: null, host: null, detail });
  };
  for (const signed of kept) {
    const { checkpoint } = signed;
    const what = `kept checkpoint #${checkpoint.seq} (${checkpoint.at})`;
    const verdict = verifyCheckpoint(signed, chain);
    if (!verdict.ok) {
      anomaly('invalid-kept-checkpoint', `${what} proves nothing: ${verdict.reason}`);
      continue;
    }
    const behind = stored ? headsAtCheckpoint(stored, checkpoint.seq) : null;
    if (!behind) {
      anomaly(
        'checkpoint-missing',
        `${what} is signed by the coordinator's timestamp key, but the history holds no heads for it (lost, withheld, or the log was replaced)`,
      );
      continue;
    }
    const root = headsRoot(behind);
    if (root !== checkpoint.heads.root || behind.length !== checkpoint.heads.count) {
      anomaly(
        'checkpoint-mismatch',
        `${what} signed ${checkpoint.heads.count} heads hashing to ${checkpoint.heads.root.slice(0, 16)}…, but the heads now given for it are ${behind.length} hashing to ${root.slice(0, 16)}… (history rewritten after it was signed)`,
      );
      continue;
    }
    heads.push(...behind);
  }
  return { heads, anomalies };
}
