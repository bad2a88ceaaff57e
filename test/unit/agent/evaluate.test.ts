import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate } from '../../../agent/evaluate.js';
import { sleepMs } from '../../../agent/run-loop.js';
import { installGate } from '../../../agent/select.js';
import { publishCurrentStatus, statusContent } from '../../../agent/status-publish.js';
import { appendIntent } from '../../../shared/documents/desired.js';
import { readCurrentStatus } from '../../../shared/documents/status.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import type { IntentVerdict } from '../../../shared/trust/verify-intent.js';
import {
  admin,
  closure,
  deploy,
  harness,
  logged,
  removeHarnessDirectories,
  results,
  stranger,
} from './runtime-fixtures.js';

// The agent's decisions on an explicit runtime record: which intent becomes the target
// (refusals reported once, superseded ones skipped, a newer one replacing a target not yet
// installed), what a freeze holds back, and a target dropped when its signer loses its power.
// The maintenance window is closed (runtime-fixtures.ts), so a chosen target waits for it and the
// pipeline goes no further: nothing is downloaded or installed here.

test.after.each(removeHarnessDirectories);

test('target choice: the newest valid intent, refusals reported once, older ones skipped, newer ones replace it', async () => {
  const { agent, events } = await harness();
  const first = deploy(agent, 1);
  const second = deploy(agent, 2);
  const forged = deploy(agent, 3, stranger);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, second);
  assert.is(agent.state.phase, 'waiting-for-window', 'the maintenance window is closed');
  assert.is(agent.state.floorGeneration, 2, 'the floor rose before anything was done');
  assert.equal(
    results(agent).map((r) => [r.generation, r.outcome, r.reason.split(':')[0]]),
    [[3, 'refused', 'unknown-signer']],
  );
  assert.ok(agent.state.handledDigests.includes(first) && agent.state.handledDigests.includes(forged));
  const published = readCurrentStatus(agent.statusDoc)?.status;
  assert.equal(published?.target, { generation: 2, closure: closure(2) });
  assert.is(published?.window?.waitingFor, 'download');
  assert.is(published?.window?.nextStart, '2025-01-13T03:00:00.000Z');
  assert.is(sleepMs(agent), 60_000, 'the window is days away: wake at the regular interval');

  await evaluate(agent);
  assert.is(results(agent).length, 1, 'nothing reported twice');
  assert.is(agent.state.target?.digest, second);

  const newer = deploy(agent, 4);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, newer, 'not yet installed: a newer intent replaces it');
  assert.is(agent.state.floorGeneration, 4);
  assert.is(logged(events, 'superseded').filter((e) => e.by === 4).length, 1);
});

test('frozen trust: nothing new is taken on or refused, the target is held, and the status says why', async () => {
  const { agent, events, freeze } = await harness();
  const target = deploy(agent, 1);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, target);

  freeze('no fresh signed timestamp for 3 s');
  deploy(agent, 2);
  deploy(agent, 3, stranger);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, target, 'no newer intent taken on while frozen');
  assert.is(results(agent).length, 0, 'no refusal decided under a possibly stale policy');
  assert.equal(installGate(agent, agent.state.target!), {
    decision: 'hold',
    reason: 'no fresh signed timestamp for 3 s',
  });
  assert.is(logged(events, 'install-held').length, 1, 'logged once per reason');
  const trust = statusContent(agent).trust;
  assert.is(trust?.frozen, true);
  assert.is(trust?.reason, 'no fresh signed timestamp for 3 s');
  assert.is(logged(events, 'trust-frozen').length, 1);

  // Without a target, a frozen agent starts nothing either.
  const idle = await harness();
  idle.freeze('withheld');
  deploy(idle.agent, 1);
  await evaluate(idle.agent);
  assert.is(idle.agent.state.target, null);
  assert.equal(results(idle.agent), []);

  freeze(null);
  await evaluate(agent);
  assert.is(agent.state.target?.signed.intent.generation, 2, 'fresh again: the newer intent wins');
  assert.is(statusContent(agent).trust?.frozen, false);
});

