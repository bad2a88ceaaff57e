import { parseArgs } from 'node:util';
import nacl from 'tweetnacl';
import { auditHistory } from '../../shared/audit/history.js';
import { replayDocument } from '../../shared/audit/replay.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { type DetachedVerify, useEd25519Verifier } from '../../shared/crypto/signatures.js';
import { nodeEd25519Verify, nodeSignPayload } from '../../shared/node/ed25519.js';
import { closureOf, FleetHistory } from '../harness/audit-history.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';

// Replay and verify a synthetic fleet history (issue 13: 10^6 updates in ≤ 10 s on 2 cores).
// Every update carries one signed entry: per host, cycles of one intent, one result and eight
// status changes. The full audit runs with Node's Ed25519; tweetnacl, the core's default, runs
// the same audit on a slice of the hosts (it is ~two orders slower) and the raw verify rate of
// both is measured on the same messages. Rates are extrapolated linearly to 10^6 and say so.
// Usage: npm run bench:audit -- [--updates N] [--hosts N] [--nacl-hosts N]
const { values } = parseArgs({
  options: {
    updates: { type: 'string', default: '50000' },
    hosts: { type: 'string', default: '100' },
    'nacl-hosts': { type: 'string', default: '2' },
  },
});
const targetUpdates = Number(values.updates);
const hostCount = Number(values.hosts);
const naclHosts = Number(values['nacl-hosts']);
const STATUSES_PER_CYCLE = 8;

const org = makeTestOrg();
const history = new FleetHistory(nodeSignPayload);
const started = performance.now();
history.policy(signPolicy(basePolicy(org, { issuedAt: history.now() }), org.root));
const hostKeys = Array.from({ length: hostCount }, (_, i) => generateSigningKey(`h${i}`));
for (const [i, key] of hostKeys.entries()) history.enroll(`h${i}`, key.publicKey, org.alice);
const perHost = Math.ceil(targetUpdates / hostCount);
for (let i = 0; i < hostCount; i += 1) {
  const host = `h${i}`;
  const key = hostKeys[i]!;
  let written = 0;
  let statusSeq = 0;
  for (let generation = 1; written < perHost; generation += 1) {
    const { digest } = history.intent(host, generation, closureOf(generation), [org.alice]);
    history.result(host, key, { seq: generation, generation, closure: closureOf(generation), intentDigest: digest });
    written += 2;
    for (let s = 0; s < STATUSES_PER_CYCLE && written < perHost; s += 1, written += 1) {
      statusSeq += 1;
      history.status(
        host,
        key,
        statusSeq,
        { generation, closure: closureOf(generation) },
        { lastResultSeq: generation },
      );
    }
  }
}
const source = history.source();
const totalEntries = [...history.docs.values()].reduce((n, d) => n + d.entries.length, 0);
const generatedSeconds = (performance.now() - started) / 1000;

let verifications = 0;
const counting =
  (verify: DetachedVerify): DetachedVerify =>
  (m, s, p) => {
    verifications += 1;
    return verify(m, s, p);
  };

function time<T>(run: () => T): { value: T; seconds: number } {
  const t = performance.now();
  const value = run();
  return { value, seconds: (performance.now() - t) / 1000 };
}

// 1. Replay alone: every document's updates applied one by one, gc off.
const replay = time(() => {
  let n = 0;
  for (const name of source.documents)
    replayDocument(
      source.entries(name),
      { arrays: ['intents', 'results', 'policies', 'enrollments'], maps: ['status'] },
      () => {
        n += 1;
      },
    ).destroy();
  return n;
});

// 2. The full audit (hash chain, replay, every signature) with Node's Ed25519.
useEd25519Verifier(counting(nodeEd25519Verify));
const full = time(() => auditHistory(source, { orgRootKeys: [org.root.publicKey], keepEvent: () => false }));
const nodeVerifications = verifications;
if (full.value.anomalies.length)
  throw new Error(`synthetic history has anomalies: ${JSON.stringify(full.value.anomalies.slice(0, 3))}`);

// 3. The same audit with tweetnacl, on a slice of the hosts.
verifications = 0;
useEd25519Verifier(counting(nacl.sign.detached.verify));
const slice = Array.from({ length: naclHosts }, (_, i) => `h${i}`);
const naclRun = time(() =>
  auditHistory(source, { orgRootKeys: [org.root.publicKey], hosts: slice, keepEvent: () => false }),
);
const naclVerifications = verifications;
useEd25519Verifier(null);

// 4. Raw verify rates on identical messages.
const message = new Uint8Array(400).fill(7);
const pair = nacl.sign.keyPair();
const signature = nacl.sign.detached(message, pair.secretKey);
const rate = (verify: DetachedVerify, n: number): number => {
  const t = performance.now();
  for (let i = 0; i < n; i += 1) if (!verify(message, signature, pair.publicKey)) throw new Error('verify failed');
  return n / ((performance.now() - t) / 1000);
};
const nodeRaw = rate(nodeEd25519Verify, 5000);
const naclRaw = rate(nacl.sign.detached.verify, 300);

const perSecond = (n: number, s: number): number => Math.round(n / s);
const figures = {
  entries: totalEntries,
  hosts: hostCount,
  generationSeconds: Number(generatedSeconds.toFixed(1)),
  replayOnly: { seconds: Number(replay.seconds.toFixed(2)), updatesPerSecond: perSecond(replay.value, replay.seconds) },
  auditNode: {
    seconds: Number(full.seconds.toFixed(2)),
    updatesPerSecond: perSecond(full.value.entries, full.seconds),
    signaturesVerified: nodeVerifications,
    signaturesPerSecond: perSecond(nodeVerifications, full.seconds),
    extrapolatedSecondsFor1e6Updates: Number(((full.seconds * 1e6) / full.value.entries).toFixed(1)),
  },
  auditTweetnacl: {
    hosts: naclHosts,
    entries: naclRun.value.entries,
    seconds: Number(naclRun.seconds.toFixed(2)),
    updatesPerSecond: perSecond(naclRun.value.entries, naclRun.seconds),
    signaturesPerSecond: perSecond(naclVerifications, naclRun.seconds),
    extrapolatedSecondsFor1e6Updates: Number(((naclRun.seconds * 1e6) / naclRun.value.entries).toFixed(1)),
  },
  rawVerifyPerSecond: {
    node: Math.round(nodeRaw),
    tweetnacl: Math.round(naclRaw),
    ratio: Number((nodeRaw / naclRaw).toFixed(1)),
  },
};
console.log(JSON.stringify(figures, null, 2));
