import { copyFileSync, existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { loadAgentState, stateFile } from '../../../agent/pipeline/state.js';
import { createAgentRuntime } from '../../../agent/run-agent.js';
import type { AgentRuntime } from '../../../agent/runtime.js';
import { publishCurrentStatus, report, writeReservedResults } from '../../../agent/status-publish.js';
import { loadStatusDocument, statusDocFile } from '../../../agent/status-store.js';
import { readOwnCurrentStatus, resultsArray, STATUS_MAP } from '../../../shared/documents/status.js';
import type { Intent } from '../../../shared/schemas/intent.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';
import {
  admin,
  closure,
  fakeConnection,
  harness,
  hostKey,
  logged,
  NOW,
  removeHarnessDirectories,
  results,
  stranger,
} from './runtime-fixtures.js';

// Signed results and statuses: a number is never used twice, neither when the saved counter lags
// what the document already holds (a save that failed after its result was appended) nor when the
// agent is killed the moment peers see a result or status (numbers are saved before that).

test.after.each(removeHarnessDirectories);
const killedDirs: string[] = [];
test.after.each(() => {
  for (const dir of killedDirs.splice(0)) removeDirectory(dir);
});

const result = (seq: number) => ({
  kind: 'result' as const,
  host: 'h1',
  seq,
  at: new Date(NOW).toISOString(),
  outcome: 'applied' as const,
  generation: seq,
  closure: closure(seq),
  action: 'switch' as const,
  intentDigest: 'ab'.repeat(32),
  reason: '',
  outputTail: '',
});

test("a result is numbered after this host's own highest signed result, not after a lagging counter; others' entries do not count", async () => {
  const { agent } = await harness();
  appendSignedResult(agent.statusDoc, result(5), hostKey);
  appendSignedResult(agent.statusDoc, result(900), stranger);
  assert.is(agent.state.resultSeq, 0, 'the counter lags the document');
  const intent: Intent = {
    kind: 'intent',
    host: 'h1',
    generation: 6,
    closure: closure(6),
    action: 'switch',
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: admin.name,
  };
  const signed = signIntent(intent, admin);
  const seq = await report(agent, { signed, digest: intentDigest(signed) }, 'refused', 'test', '');
  assert.is(seq, 6, 'after own #5; the stranger-signed #900 is ignored');
  assert.equal(
    results(agent).map((r) => r.seq),
    [5, 900, 6],
  );
});

function target(generation: number) {
  const intent: Intent = {
    kind: 'intent',
    host: 'h1',
    generation,
    closure: closure(generation),
    action: 'switch',
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: admin.name,
  };
  const signed = signIntent(intent, admin);
  return { signed, digest: intentDigest(signed) };
}

// What a SIGKILL leaves on disk at the moment the agent changes `type` in its status document,
// which is when its peers see the change: the agent's state and status document files, copied
// there and then into a directory of their own (each is replaced whole by a rename, so a copy is
// one complete version); with the document as the peer received it.
function killedWhenWritten(
  agent: AgentRuntime,
  type: Y.Array<unknown> | Y.Map<unknown>,
): { dir: string; update: Uint8Array }[] {
  const kills: { dir: string; update: Uint8Array }[] = [];
  agent.statusDoc.on('afterTransaction', (transaction: Y.Transaction) => {
    if (transaction.origin !== 'local' || ![...transaction.changed.keys()].some((t) => t === type)) return;
    const dir = temporaryDirectory('killed-agent');
    killedDirs.push(dir);
    for (const file of [stateFile(agent.config.stateDir), statusDocFile(agent.config.stateDir)])
      if (existsSync(file)) copyFileSync(file, join(dir, basename(file)));
    kills.push({ dir, update: Y.encodeStateAsUpdate(agent.statusDoc) });
  });
  return kills;
}

// The agent started again from what a kill left.
async function restarted(dir: string): Promise<{ agent: AgentRuntime; events: Record<string, unknown>[] }> {
  const { agent, events } = await harness();
  const state = await loadAgentState(dir);
  return { agent: createAgentRuntime(agent.config, state, await loadStatusDocument(dir)), events };
}

test('a result number is saved before any peer sees the result: an agent killed right then numbers its next result after it, though its status document on disk lacks it', async () => {
  const { agent } = await harness();
  const kills = killedWhenWritten(agent, resultsArray(agent.statusDoc));
  assert.is(await report(agent, target(1), 'applied', 'ok', ''), 1);
  assert.is(kills.length, 1);
  const { dir } = kills[0]!;
  assert.not.ok(existsSync(join(dir, basename(statusDocFile(dir)))), 'the status document was not saved yet');
  // Started again from that disk, before any sync: the document lacks #1.
  const { agent: again } = await restarted(dir);
  assert.is(await report(again, target(2), 'applied', 'ok', ''), 2, '#1 is not used twice');
  const onDisk = await loadAgentState(dir);
  assert.is(onDisk.resultSeq, 1, 'state.json had #1 when the result became visible');
  assert.equal(
    onDisk.reservedResults.map((r) => r.result.seq),
    [1],
    'and the signed result, in case it never reached the document',
  );
  assert.equal(
    again.state.reservedResults.map((r) => r.result.seq),
    [1],
    '#1 waits for a sync to learn whether a peer has it',
  );
});

test('after a restart a reserved result is written once the status document has synced, and only if neither copy has it', async () => {
  const { agent } = await harness();
  const kills = killedWhenWritten(agent, resultsArray(agent.statusDoc));
  await report(agent, target(1), 'applied', 'ok', '');
  const { dir, update } = kills[0]!;

  // The peer received #1 before the kill.
  const { agent: peerHadIt, events: quiet } = await restarted(dir);
  const status = fakeConnection();
  peerHadIt.status = status;
  await writeReservedResults(peerHadIt);
  assert.is(peerHadIt.state.reservedResults.length, 1, 'nothing is decided before the sync');
  Y.applyUpdate(peerHadIt.statusDoc, update);
  status.provider.synced = true;
  await writeReservedResults(peerHadIt);
  assert.equal(
    results(peerHadIt).map((r) => r.seq),
    [1],
    'the peer had it: no second copy',
  );
  assert.is(logged(quiet, 'reserved-result-written').length, 0);
  assert.is((await loadAgentState(peerHadIt.config.stateDir)).reservedResults.length, 0, 'the reservation is gone');

  // The peer never received it (the link was down).
  const { agent: lost, events } = await restarted(dir);
  const synced = fakeConnection();
  synced.provider.synced = true;
  lost.status = synced;
  await writeReservedResults(lost);
  assert.equal(results(lost), results(agent), 'written now: the very result signed before the kill');
  assert.equal(
    logged(events, 'reserved-result-written').map((e) => e.seq),
    [1],
  );
  assert.is((await loadAgentState(lost.config.stateDir)).reservedResults.length, 0);
});

test('two reports in flight at once take two numbers', async () => {
  const { agent } = await harness();
  const seqs = await Promise.all([
    report(agent, target(1), 'refused', 'x', ''),
    report(agent, target(2), 'refused', 'y', ''),
  ]);
  assert.equal(seqs, [1, 2]);
  assert.equal(
    results(agent).map((r) => [r.seq, r.generation]),
    [
      [1, 1],
      [2, 2],
    ],
  );
  assert.is(agent.state.reservedResults.length, 0);
});

test('a status number is saved before any peer sees the status: an agent killed right then numbers its next status after it', async () => {
  const { agent } = await harness();
  const kills = killedWhenWritten(agent, agent.statusDoc.getMap(STATUS_MAP));
  await publishCurrentStatus(agent);
  const written = readOwnCurrentStatus(agent.statusDoc, hostKey.publicKey)!.status;
  assert.is(kills.length, 1);
  const { agent: again } = await restarted(kills[0]!.dir);
  again.awaiting = { generation: 3, reason: 'waiting for more signatures' };
  await publishCurrentStatus(again);
  const next = readOwnCurrentStatus(again.statusDoc, hostKey.publicKey)!.status;
  assert.ok(next.seq > written.seq, `a different status never takes the number peers saw (#${next.seq})`);
  assert.is((await loadAgentState(kills[0]!.dir)).statusSeq, written.seq, 'state.json had the number');
});

test.run();
