import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { saveStatusDocument } from '../../agent/status-store.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult, KEPT_RESULTS, readResults } from '../../shared/documents/status.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { readKeyFile, writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Result } from '../../shared/schemas/report.js';
import { closureOf } from '../harness/audit-history.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { makeCacheKey } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// A real agent whose status document already holds 120 results (from earlier deployments) prunes
// it when it reports its next result: the coordinator's live copy shrinks to the newest 64 plus the
// new one, numbering goes on after the highest, and `outpost audit verify` over the coordinator's
// log still sees every result, with no gap.
const org = makeTestOrg();
const EARLIER = 120;
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
let agent: DaemonProcess | null = null;
let host: SimulatedHost;
const files: Record<string, string> = {};

test.before(async () => {
  dir = temporaryDirectory('status-prune');
  for (const [name, key] of Object.entries({ alice: org.alice, carol: org.carol })) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  host = await prepareHost(dir, 'h1');
  const enrollment = {
    kind: 'enrollment' as const,
    host: 'h1',
    hostKey: host.publicKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  const approved = await postJson(coordinator.url, '/api/enroll/approve', {
    enrollment,
    signatures: [signPayload('enrollment', enrollment, org.alice)],
  });
  assert.is(approved.status, 200, approved.body.error);
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  removeDirectory(dir);
});

test('the next result prunes the live document to the newest 64; the audit still sees all 121 without a gap', async () => {
  // Earlier refusals (1 KiB of output each), signed by the host, in the agent's own saved copy.
  const key = await readKeyFile(host.keyFile);
  const saved = new Y.Doc({ gc: true });
  for (let seq = 1; seq <= EARLIER; seq += 1) {
    const result: Result = {
      kind: 'result',
      host: 'h1',
      seq,
      at: new Date().toISOString(),
      outcome: 'refused',
      generation: seq,
      closure: closureOf(seq),
      action: 'switch',
      intentDigest: seq.toString(16).padStart(64, '0'),
      reason: 'expired: an earlier refusal',
      outputTail: 'o'.repeat(1000),
    };
    appendResult(saved, { result, signature: signPayload('result', result, key) });
  }
  await fs.mkdir(host.stateDir, { recursive: true });
  await saveStatusDocument(host.stateDir, saved);
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'status-prune-cache-1');
  agent = startAgentProcess(host, {
    coordinators: [coordinator.url],
    adminKeys: [],
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey],
  });
  const reader = connectDocument(coordinator.url, statusDocName('h1'), { identity: org.carol });
  try {
    await waitFor('the earlier results synced to the coordinator', async () => {
      await waitForSync(reader, 10_000);
      return readResults(reader.doc).results.length === EARLIER;
    });
    // The agent deletes only what its upstream confirmed holding (agent/status-delivery.ts), and
    // that confirmation answers its own probe: the coordinator having the results does not mean the
    // agent heard so. Without it, result #121 comes first and prunes nothing.
    await waitFor(
      'the agent to hear that the coordinator holds its results',
      () => (agent && logEvents(agent, 'status-delivered').length > 0 ? true : null),
      30_000,
      100,
    );
    const before = Y.encodeStateAsUpdate(reader.doc).length;
    // An intent the agent refuses (expired an hour ago): its result is the next one.
    const intent: Intent = {
      kind: 'intent',
      host: 'h1',
      generation: 1,
      closure: closureOf(1),
      action: 'switch',
      issuedAt: new Date(Date.now() - 7_200_000).toISOString(),
      expiresAt: new Date(Date.now() - 3_600_000).toISOString(),
      issuer: 'alice',
      policyVersion: 1,
    };
    const writer = connectDocument(coordinator.url, desiredDocName('h1'), { identity: org.alice });
    try {
      await waitForSync(writer, 10_000);
      appendIntent(writer.doc, { intent, signatures: [signPayload('intent', intent, org.alice)] });
      const seqs = await waitFor(
        'result #121 and the pruning on the coordinator',
        () => {
          const seqs = readResults(reader.doc).results.map((r) => r.result.seq);
          return seqs.includes(EARLIER + 1) && seqs.length === KEPT_RESULTS + 1 ? seqs : null;
        },
        60_000,
        200,
      );
      assert.equal(
        seqs,
        Array.from({ length: KEPT_RESULTS + 1 }, (_, i) => EARLIER - KEPT_RESULTS + 1 + i),
      );
      const newest = readResults(reader.doc).results.at(-1)!.result;
      assert.is(newest.outcome, 'refused');
      assert.match(newest.reason, 'expired');
    } finally {
      writer.close();
    }
    // A fresh reader loads what the coordinator holds (gc on status documents).
    const fresh = connectDocument(coordinator.url, statusDocName('h1'), { identity: org.carol });
    let after = 0;
    try {
      await waitForSync(fresh, 10_000);
      after = Y.encodeStateAsUpdate(fresh.doc).length;
    } finally {
      fresh.close();
    }
    console.log(`coordinator's live status document: ${before} B with ${EARLIER} results, ${after} B after pruning`);
    assert.ok(after < before * 0.6, `${after} vs ${before}`);
  } finally {
    reader.close();
  }
  const verify = await runCli(
    [
      'audit',
      'verify',
      '--coordinator',
      coordinator.url,
      '--key',
      files.carol!,
      '--org-root',
      org.root.publicKey,
      '--all',
      '--json',
    ],
    { timeoutMs: 120_000 },
  );
  const report = JSON.parse(verify.stdout) as { anomalies: { code: string; detail: string }[] };
  assert.equal(report.anomalies, [], verify.stdout);
  assert.is(verify.code, 0, verify.stderr);
  const timeline = await runCli(
    [
      'audit',
      'timeline',
      '--coordinator',
      coordinator.url,
      '--key',
      files.carol!,
      '--org-root',
      org.root.publicKey,
      '--host',
      'h1',
      '--json',
    ],
    { timeoutMs: 120_000 },
  );
  assert.is(timeline.code, 0, timeline.stderr);
  const { events } = JSON.parse(timeline.stdout) as { events: { kind: string; verified: boolean; summary: string }[] };
  assert.is(events.filter((e) => e.kind === 'result' && e.verified).length, EARLIER + 1, 'every result, pruned or not');
  const removals = events.filter((e) => e.kind === 'removal');
  assert.ok(removals.length >= 1 && removals.every((e) => e.verified), JSON.stringify(removals));
  assert.match(removals.map((e) => e.summary).join(' '), `results #1–#${EARLIER - KEPT_RESULTS} of h1`);
});

test.run();
