import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type CheckpointHeads,
  headsAtCheckpoint,
  headsFromKeptCheckpoints,
  headsRoot,
} from '../../../../shared/audit/checkpoint.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Checkpoint, SignedCheckpoint } from '../../../../shared/schemas/checkpoint.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// Signed checkpoints of the log heads: the heads behind one are folded from what the coordinator
// stored, hashed in document order, and a kept checkpoint yields heads only when its signature,
// its key and the stored heads all hold.
const org = makeTestOrg();
const chain = [basePolicy(org)];
const hash = (c: string): string => c.repeat(64);
const stored: CheckpointHeads[] = [
  {
    seq: 1,
    at: '2025-01-01T00:00:00.000Z',
    changed: [
      { document: 'fleet/policy', seq: 1, hash: hash('a') },
      { document: 'hosts/h1/desired', seq: 1, hash: hash('b') },
    ],
  },
  { seq: 2, at: '2025-01-01T00:01:00.000Z', changed: [] },
  { seq: 3, at: '2025-01-01T00:02:00.000Z', changed: [{ document: 'hosts/h1/desired', seq: 2, hash: hash('c') }] },
];

function signed(seq: number, heads = headsAtCheckpoint(stored, seq)!, key = org.timestamp): SignedCheckpoint {
  const checkpoint: Checkpoint = {
    kind: 'checkpoint',
    seq,
    at: stored.find((c) => c.seq === seq)?.at ?? '2025-01-01T00:00:00.000Z',
    policyVersion: 1,
    heads: { count: heads.length, root: headsRoot(heads) },
  };
  return { checkpoint, signature: signPayload('checkpoint', checkpoint, key) };
}

test('heads are folded up to a checkpoint; the root does not depend on their order', () => {
  assert.equal(headsAtCheckpoint(stored, 2), stored[0]!.changed);
  assert.equal(headsAtCheckpoint(stored, 3), [stored[0]!.changed[0]!, stored[2]!.changed[0]!]);
  assert.is(headsAtCheckpoint(stored, 4), null, 'nothing stored under 4');
  const heads = headsAtCheckpoint(stored, 3)!;
  assert.is(headsRoot(heads), headsRoot([...heads].reverse()));
  assert.is.not(headsRoot(heads), headsRoot(headsAtCheckpoint(stored, 1)!));
});

test('a kept checkpoint gives its heads; a forged, foreign or unmatched one gives an anomaly', () => {
  assert.equal(headsFromKeptCheckpoints([signed(3)], chain, stored), {
    heads: headsAtCheckpoint(stored, 3)!,
    anomalies: [],
  });
  const codes = (kept: SignedCheckpoint, given: CheckpointHeads[] | null = stored): string[] =>
    headsFromKeptCheckpoints([kept], chain, given).anomalies.map((a) => a.code);
  assert.equal(codes(signed(3, undefined, org.alice)), ['invalid-kept-checkpoint'], 'not a timestamp key');
  const altered = signed(3);
  altered.checkpoint = { ...altered.checkpoint, seq: 2 };
  assert.equal(codes(altered), ['invalid-kept-checkpoint'], 'signature over other content');
  const otherVersion = signed(3);
  otherVersion.checkpoint = { ...otherVersion.checkpoint, policyVersion: 7 };
  assert.equal(codes(otherVersion), ['invalid-kept-checkpoint'], 'a policy version the chain lacks');
  assert.equal(codes(signed(3), null), ['checkpoint-missing']);
  assert.equal(codes(signed(3), stored.slice(0, 2)), ['checkpoint-missing']);
  const rewritten = structuredClone(stored);
  rewritten[2]!.changed[0]!.hash = hash('d');
  assert.equal(codes(signed(3), rewritten), ['checkpoint-mismatch']);
});

test.run();
