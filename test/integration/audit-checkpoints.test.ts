import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AUDIT_CHECKPOINTS_PATH, AUDIT_CHECKPOINTS_PROOF } from '../../shared/audit/bundle.js';
import type { CheckpointHeads } from '../../shared/audit/checkpoint.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { authHeaders } from '../../shared/sync/auth-proof.js';
import { fetchAuthProof } from '../../shared/sync/reconnect.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// GET /api/audit/checkpoints?from=TIME against a real coordinator signing a checkpoint every
// 0.3 s: only the checkpoints signed at or after the time come back, a bad time is a 400 naming
// the parameter and the fix (before the key proof is spent), and the access rule is unchanged.
const org = makeTestOrg();
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };

const base = (): string => coordinator.url.replace(/^ws/, 'http');

async function proofHeaders(key: SigningKey): Promise<Record<string, string>> {
  const proof = await fetchAuthProof(coordinator.url, AUDIT_CHECKPOINTS_PROOF, key, 5000);
  return authHeaders({ principal: proof.principal!, challenge: proof.challenge!, signature: proof.signature! });
}

async function checkpoints(query: string, headers: Record<string, string>): Promise<CheckpointHeads[]> {
  const response = await fetch(`${base()}${AUDIT_CHECKPOINTS_PATH}${query}`, { headers });
  assert.is(response.status, 200, await response.clone().text());
  return (await response.text())
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as CheckpointHeads);
}

test.before(async () => {
  dir = temporaryDirectory('audit-checkpoints');
  const timestampFile = join(dir, 'timestamp.key');
  await writeKeyFile(timestampFile, org.timestamp);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    timestampFile,
    '--timestamp-interval',
    '0.3',
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('?from= gives only the checkpoints signed since; without it every one', async () => {
  // carol has `read` on every host: she may read the checkpoints.
  const all = await waitFor(
    'at least 6 signed checkpoints',
    async () => {
      const got = await checkpoints('', await proofHeaders(org.carol));
      return got.length >= 6 ? got : null;
    },
    60_000,
    250,
  );
  const middle = all[Math.floor(all.length / 2)]!;
  const since = await checkpoints(`?from=${encodeURIComponent(middle.at)}`, await proofHeaders(org.carol));
  const expected = all.filter((c) => Date.parse(c.at) >= Date.parse(middle.at)).map((c) => c.seq);
  // Checkpoints signed meanwhile come after, in order.
  assert.equal(
    since.map((c) => c.seq).slice(0, expected.length),
    expected,
    'the ones since the time, in order, and none before',
  );
  assert.ok(
    since.every((c) => Date.parse(c.at) >= Date.parse(middle.at)),
    'nothing signed before the time',
  );
  const future = await checkpoints('?from=2999-01-01T00:00:00Z', await proofHeaders(org.carol));
  assert.equal(future, [], 'none signed in the future');
});

test('a bad ?from= is a 400 naming the parameter and the fix, and leaves the key proof unused', async () => {
  const headers = await proofHeaders(org.carol);
  for (const bad of [
    'yesterday',
    '',
    '2026-06-01',
    '2026-06-01T12:00:00+02:00',
    `2026-06-01T12:00:00Z${'0'.repeat(100)}`,
  ]) {
    const response = await fetch(`${base()}${AUDIT_CHECKPOINTS_PATH}?from=${encodeURIComponent(bad)}`, { headers });
    assert.is(response.status, 400, bad);
    const body = (await response.json()) as { error: string };
    assert.match(body.error, 'is not a time: give ?from= an ISO 8601 UTC time such as 2026-06-01T12:00:00Z');
  }
  // The proof was not consumed by the refused requests: it still works once.
  assert.ok((await checkpoints('?from=2000-01-01T00:00:00.000Z', headers)).length > 0);
});

test('the access rule is the same with ?from=: a caller without read on every host is refused', async () => {
  // bob's roles cover only the production group: the checkpoints name every document.
  const response = await fetch(`${base()}${AUDIT_CHECKPOINTS_PATH}?from=2000-01-01T00:00:00Z`, {
    headers: await proofHeaders(org.bob),
  });
  assert.is(response.status, 403);
  const anonymous = await fetch(`${base()}${AUDIT_CHECKPOINTS_PATH}?from=2000-01-01T00:00:00Z`);
  assert.is(anonymous.status, 401);
});

test.run();
