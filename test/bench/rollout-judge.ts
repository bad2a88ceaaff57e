import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { appendRolloutEntries, forgetParsedEntries, readRolloutEntries } from '../../shared/rollout/document.js';
import { judgeRollout, newJudgeMemo, type RolloutJudgeMemo } from '../../shared/rollout/judge.js';
import { forgetVerifiedSignatures } from '../../shared/rollout/verify.js';
import type { SignedResult } from '../../shared/schemas/report.js';
import { basePolicy, makeTestOrg } from '../harness/policy-fixtures.js';
import { fixtureHosts, hostResult, makePlan } from '../harness/rollout-fixtures.js';

// `node dist/test/bench/rollout-judge.js`: what the coordinator spends judging one rollout while
// its hosts report (docs/performance.md, "Rollouts"). A 1,000-host plan in waves of 10/30/60 %;
// every host's signed success arrives as evidence in batches (as the coordinator writes them,
// every 100 ms while hosts report), and after each batch the rollout is judged as the coordinator
// judges it — afresh (the code before the incremental tally) or with its memo (EvidenceTally). The
// two alternate in one process, so both see the same load; CPU time of this process is reported,
// including verifying each result's signature once (~0.1 ms each), which both pay.

const USAGE = `Usage: node dist/test/bench/rollout-judge.js [--hosts N] [--batch N] [--rounds N]

  --hosts N    hosts of the plan (default 1000)
  --batch N    results per evidence batch (default 20: ~the number a 1,000-host wave reports
               per 100 ms)
  --rounds N   rollouts judged by each method, alternating (default 3)`;

function cpuMs(): number {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1000;
}

function main(): void {
  const { values } = parseArgs({
    options: {
      hosts: { type: 'string', default: '1000' },
      batch: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '3' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  installNodeEd25519();
  const hostCount = Number(values.hosts);
  const batch = Number(values.batch);
  const rounds = Number(values.rounds);
  const org = makeTestOrg();
  const chain = [basePolicy(org)];
  const hosts = fixtureHosts(hostCount);
  const first = Math.round(hostCount * 0.1);
  const middle = Math.round(hostCount * 0.4);
  const t0 = Date.now() - 3_600_000;
  const plan = makePlan(org.alice, {
    waves: [
      { name: 'first', hosts: hosts.slice(0, first) },
      { name: 'middle', hosts: hosts.slice(first, middle) },
      { name: 'final', hosts: hosts.slice(middle) },
    ],
    createdAt: t0,
  });
  const results: SignedResult[] = hosts.map((h, i) => hostResult(plan, h, 'applied', t0 + i * 10));
  const judged = new Set(['cosignatures', 'actions', 'evidence'] as const);

  // One rollout's reporting: evidence batch after batch into the document, a judgement after each.
  // Each rollout parses and verifies its entries once, as the coordinator does (nothing cached from
  // the run before).
  const run = (memo: RolloutJudgeMemo | undefined): { cpuMs: number; judgements: number; state: string } => {
    forgetParsedEntries();
    forgetVerifiedSignatures();
    const doc = new Y.Doc({ gc: false });
    appendRolloutEntries(doc, { plans: [plan] });
    let state = '';
    let judgements = 0;
    let spent = 0;
    for (let start = 0; start < results.length; start += batch) {
      appendRolloutEntries(doc, { evidence: results.slice(start, start + batch) });
      const before = cpuMs();
      const view = judgeRollout(readRolloutEntries(doc, { arrays: judged }), plan, chain, Date.now(), memo);
      spent += cpuMs() - before;
      judgements += 1;
      state = view.state;
    }
    return { cpuMs: spent, judgements, state };
  };

  // Warm up both (compiling).
  run(undefined);
  run(newJudgeMemo());
  const afresh: number[] = [];
  const tallied: number[] = [];
  let judgements = 0;
  for (let round = 0; round < rounds; round++) {
    const a = run(undefined);
    const b = run(newJudgeMemo());
    if (a.state !== b.state || a.state !== 'complete') throw new Error(`states differ: ${a.state} / ${b.state}`);
    afresh.push(a.cpuMs);
    tallied.push(b.cpuMs);
    judgements = a.judgements;
  }
  const median = (v: number[]): number => [...v].sort((x, y) => x - y)[Math.floor(v.length / 2)]!;
  const result = {
    hosts: hostCount,
    batch,
    judgementsPerRollout: judgements,
    afreshCpuMs: afresh.map(Math.round),
    incrementalCpuMs: tallied.map(Math.round),
    ratio: Math.round((median(tallied) / median(afresh)) * 100) / 100,
  };
  console.log(JSON.stringify(result));
  console.log(
    `judging a ${hostCount}-host rollout after each of ${judgements} evidence batches of ${batch}: afresh ${Math.round(median(afresh))} ms CPU, incremental ${Math.round(median(tallied))} ms CPU (${result.ratio}×)`,
  );
}

main();
