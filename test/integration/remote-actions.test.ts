import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendAction, readActionEntries } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendActionResult, collectBundlesMap, readActionResults } from '../../shared/documents/status.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { ActionResult, SignedAction } from '../../shared/schemas/action.js';
import { MAX_COLLECT_BYTES } from '../../shared/schemas/action.js';
import { sleep } from '../../shared/time/sleep.js';
import { signAction } from '../../shared/trust/sign-action.js';
import { actionDigest } from '../../shared/trust/verify-action.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, readLines, startPolicyAgent, utcWindow } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Remote actions (issue 17) with real processes: a coordinator enforcing the signed policy, a real
// agent with stand-in reboot, collect and health-check commands, real Nix for the deploy that a
// lock holds. alice's role grants every action on every host; bob may deploy to h1 but has no
// action capability: his requests are stored (he may write h1's desired document) and refused by
// the agent, which is the defence under test.
const org = makeTestOrg();
// A relay of the policy serving h1: it may write h1's documents (it forwards them), so it can
// write anything into h1's status document, but only with its own key.
const relayKey = generateSigningKey('relay-r1');
const dir = temporaryDirectory('remote-actions');
const files = {
  root: join(dir, 'root.key'),
  alice: join(dir, 'alice.key'),
  bob: join(dir, 'bob.key'),
  token: join(dir, 'h1.token'),
  reboot: join(dir, 'reboot.sh'),
  reboots: join(dir, 'reboots.log'),
  crash: join(dir, 'crash-on-reboot'),
  healthy: join(dir, 'healthy'),
  bundle: join(dir, 'bundle.json'),
};
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let closure: string;

function startAgent(): DaemonProcess {
  return startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: [
      '--enroll-token',
      files.token,
      '--reboot-command',
      `/bin/sh ${files.reboot}`,
      // Closed for the next two hours: reboots need --force.
      '--reboot-window',
      utcWindow(120, 150),
      '--timezone',
      'UTC',
      '--collect-command',
      'journal=echo journal-line-1; echo journal-line-2',
      '--collect-command',
      "big=head -c 200000 /dev/zero | tr '\\0' x",
      '--collect-command',
      'failing=echo nope; exit 3',
      '--health-check',
      `test -f ${files.healthy}`,
      '--action-timeout',
      '3',
    ],
  });
}

async function restartAgent(): Promise<void> {
  await agent.stop();
  agent = startAgent();
}

async function view(): Promise<HostView> {
  const result = await runCli([
    'status',
    '--coordinator',
    coordinator.url,
    '--key',
    files.alice,
    '--json',
    '--host',
    'h1',
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]!;
}

interface ActionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  signed: SignedAction | null;
  answer: ActionResult | null;
}

// `outpost action KIND h1 …` as an admin runs it; --json gives the signed request and the answer.
async function action(kind: string, keyFile: string, extra: string[] = []): Promise<ActionRun> {
  const result = await runCli([
    'action',
    kind,
    'h1',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFile,
    '--org-root',
    org.root.publicKey,
    '--wait-timeout',
    '60s',
    ...extra,
  ]);
  let parsed: (SignedAction & { answer: ActionResult | null }) | null = null;
  if (extra.includes('--json') && result.stdout.trim())
    parsed = JSON.parse(result.stdout.trim().split('\n').pop()!) as SignedAction & { answer: ActionResult | null };
  return {
    ...result,
    signed: parsed && { request: parsed.request, signatures: parsed.signatures },
    answer: parsed?.answer ?? null,
  };
}

// Every signed answer of h1 (its enrolled key) to the request with this id.
async function answersTo(id: string): Promise<ActionResult[]> {
  const connection = connectDocument(coordinator.url, statusDocName('h1'), { identity: org.alice });
  try {
    await waitForSync(connection, 10_000);
    return readActionResults(connection.doc)
      .results.filter(
        (r) =>
          r.result.id === id &&
          r.signature.publicKey === host.publicKey &&
          verifyPayloadSignature('action-result', r.result, r.signature),
      )
      .map((r) => r.result);
  } finally {
    connection.close();
  }
}

