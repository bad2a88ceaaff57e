import { generateKeyPairSync } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { useEd25519Verifier } from '../../shared/crypto/signatures.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { appendRolloutEntries, forgetParsedEntries } from '../../shared/rollout/document.js';
import { decideFromDocument } from '../../shared/rollout/judge.js';
import { planDigest } from '../../shared/rollout/plan.js';
import { forgetVerifiedSignatures } from '../../shared/rollout/verify.js';
import { basePolicy, makeTestOrg } from '../harness/policy-fixtures.js';
import { type FixtureHost, hostResult, makePlan } from '../harness/rollout-fixtures.js';

// The agent's evidence check alone, in seconds rather than the minutes of bench/rollout.ts:
// `node dist/test/bench/rollout-check.js [--hosts 1000] [--checks 5]`. A plan of waves of 10 %,
// 30 % and 60 % of the hosts, every host of the first two waves' signed success as evidence, and
// `decideFromDocument` for a host of the last wave on a fresh copy of the document with every
// cache forgotten (so 300 results checked at 1,000 hosts), CPU time of this process. Each run is
// its own process, so its first check pays what an agent's first check pays (parsing, digests,
// signatures and compiling the code that does it). The peer: the same checks with tweetnacl.
// See docs/performance.md, "Rollouts".

function nodeKey(name: string): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const secretKey = new Uint8Array(64);
  secretKey.set(seed, 0);
  secretKey.set(pub, 32);
  return { name, publicKey: pub.toString('base64'), secretKey };
}

const { values } = parseArgs({
  options: { hosts: { type: 'string', default: '1000' }, checks: { type: 'string', default: '5' } },
});
const hostCount = Number(values.hosts);
installNodeEd25519();
const org = makeTestOrg();
const hosts: FixtureHost[] = Array.from({ length: hostCount }, (_, i) => {
  const host = `h${String(i + 1).padStart(4, '0')}`;
  return { host, key: nodeKey(host), closure: '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-bench' };
});
const first = Math.round(hostCount * 0.1);
const middle = Math.round(hostCount * 0.4);
const policy = basePolicy(org, { groups: [{ name: 'production', hosts: [], threshold: 1 }], timestampKeys: [] });
const signed = makePlan(org.alice, {
  id: 'bench',
  createdAt: Date.now() - 60_000,
  waves: [
    { name: 'first', hosts: hosts.slice(0, first), gate: { soakSeconds: 1 } },
    { name: 'middle', hosts: hosts.slice(first, middle), gate: { soakSeconds: 1 } },
    { name: 'final', hosts: hosts.slice(middle), gate: { soakSeconds: 1 } },
  ],
});
const digest = planDigest(signed.plan);
const source = new Y.Doc();
appendRolloutEntries(source, { plans: [signed] });
const at = Date.now() - 30_000;
appendRolloutEntries(source, {
  evidence: hosts
    .slice(0, middle)
    .map((h) => hostResult(signed, h, 'applied', at, { reason: 'switch; confirmed: system running' })),
});
const update = Y.encodeStateAsUpdate(source);

const judgeOnce = (): number => {
  forgetParsedEntries();
  forgetVerifiedSignatures();
  const doc = new Y.Doc();
  Y.applyUpdate(doc, update);
  const cpu = process.cpuUsage();
  const decision = decideFromDocument(doc, digest, {
    host: hosts[middle]!.host,
    chain: [policy],
    now: Date.now() + 60_000,
  });
  const used = process.cpuUsage(cpu);
  if (decision.decision !== 'go') throw new Error(`the check did not pass: ${JSON.stringify(decision).slice(0, 300)}`);
  return (used.user + used.system) / 1000;
};
const nodeRuns = Array.from({ length: Number(values.checks) }, judgeOnce);
useEd25519Verifier(null);
const naclRun = judgeOnce();
const sorted = [...nodeRuns].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)]!;
console.log(
  `evidence check, ${middle - first} results of the wave before: first ${nodeRuns[0]!.toFixed(1)} ms CPU, median of ${nodeRuns.length} ${median.toFixed(1)} ms (${nodeRuns.map((ms) => ms.toFixed(1)).join(' ')}); tweetnacl ${naclRun.toFixed(0)} ms (${Math.round(naclRun / median)}×); load ${loadavg()[0].toFixed(1)}`,
);
