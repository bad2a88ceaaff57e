import { performance } from 'node:perf_hooks';
import * as Y from 'yjs';
import { appendRolloutEntries, forgetParsedEntries } from '../../shared/rollout/document.js';
import { forgetVerifiedSignatures } from '../../shared/rollout/verify.js';
import { judgeRolloutDocument, prepareRolloutDocument } from '../../shared/views/rollout-judged.js';
import { buildReport } from '../../shared/views/rollout-report.js';
import { basePolicy, makeTestOrg } from '../harness/policy-fixtures.js';
import { fixtureHosts, hostResult, makePlan } from '../harness/rollout-fixtures.js';

// What the web editor's rollout view costs per redraw (web/src/ui/rollouts.tsx): one rollout of
// N hosts in three waves (10/30/60 %), the first two proven by host-signed results, judged with
// the agents' code (shared/views/rollout-judged.ts → judgeRollout) and turned into the report
// `outpost rollout status` prints. Peers in the same run: the first look as the page makes it
// (result and action signatures checked ahead with WebCrypto's native Ed25519, here Node's, then
// judged), the same with tweetnacl alone (a browser without WebCrypto Ed25519), a judgement again
// after a change (parsing and verdicts cached), and a redraw with nothing changed (the memo).
// Usage: node dist/test/bench/web-rollout.js [--hosts N] [--rounds R]
const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const HOSTS = option('hosts', 1000);
const ROUNDS = option('rounds', 5);

const org = makeTestOrg();
const chain = [basePolicy(org)];
const hosts = fixtureHosts(HOSTS);
const first = Math.max(1, Math.round(HOSTS * 0.1));
const middle = Math.max(1, Math.round(HOSTS * 0.3));
const t0 = Date.now() - 3_600_000;
const plan = makePlan(org.alice, {
  waves: [
    { name: 'first', hosts: hosts.slice(0, first) },
    { name: 'middle', hosts: hosts.slice(first, first + middle) },
    { name: 'final', hosts: hosts.slice(first + middle) },
  ],
  createdAt: t0,
});
const doc = new Y.Doc();
appendRolloutEntries(doc, {
  plans: [plan],
  evidence: hosts.slice(0, first + middle).map((h, i) => hostResult(plan, h, 'applied', t0 + 1000 + i)),
});

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
function time(work: () => void): number {
  const started = performance.now();
  work();
  return performance.now() - started;
}

const copyOf = (source: Y.Doc): Y.Doc => {
  const copy = new Y.Doc();
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(source));
  return copy;
};

const native: number[] = [];
const cold: number[] = [];
const again: number[] = [];
const memo: number[] = [];
const report: number[] = [];
for (let round = 0; round < ROUNDS; round += 1) {
  forgetParsedEntries();
  forgetVerifiedSignatures();
  const now = Date.now();
  // What the page does: signatures checked ahead with native Ed25519 (WebCrypto), then judged.
  const fresh = copyOf(doc);
  const started = performance.now();
  await prepareRolloutDocument(fresh);
  judgeRolloutDocument(fresh, [...chain], now);
  native.push(performance.now() - started);
  forgetParsedEntries();
  forgetVerifiedSignatures();
  // A new chain array each time: the memo judges again, as after a change of the policy.
  cold.push(time(() => judgeRolloutDocument(doc, [...chain], now)));
  again.push(time(() => judgeRolloutDocument(doc, [...chain], now)));
  const stable = [...chain];
  const judged = judgeRolloutDocument(doc, stable, now);
  memo.push(time(() => judgeRolloutDocument(doc, stable, now + 1000)));
  if (!judged.ok) throw new Error(judged.reason);
  if (judged.view.state !== 'running' || judged.view.waves[2]?.open !== true)
    throw new Error(`unexpected rollout state ${judged.view.state}`);
  report.push(time(() => buildReport(judged.view, new Map())));
}

const rows = [
  ['first look as the page makes it: results and actions checked ahead with WebCrypto', median(native)],
  ['first look: every entry parsed, every signature verified (tweetnacl)', median(cold)],
  ['judged again after a change (parsed entries and verdicts cached)', median(again)],
  ['redraw with nothing changed (memo: state vector compared)', median(memo)],
  ['report for the page from a judgement (buildReport)', median(report)],
] as const;
console.log(`rollout of ${HOSTS} hosts, ${first + middle} results; median of ${ROUNDS} rounds`);
for (const [what, ms] of rows) console.log(`${ms.toFixed(ms < 1 ? 3 : 1).padStart(10)} ms  ${what}`);
console.log(
  `the page's first look costs ${(median(native) / median(cold)).toFixed(3)}× a first look with tweetnacl alone; judging again costs ${(median(again) / median(memo)).toFixed(0)}× a memo hit; the tweetnacl first look ${(median(cold) / median(again)).toFixed(0)}× judging again`,
);