// The requests in h1's desired document as `identity` reads them.
async function storedRequests(identity: SigningKey): Promise<SignedAction[]> {
  const reader = connectDocument(coordinator.url, desiredDocName('h1'), { identity });
  try {
    await waitForSync(reader, 10_000);
    return readActionEntries(reader.doc).entries.map((e) => e.signed);
  } finally {
    reader.close();
  }
}

// Writes a signed request into h1's desired document as an admin's client does, and waits until
// the coordinator has it.
async function writeAction(signed: SignedAction, key: SigningKey): Promise<void> {
  const connection = connectDocument(coordinator.url, desiredDocName('h1'), { identity: key });
  try {
    await waitForSync(connection, 10_000);
    appendAction(connection.doc, signed);
    await waitFor(
      'the coordinator to store the request',
      async () => {
        const reader = connectDocument(coordinator.url, desiredDocName('h1'), { identity: key });
        try {
          await waitForSync(reader, 10_000);
          return readActionEntries(reader.doc).entries.filter((e) => actionDigest(e.signed) === actionDigest(signed))
            .length;
        } finally {
          reader.close();
        }
      },
      10_000,
      200,
    );
  } finally {
    connection.close();
  }
}

test.before(async () => {
  await writeKeyFile(files.root, org.root);
  await writeKeyFile(files.alice, org.alice);
  await writeKeyFile(files.bob, org.bob);
  await fs.writeFile(
    files.reboot,
    `echo "$OUTPOST_ACTION_ID" >> ${files.reboots}\nif [ -f ${files.crash} ]; then kill -9 "$OUTPOST_AGENT_PID"; fi\n`,
  );
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const base = basePolicy(org);
  const policy = {
    ...base,
    admins: [
      { name: 'alice', keys: [org.alice.publicKey], roles: ['ops', 'enroller'] },
      { name: 'bob', keys: [org.bob.publicKey], roles: ['deployer'] },
    ],
    roles: [
      {
        name: 'ops',
        capabilities: ['deploy', 'rollback', 'read', 'reboot', 'lock', 'collect', 'check'],
        hosts: ['*'],
        groups: [],
      },
      { name: 'enroller', capabilities: ['enroll'], hosts: ['*'], groups: [] },
      // bob deploys to h1 (so he may write its desired document) and has no action capability.
      { name: 'deployer', capabilities: ['deploy', 'read'], hosts: ['h1'], groups: [] },
    ],
    groups: [],
    relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }],
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'remote-actions-cache-1');
  closure = await buildSystemClosure({ name: 'nixos-system-remote-actions' });
  await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  host = await prepareHost(dir, 'h1');
  const token = signEnrollToken(org.alice, {
    host: 'h1',
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    policyVersion: 1,
  });
  await fs.writeFile(files.token, JSON.stringify(token), { mode: 0o600 });
  agent = startAgent();
  await waitFor(
    'h1 to be enrolled and report a status',
    async () => (await view().catch(() => null))?.statusSignatureValid === true,
    60_000,
    300,
  );
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('collect: the bundle comes back signed by the host, each stand-in command a section, the whole capped', async () => {
  const run = await action('collect', files.alice, ['--output', files.bundle]);
  assert.is(run.code, 0, run.stderr);
  assert.match(run.stdout, /saved the bundle \(3 sections\)/);
  const bundle = JSON.parse(await fs.readFile(files.bundle, 'utf8')) as {
    host: string;
    sections: { name: string; exitCode: number; output: string; truncated: boolean }[];
  };
  assert.is(bundle.host, 'h1');
  assert.equal(
    bundle.sections.map((s) => [s.name, s.exitCode]),
    [
      ['journal', 0],
      ['big', 0],
      ['failing', 3],
    ],
  );
  assert.is(bundle.sections[0]!.output, 'journal-line-1\njournal-line-2\n');
  assert.ok(bundle.sections[1]!.truncated, '200,000 bytes of output are cut');
  const total = bundle.sections.reduce((sum, s) => sum + s.output.length, 0);
  assert.ok(total <= MAX_COLLECT_BYTES, `the bundle holds ${total} bytes, at most ${MAX_COLLECT_BYTES}`);
  assert.ok(bundle.sections[1]!.output.length > 1000, 'the big section keeps a tail');

  // Four more: the status document keeps every signed answer, only the newest four bundles.
  const ids: string[] = [];
  for (let i = 0; i < 4; i += 1) {
    const again = await action('collect', files.alice, ['--json']);
    assert.is(again.code, 0, again.stderr);
    ids.push(again.signed!.request.id);
  }
  const status = connectDocument(coordinator.url, statusDocName('h1'), { identity: org.alice });
  try {
    await waitForSync(status, 10_000);
    assert.equal([...collectBundlesMap(status.doc).keys()].sort(), [...ids].sort());
    assert.is(readActionResults(status.doc).results.filter((r) => r.result.action === 'collect').length, 5);
  } finally {
    status.close();
  }
});

