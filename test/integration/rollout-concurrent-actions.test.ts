import { promises as fs } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { readRollout } from '../../admin/rollout-remote.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { judgeRollout } from '../../shared/rollout/judge.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type CliResult,
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Two admins act on one rollout at the same moment (issue 11's leftover): bob pauses it because
// something looks wrong while alice, who has not seen his pause, resumes it. Each admin's CLI takes
// the sequence number one above the highest it read, so both sign the same number. Until this was
// fixed the later signed time decided (alice's resume, signed a moment after bob's pause): bob was
// told "paused" while the rollout ran on. Both are real `outpost rollout` processes against a real
// coordinator; between them and the coordinator sits an HTTP relay that holds each rollout POST
// until both have arrived, so both have read the document before either action is stored (the
// collision is made certain, not left to timing).
installNodeEd25519();
const org = makeTestOrg();
const dir = temporaryDirectory('rollout-concurrent-actions');
const names = ['h1', 'h2', 'h3'];
const policy = basePolicy(org, {
  admins: [
    { name: 'alice', keys: [org.alice.publicKey], roles: ['ops', 'enroller'] },
    { name: 'bob', keys: [org.bob.publicKey], roles: ['ops'] },
  ],
});
let coordinator: DaemonProcess & { url: string; port: number };
let barrier: { url: string; held: () => number; close: () => Promise<void> } | null = null;

// Forwards HTTP and websocket upgrades to the coordinator; holds POST /api/rollouts until `count`
// of them are waiting (or 60 s passed), then lets them through together.
async function startBarrier(targetPort: number, count: number): Promise<NonNullable<typeof barrier>> {
  const waiting: (() => void)[] = [];
  let held = 0;
  const release = (): void => {
    for (const go of waiting.splice(0)) go();
  };
  const server: Server = createServer((req, res) => {
    const forward = (): void => {
      const upstream = request(
        { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      upstream.on('error', () => res.destroy());
      req.pipe(upstream);
    };
    if (req.method === 'POST' && req.url === '/api/rollouts') {
      held += 1;
      req.pause();
      waiting.push(forward);
      if (waiting.length >= count) release();
      else setTimeout(release, 60_000).unref();
      return;
    }
    forward();
  });
  server.on('upgrade', (req, socket, head) => {
    const upstream = connect(targetPort, '127.0.0.1', () => {
      const lines = [`${req.method} ${req.url} HTTP/1.1`];
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
      upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}`,
    held: () => held,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const keyFile = (who: 'alice' | 'bob'): string => join(dir, `${who}.key`);
const rollout = (who: 'alice' | 'bob', url: string, args: string[]): Promise<CliResult> =>
  runCli(
    [
      'rollout',
      ...args,
      '--coordinator',
      url,
      '--key',
      keyFile(who),
      '--org-root',
      org.root.publicKey,
      '--timeout',
      '60s',
    ],
    { timeoutMs: 180_000 },
  );

test.before(async () => {
  await writeKeyFile(keyFile('alice'), org.alice);
  await writeKeyFile(keyFile('bob'), org.bob);
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, 'coordinator.log'),
    0,
    ['--org-root', org.root.publicKey],
    {},
    60_000,
  );
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const name of names) {
    const approved = await postJson(
      coordinator.url,
      '/api/enroll/approve',
      signEnrollment(
        org.alice,
        { host: name, hostKey: generateSigningKey(name).publicKey, policyVersion: 1 },
        new Date(),
      ),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
});

test.after(async () => {
  await barrier?.close();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a pause and a resume signed at the same moment by two admins: the pause holds, and the resumer is told', async () => {
  const manifest = join(dir, 'release.json');
  const closure = `/nix/store/${'a'.repeat(32)}-nixos-system-r1`;
  await fs.writeFile(
    manifest,
    JSON.stringify({ release: 'r1', hosts: Object.fromEntries(names.map((h) => [h, closure])) }),
  );
  const created = await rollout('alice', coordinator.url, [
    'create',
    '--release',
    manifest,
    '--wave',
    'first=h1',
    '--wave',
    'rest=h2,h3',
    '--generation',
    '2',
    '--id',
    'r1',
  ]);
  assert.is(created.code, 0, created.stderr + created.stdout);
  // Alice paused it earlier (sequence 1).
  const paused = await rollout('alice', coordinator.url, ['pause', 'r1', '--reason', 'checking the canary']);
  assert.is(paused.code, 0, paused.stderr);

  // Now bob pauses (he saw something) while alice resumes, neither having seen the other's action.
  barrier = await startBarrier(coordinator.port, 2);
  const bobPauses = rollout('bob', barrier.url, ['pause', 'r1', '--reason', 'h1 logs errors']);
  // Alice's resume is signed after bob's pause (her CLI starts once his signed POST is held at the
  // barrier, not after a fixed pause a loaded machine may outlast), so under the old rule — the
  // later signed time wins at equal numbers — her resume would decide.
  await waitFor("bob's signed pause to reach the barrier", () => barrier!.held() === 1, 60_000, 50);
  const aliceResumes = rollout('alice', barrier.url, ['resume', 'r1', '--json']);
  const [bob, alice] = await Promise.all([bobPauses, aliceResumes]);
  assert.is(barrier.held(), 2, 'both actions went through the barrier');
  assert.is(bob.code, 0, bob.stderr + bob.stdout);

  // The collision happened: two counted pause/resume actions with the same number.
  const snapshot = await readRollout(coordinator.url, 'r1', org.alice, 30_000);
  const numbered = snapshot.entries.actions.filter((a) => a.action.verb !== 'approve');
  assert.is(numbered.length, 3);
  const second = numbered.filter((a) => a.action.seq === 2);
  assert.equal(second.map((a) => a.action.verb).sort(), ['pause', 'resume'], 'both signed sequence 2');
  const pause = second.find((a) => a.action.verb === 'pause')!;
  const resume = second.find((a) => a.action.verb === 'resume')!;
  assert.ok(resume.action.at > pause.action.at, "alice's resume is signed after bob's pause");

  // The pause holds for everyone who judges the document (agents, coordinator, CLI, web editor run
  // this same code), and the rollout stays paused.
  const view = judgeRollout(snapshot.entries, snapshot.signed, [policy], Date.now());
  assert.is(view.state, 'paused');
  assert.is(view.actions.paused?.by, 'bob');
  const status = await rollout('alice', coordinator.url, ['status', 'r1', '--json']);
  assert.is(status.code, 0, status.stderr);
  assert.match(status.stdout, /"state": "paused"/);

  // Alice's CLI does not say "resumed": it exits 1 and says why and what to do.
  assert.is(alice.code, 1, alice.stdout + alice.stderr);
  assert.match(alice.stdout, /"effective": false/);
  assert.match(alice.stderr, /stays paused: bob paused it/);

  // Resuming again, one above both, is a decision taken after seeing the pause: it counts.
  const again = await rollout('alice', coordinator.url, ['resume', 'r1']);
  assert.is(again.code, 0, again.stderr + again.stdout);
  const later = await readRollout(coordinator.url, 'r1', org.alice, 30_000);
  assert.is(judgeRollout(later.entries, later.signed, [policy], Date.now()).state, 'running');
});

test.run();
