import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { loadStatusDocument, saveStatusDocument } from '../../agent/status-store.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult, readOwnResults, readResults } from '../../shared/documents/status.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { readKeyFile, writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Result } from '../../shared/schemas/report.js';
import { closureOf } from '../harness/audit-history.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
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

// The agent's side of safe pruning (agent/status-delivery.ts): a host whose results do not reach
// any upstream deletes none of them, however many it makes. Here the coordinator refuses the
// agent's catch-up of 120 earlier results (its --max-update-size, as a spent writer quota would),
// while the agent goes on receiving intents on its desired document and makes two more results.
// Before, the agent pruned its document to the newest 64 anyway: when the coordinator took its
// writes again, the 56 pruned results arrived as tombstones and `audit verify` named a gap for an
// honest host. Now they wait, arrive with their content, and verify is clean.
const org = makeTestOrg();
const EARLIER = 120;
let dir = '';
let coordinator: (DaemonProcess & { url: string; port: number }) | null = null;
let agent: DaemonProcess | null = null;
let host: SimulatedHost;
const files: Record<string, string> = {};

const startHq = (extra: string[] = [], port = 0) =>
  startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), port, [
    '--org-root',
    org.root.publicKey,
    ...extra,
  ]);

test.before(async () => {
  dir = temporaryDirectory('status-prune-undelivered');
  for (const [name, key] of Object.entries({ alice: org.alice, carol: org.carol })) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  // 64 KiB per update: the 120 earlier results (~1.2 KiB each) do not fit in one.
  coordinator = await startHq(['--max-update-size', '65536']);
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

test('results no upstream holds are not pruned; when they are taken they all reach the log: audit verify finds no gap', async () => {
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
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'status-prune-undelivered-cache-1');
  agent = startAgentProcess(host, {
    coordinators: [coordinator!.url],
    adminKeys: [],
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  await waitFor(
    'the coordinator to refuse the catch-up',
    () => coordinator!.logs().includes('max-update-size'),
    30_000,
  );
  // Two refusals (intents expired an hour ago), each a result the agent makes and cannot deliver.
  const writer = connectDocument(coordinator!.url, desiredDocName('h1'), { identity: org.alice });
  try {
    await waitForSync(writer, 10_000);
    for (const generation of [1, 2]) {
      const intent: Intent = {
        kind: 'intent',
        host: 'h1',
        generation,
        closure: closureOf(generation),
        action: 'switch',
        issuedAt: new Date(Date.now() - 7_200_000).toISOString(),
        expiresAt: new Date(Date.now() - 3_600_000).toISOString(),
        issuer: 'alice',
        policyVersion: 1,
      };
      appendIntent(writer.doc, { intent, signatures: [signPayload('intent', intent, org.alice)] });
      await waitFor(
        `result #${EARLIER + generation} made`,
        () =>
          agent!
            .logs()
            .split('\n')
            .some((l) => l.includes('"event":"result"') && l.includes(`"seq":${EARLIER + generation},`)),
        60_000,
        200,
      );
    }
  } finally {
    writer.close();
  }
  // Stopped (it saves its document): every result is still in it, none pruned.
  await agent.stop();
  agent = null;
  const kept = readOwnResults(await loadStatusDocument(host.stateDir), host.publicKey).map((r) => r.result.seq);
  assert.is(kept.length, EARLIER + 2, `the agent kept every undelivered result (${kept.length})`);
  // HQ takes the writes again (its limit raised): the agent delivers, then prunes.
  const port = coordinator!.port;
  await coordinator!.stop();
  coordinator = await startHq([], port);
  agent = startAgentProcess(host, {
    coordinators: [coordinator.url],
    adminKeys: [],
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  const reader = connectDocument(coordinator.url, statusDocName('h1'), { identity: org.carol });
  try {
    await waitFor(
      'every result at HQ',
      async () => {
        await waitForSync(reader, 10_000);
        return readResults(reader.doc).results.length === EARLIER + 2;
      },
      60_000,
      200,
    );
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
});

test.run();