test('check: the health checks run now; failing, then passing', async () => {
  const failing = await action('check', files.alice, ['--wait']);
  assert.is(failing.code, 1, failing.stdout);
  assert.match(failing.stderr, /check failed/);
  assert.match(failing.stderr, /health check "test -f/);
  await fs.writeFile(files.healthy, '');
  const passing = await action('check', files.alice, ['--wait']);
  assert.is(passing.code, 0, passing.stderr);
  assert.match(passing.stdout, /h1: check done: healthy: a fresh sync with a sync peer, 1 health check\(s\) passed/);
});

test('lock holds a real deploy (across an agent restart, shown in the signed status) until unlock; then it applies', async () => {
  const lock = await action('lock', files.alice, ['--wait', '--reason', 'incident 42']);
  assert.is(lock.code, 0, lock.stderr);
  assert.match(lock.stdout, /h1: lock done: locked/);
  const locked = await waitFor('the status to show the lock', async () => (await view()).lock ?? null, 20_000, 300);
  assert.is(locked.by, 'alice');
  assert.is(locked.reason, 'incident 42');
  const shown = await runCli(['status', '--coordinator', coordinator.url, '--key', files.alice, '--host', 'h1']);
  assert.match(shown.stdout, /LOCKED since .* by alice: incident 42/);

  const deployed = await runCli([
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    files.alice,
    '--host',
    'h1',
    '--closure',
    closure,
  ]);
  assert.is(deployed.code, 0, deployed.stderr);
  await waitFor('the agent to hold the intent', () => logEvents(agent, 'install-held').length > 0, 20_000);
  await restartAgent();
  await sleep(4000);
  const held = await view();
  assert.ok(held.lock, 'still locked after the restart (persisted)');
  assert.is(held.applied, null, 'nothing applied while locked');
  assert.equal(await activations(host), [], 'nothing activated while locked');
  assert.is(held.lastResult, null, 'the intent is held, not refused');

  const unlock = await action('unlock', files.alice, ['--wait']);
  assert.is(unlock.code, 0, unlock.stderr);
  assert.match(unlock.stdout, /h1: unlock done: unlocked \(was locked since/);
  const applied = await waitFor(
    'h1 to apply generation 1 after the unlock',
    async () => {
      const last = (await view().catch(() => null))?.lastResult;
      return last?.generation === 1 ? last : null;
    },
    90_000,
    300,
  );
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.is(await profileTarget(host), closure);
  assert.is((await view()).lock, null);
});

test('reboot: refused outside the reboot window; with --force it runs once, and never again: not after a crash mid-reboot, not when delivered twice, not after restarts', async () => {
  const outside = await action('reboot', files.alice, ['--wait', '--expires', '10m']);
  assert.is(outside.code, 1);
  assert.match(outside.stderr, /reboot refused \(outside-window\)/);
  assert.equal(await readLines(files.reboots), [], 'no reboot outside the window');

  // The stand-in kills the agent as a real reboot would, after it started the reboot command.
  await fs.writeFile(files.crash, '');
  const forced = await runCli([
    'action',
    'reboot',
    'h1',
    '--coordinator',
    coordinator.url,
    '--key',
    files.alice,
    '--force',
    '--json',
  ]);
  assert.is(forced.code, 0, forced.stderr);
  const signed = JSON.parse(forced.stdout) as SignedAction;
  const id = signed.request.id;
  await waitFor('the reboot command to run', async () => (await readLines(files.reboots)).length === 1, 30_000);
  await agent.exited;
  await fs.rm(files.crash);
  agent = startAgent();
  const answered = await waitFor(
    'the answer after the restart',
    async () => (await answersTo(id))[0] ?? null,
    30_000,
    300,
  );
  // Same boot (no real reboot happened): the agent says it was interrupted and does not run it again.
  assert.is(answered.outcome, 'interrupted', answered.reason);
  assert.match(answered.reason, /not run again/);

  // The same signed request written into the document again, then the agent restarted twice.
  await writeAction({ request: signed.request, signatures: signed.signatures }, org.alice);
  await sleep(2000);
  await restartAgent();
  await sleep(3000);
  await restartAgent();
  await sleep(3000);
  assert.equal(await readLines(files.reboots), [id], 'the reboot command ran exactly once');
  assert.is((await answersTo(id)).length, 1, 'exactly one answer');

  // A fresh forced reboot runs (and is answered done).
  const again = await action('reboot', files.alice, ['--wait', '--force']);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /h1: reboot done: the reboot command \(\/bin\/sh .*\) ran \(forced\)/);
  assert.is((await readLines(files.reboots)).length, 2);
});

test('an admin without the capability (bob: deploy on h1, no reboot or lock) is refused by the agent, with a signed answer', async () => {
  const before = await readLines(files.reboots);
  const reboot = await action('reboot', files.bob, ['--wait', '--force']);
  assert.is(reboot.code, 1, reboot.stdout);
  assert.match(reboot.stderr, /h1: reboot refused \(no-capability\): reboot needs one admin with 'reboot' on h1/);
  const lock = await action('lock', files.bob, ['--wait']);
  assert.is(lock.code, 1, lock.stdout);
  assert.match(lock.stderr, /lock refused \(no-capability\)/);
  assert.equal(await readLines(files.reboots), before, 'no reboot');
  assert.is((await view()).lock, null, 'not locked');
});

test('an expired request (an old one replayed into the document) is refused, never run', async () => {
  const before = await readLines(files.reboots);
  const now = Date.now();
  const signed = signAction(
    {
      kind: 'action',
      action: 'reboot',
      host: 'h1',
      id: 'e'.repeat(32),
      issuedAt: new Date(now - 2 * 3_600_000).toISOString(),
      expiresAt: new Date(now - 3_600_000).toISOString(),
      issuer: 'alice',
      force: true,
      policyVersion: 1,
    },
    org.alice,
  );
  await writeAction(signed, org.alice);
  const answer = await waitFor('the refusal', async () => (await answersTo(signed.request.id))[0] ?? null, 30_000, 300);
  assert.is(answer.outcome, 'refused');
  assert.is(answer.code, 'expired');
  assert.equal(await readLines(files.reboots), before, 'no reboot');
});

test("a relay forges h1's answer (check done) for a request it saw: outpost action --org-root does not believe it", async () => {
  // The real agent is stopped, so any answer that arrives is the relay's.
  await agent.stop();
  const before = new Set((await storedRequests(relayKey)).map((signed) => signed.request.id));
  const cli = action('check', files.alice, ['--wait', '--wait-timeout', '15s']);
  // The relay sees the new request in the document it forwards and answers it in h1's name.
  const desired = connectDocument(coordinator.url, desiredDocName('h1'), { identity: relayKey });
  const status = connectDocument(coordinator.url, statusDocName('h1'), { identity: relayKey });
  try {
    await waitForSync(status, 10_000);
    const seen = await waitFor(
      'the new request',
      () => readActionEntries(desired.doc).entries.find((e) => !before.has(e.signed.request.id))?.signed ?? null,
      20_000,
    );
    const forged: ActionResult = {
      kind: 'action-result',
      host: 'h1',
      seq: 999,
      at: new Date().toISOString(),
      action: 'check',
      id: seen.request.id,
      requestDigest: actionDigest(seen),
      outcome: 'done',
      reason: 'healthy (forged by the relay)',
    };
    appendActionResult(status.doc, { result: forged, signature: signPayload('action-result', forged, relayKey) });
    const run = await cli;
    assert.is(run.code, 3, `the forged answer was believed: ${run.stdout}`);
    assert.not.match(run.stdout, /forged/);
    assert.match(run.stderr, /no answer from h1 within 15 s/);
  } finally {
    desired.close();
    status.close();
    agent = startAgent();
  }
});

test.run();