test('a target whose signer lost its power before installing is dropped with a signed refusal', async () => {
  const { agent, revoke } = await harness();
  deploy(agent, 1);
  await evaluate(agent);
  assert.is(agent.state.target?.signed.intent.generation, 1);
  revoke(admin);
  await evaluate(agent);
  assert.is(agent.state.target, null);
  assert.is(agent.state.phase, 'idle');
  const [refusal] = results(agent);
  assert.is(refusal?.outcome, 'refused');
  assert.match(refusal?.reason ?? '', /checked again before installing/);
});

test('an intent that waited for its policy version and then waits for more signatures: both waits are logged', async () => {
  // The desired document can sync before the policy: the intent names version 1, which the agent
  // does not hold yet; once it does, one admin's signature is short of the threshold.
  const { agent, events } = await harness();
  let policyVersion: number | null = null;
  Object.assign(agent.config.trust, { mode: 'policy', policyVersion: () => policyVersion });
  agent.verify = (): IntentVerdict =>
    policyVersion === null
      ? { ok: false, code: 'unknown-policy-version', reason: 'policy version 1 is not known here' }
      : { ok: false, code: 'below-threshold', reason: '1 of 2 required admin signatures (alice)' };
  const intent = {
    kind: 'intent' as const,
    host: 'h1',
    generation: 1,
    closure: closure(1),
    action: 'switch' as const,
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: admin.name,
    policyVersion: 1,
  };
  appendIntent(agent.desiredDoc, signIntent(intent, admin));
  await evaluate(agent);
  assert.is(logged(events, 'waiting-for-policy').length, 1);
  policyVersion = 1;
  await evaluate(agent);
  await evaluate(agent);
  assert.is(logged(events, 'waiting-for-signatures').length, 1, 'the wait for signatures is logged, once');
  assert.equal(agent.awaiting, { generation: 1, reason: '1 of 2 required admin signatures (alice)' });
  assert.is(results(agent).length, 0, 'a wait, not a refusal');
});

test('while a refusal is reported, a status published beside the loop still names the intent that waits for signatures', async () => {
  // Apps, tunnels and download milestones publish the status whenever they have news, also while
  // evaluate() awaits the report of a refusal.
  const { agent } = await harness();
  const refuse = new Set<number>();
  agent.verify = (signed): IntentVerdict =>
    refuse.has(signed.intent.generation)
      ? { ok: false, code: 'unknown-signer', reason: 'no admin key signed it' }
      : signed.intent.generation === 3
        ? { ok: false, code: 'below-threshold', reason: '1 of 2 required admin signatures (alice)' }
        : { ok: false, code: 'unknown-policy-version', reason: 'not yet' };
  Object.assign(agent.config.trust, { mode: 'policy', policyVersion: () => null });
  const entry = (generation: number) => ({
    kind: 'intent' as const,
    host: 'h1',
    generation,
    closure: closure(generation),
    action: 'switch' as const,
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: admin.name,
    policyVersion: 1,
  });
  // Generation 2 waits for its policy version (nothing reported), generation 3 for signatures.
  appendIntent(agent.desiredDoc, signIntent(entry(2), admin));
  appendIntent(agent.desiredDoc, signIntent(entry(3), admin));
  await evaluate(agent);
  assert.is(readCurrentStatus(agent.statusDoc)?.status.awaitingSignatures?.generation, 3);
  // Now generation 2 is refused, and a publisher beside the loop runs as its result is written.
  refuse.add(2);
  const published: (number | null)[] = [];
  let beside: Promise<void> | null = null;
  agent.statusDoc.on('update', () => {
    published.push(readCurrentStatus(agent.statusDoc)?.status.awaitingSignatures?.generation ?? null);
    beside ??= publishCurrentStatus(agent);
  });
  await evaluate(agent);
  await beside;
  assert.is(results(agent).length, 1, 'generation 2 refused');
  assert.ok(beside, 'a status was published beside the loop');
  assert.not.ok(published.includes(null), `every status written names generation 3 (${published.join(', ')})`);
  assert.is(readCurrentStatus(agent.statusDoc)?.status.awaitingSignatures?.generation, 3);
});

test.run();
