import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { KNOWN_CRASHES } from '../fuzz/known.js';
import { checkParsers } from '../fuzz/parser-properties.js';
import { runFuzz, summarize } from '../fuzz/run-fuzz.js';

// The short, seeded fuzz run (the long one is `npm run fuzz -- --count 1000000`, docs/fuzzing.md):
// a live coordinator in open mode, one with --org-root, a relay and an agent with real Nix get
// malformed HTTP, websocket handshakes and frames, y-protocols messages, Yjs updates, document
// names, relay-link frames, JSON bodies, policies, intents, timestamps, statuses and narinfos.
// None may crash, every health check (a stock client's sync round trip, a policy push, an
// admin's intent applied by the agent) must pass before, during and after, and no process may
// keep growing. Inputs of crashes reported and not yet fixed on main are left out by name
// (test/fuzz/known.ts); everything else, including anything new, fails this test.
const SEED = 20_260_611;

test('the narinfo parser and the relay-link frame decoder hold their contracts for any input', () => {
  const result = checkParsers(SEED, 300);
  assert.ok(result.narinfo.parsed > 0, 'some generated narinfos parse, so the checks reach past the first line');
  assert.ok(result.narinfo.verified > 0, 'some generated narinfos verify, so the checks reach the signature');
  assert.ok(result.muxFrames.decoded > 0, 'some generated frames decode');
});

test('live coordinator, relay and agent survive a seeded fuzz run, keep serving and stay bounded', async () => {
  const log: string[] = [];
  const report = await runFuzz({
    seed: SEED,
    count: 1_000,
    // A budget for slow machines (from the first input); the count ends the run first on a quiet
    // one, and a loaded one still delivers at least 300 inputs.
    maxDurationMs: 15_000,
    minDelivered: 300,
    skipKnown: KNOWN_CRASHES,
    only: [],
    reduce: true,
    sampleIntervalMs: 500,
    healthIntervalMs: 3_000,
    agentCheckIntervalMs: 60_000,
    log: (line) => log.push(line),
  });
  const summary = `${summarize(report)}\n${log.join('\n')}`;
  console.log(
    log.filter((l) => /set up|before the first|fuzzing done|after the last|stopped and cleaned/.test(l)).join('\n'),
  );
  assert.equal(report.crashes.length, 0, `no crash\n${summary}`);
  assert.equal(report.healthFailures.length, 0, `every health check passes\n${summary}`);
  for (const [name, verdict] of Object.entries(report.growth))
    assert.ok(verdict.bounded, `${name}: ${verdict.reason}\n${summary}`);
  assert.ok(report.delivered >= 300, `inputs were delivered (${report.delivered})\n${summary}`);
  const agentInputs = Object.entries(report.classes)
    .filter(([name]) => name.endsWith('@agent'))
    .reduce((n, [, stat]) => n + stat.delivered, 0);
  assert.ok(agentInputs > 0, `the agent got inputs too\n${summary}`);
  // Every server class reached its target: the relay under a hostile upstream included, whose
  // workers share one link and once counted inputs sent on a link already closing.
  for (const [name, stat] of Object.entries(report.classes))
    if (!name.endsWith('@agent')) assert.ok(stat.delivered > 0, `${name} delivered inputs\n${summary}`);
  assert.ok(report.healthChecksPassed >= 8, `health checks ran before, during and after\n${summary}`);
});

test.run();
