import { copyFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type * as Y from 'yjs';
import { actionLock, actionsFile, loadActions, loadActionsFile, processActions } from '../../../agent/actions.js';
import { evaluate } from '../../../agent/evaluate.js';
import { installGate } from '../../../agent/select.js';
import { statusContent } from '../../../agent/status-publish.js';
import type { SigningKey } from '../../../shared/crypto/keys.js';
import { appendAction } from '../../../shared/documents/desired.js';
import { actionResultsArray, readActionResults } from '../../../shared/documents/status.js';
import type { ActionKind, SignedAction } from '../../../shared/schemas/action.js';
import { signAction } from '../../../shared/trust/sign-action.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';
import { admin, deploy, harness, logged, removeHarnessDirectories, stranger } from './runtime-fixtures.js';

// The agent's side of remote actions on an explicit runtime record (static admin-key trust): a
// lock holds intents until the unlock, locks and unlocks apply in the order they were signed, a
// request delivered again is not run again (nor after a restart), and nobody answers forgeries.
// No reboot here: the fixture's reboot command would be the real one.

test.after.each(removeHarnessDirectories);

let counter = 0;
function request(action: ActionKind, issuedAgoMs: number, key: SigningKey = admin): SignedAction {
  counter += 1;
  return signAction(
    {
      kind: 'action',
      action,
      host: 'h1',
      id: counter.toString(16).padStart(32, '0'),
      issuedAt: new Date(Date.now() - issuedAgoMs).toISOString(),
      expiresAt: new Date(Date.now() + 600_000).toISOString(),
      issuer: key.name,
    },
    key,
  );
}

const answers = (agent: Parameters<typeof actionLock>[0]) =>
  readActionResults(agent.statusDoc).results.map((r) => r.result);

test('lock holds every new intent (neither taken on nor refused) and shows in the status; unlock lets the newest go on', async () => {
  const { agent, events } = await harness();
  await loadActions(agent);
  appendAction(agent.desiredDoc, request('lock', 1000));
  await processActions(agent);
  assert.is(actionLock(agent)?.by, 'alice');
  assert.equal(
    answers(agent).map((a) => [a.seq, a.action, a.outcome]),
    [[1, 'lock', 'done']],
  );
  const digest = deploy(agent, 1);
  await evaluate(agent);
  assert.is(agent.state.target, null, 'no target while locked');
  assert.ok(!agent.state.handledDigests.includes(digest), 'not refused either: it waits');
  assert.is(statusContent(agent).lock?.by, 'alice');
  assert.ok(logged(events, 'install-held').length > 0);

  appendAction(agent.desiredDoc, request('unlock', 500));
  await processActions(agent);
  assert.is(actionLock(agent), null);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, digest, 'unlocked: the intent that waited is the target');
  assert.is(statusContent(agent).lock, undefined);
});

test('a lock taken while a target waits for its window holds it before it is installed', async () => {
  const { agent } = await harness();
  await loadActions(agent);
  deploy(agent, 1);
  await evaluate(agent);
  assert.ok(agent.state.target);
  appendAction(agent.desiredDoc, request('lock', 1000));
  await processActions(agent);
  assert.equal(installGate(agent, agent.state.target!).decision, 'hold');
});

test('locks and unlocks apply in the order they were signed: one released late by a peer changes nothing', async () => {
  const { agent } = await harness();
  await loadActions(agent);
  const early = request('unlock', 60_000);
  appendAction(agent.desiredDoc, request('lock', 1000));
  await processActions(agent);
  appendAction(agent.desiredDoc, early);
  await processActions(agent);
  assert.ok(actionLock(agent), 'still locked');
  const refused = answers(agent).find((a) => a.id === early.request.id);
  assert.is(refused?.outcome, 'refused');
  assert.is(refused?.code, 'superseded');
});

test('delivered again, and after a restart: answered once, run once; the lock survives the restart', async () => {
  const { agent } = await harness();
  await loadActions(agent);
  const lock = request('lock', 1000);
  appendAction(agent.desiredDoc, lock);
  appendAction(agent.desiredDoc, lock);
  await processActions(agent);
  appendAction(agent.desiredDoc, lock);
  await processActions(agent);
  assert.is(answers(agent).length, 1);
  // A restart: the records and the lock are read back from actions.json.
  await loadActions(agent);
  await processActions(agent);
  assert.is(answers(agent).length, 1, 'not answered again');
  assert.is(actionLock(agent)?.id, lock.request.id);
});

test("an answer's number is in actions.json before any peer sees the answer: an agent killed right then never numbers another answer the same", async () => {
  const { agent } = await harness();
  await loadActions(agent);
  // What a SIGKILL leaves at the instant the answer enters the status document (peers see it then).
  const killed = temporaryDirectory('killed-agent');
  const answersArray = actionResultsArray(agent.statusDoc);
  let seen = 0;
  agent.statusDoc.on('afterTransaction', (transaction: Y.Transaction) => {
    if (seen > 0 || ![...transaction.changed.keys()].some((t) => t === answersArray)) return;
    seen += 1;
    copyFileSync(actionsFile(agent.config.stateDir), actionsFile(killed));
  });
  appendAction(agent.desiredDoc, request('lock', 2000));
  await processActions(agent);
  assert.equal(
    answers(agent).map((a) => a.seq),
    [1],
  );
  // Started again from that actions.json, with a status document that never got the answer.
  const { agent: again } = await harness();
  copyFileSync(actionsFile(killed), actionsFile(again.config.stateDir));
  await loadActions(again);
  appendAction(again.desiredDoc, request('unlock', 1000));
  await processActions(again);
  const seqs = answers(again).map((a) => a.seq);
  assert.ok(seqs.length > 0 && seqs.every((seq) => seq > 1), `numbered after #1: ${JSON.stringify(seqs)}`);
  assert.is((await loadActionsFile(killed)).resultSeq, 1, 'actions.json had #1 when the answer became visible');
  removeDirectory(killed);
});

test('forgeries are logged, never answered; an admin-signed request for another host is refused with an answer', async () => {
  const { agent, events } = await harness();
  await loadActions(agent);
  appendAction(agent.desiredDoc, request('lock', 1000, stranger));
  await processActions(agent);
  await processActions(agent);
  assert.is(actionLock(agent), null);
  assert.is(answers(agent).length, 0);
  assert.is(logged(events, 'action-ignored').length, 1, 'logged once');
  const other = signAction({ ...request('lock', 1000).request, host: 'h2' }, admin);
  appendAction(agent.desiredDoc, other);
  await processActions(agent);
  assert.equal(
    answers(agent).map((a) => [a.outcome, a.code]),
    [['refused', 'wrong-host']],
  );
});

test.run();
