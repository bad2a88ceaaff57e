import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { publishStatus } from '../../agent/pipeline/report.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { readCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { AppStatus } from '../../shared/schemas/apps.js';
import { sleep } from '../../shared/time/sleep.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, type PolicyAgentLaunch, startPolicyAgent } from '../harness/lifecycle-fleet.js';
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

// Application services (issue 17, docs/apps.md): a real agent under the fleet policy watches the
// apps a manifest declares through a stand-in `docker` (a script answering `docker compose -p
// NAME ps --all --format json` from files the test writes), reports them in its signed status,
// and `outpost status --apps --org-root` shows them. A relay that forges a status with healthy
// apps is not believed.
const org = makeTestOrg();
const relayKey = generateSigningKey('relay-r1');
const forger = generateSigningKey('forger');
const dir = temporaryDirectory('apps-status');
const stub = join(dir, 'docker-stub');
const manifest = join(dir, 'apps.json');
const carolFile = join(dir, 'carol.key');
const revs = { clinic: 'a'.repeat(40), notes: 'b'.repeat(40), broken: 'c'.repeat(40) };
const olderNotes = 'd'.repeat(40);
let coordinator: DaemonProcess & { url: string; port: number };
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let launch: PolicyAgentLaunch;
const startAgent = (): DaemonProcess => startPolicyAgent(host, launch);
const open: DocumentConnection[] = [];

const line = (service: string, state: string, exitCode = 0, health = '') =>
  JSON.stringify({
    ID: `${service}0123456789`,
    Name: `x-${service}-1`,
    Project: 'x',
    Service: service,
    State: state,
    Health: health,
    ExitCode: exitCode,
    Status: state,
    Publishers: null,
  });

// What the stand-in docker prints for an app (stdout, stderr, exit code, seconds to hang first).
async function answer(app: string, reply: { out?: string; err?: string; code?: number; hang?: number }) {
  await fs.writeFile(join(stub, `${app}.out`), reply.out ?? '');
  await fs.writeFile(join(stub, `${app}.err`), reply.err ?? '');
  await fs.writeFile(join(stub, `${app}.code`), String(reply.code ?? 0));
  await fs.writeFile(join(stub, `${app}.hang`), String(reply.hang ?? 0));
}

async function statusCli(...extra: string[]) {
  return runCli([
    'status',
    '--coordinator',
    coordinator.url,
    '--key',
    carolFile,
    '--org-root',
    org.root.publicKey,
    '--host',
    'h1',
    ...extra,
  ]);
}

async function view(): Promise<HostView> {
  const result = await statusCli('--json');
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]!;
}

const states = (apps: AppStatus[] | null | undefined) => Object.fromEntries((apps ?? []).map((a) => [a.name, a.state]));

// The seq of h1's current signed status, read as carol (read access) over the real protocol.
async function statusSeq(): Promise<number> {
  const reader = connectDocument(coordinator.url, 'hosts/h1/status', { identity: org.carol });
  try {
    await waitForSync(reader, 10_000);
    return readCurrentStatus(reader.doc)?.status.seq ?? 0;
  } finally {
    reader.close();
  }
}

test.before(async () => {
  await writeKeyFile(carolFile, org.carol);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  host = await prepareHost(dir, 'h1');
  const approved = await postJson(
    coordinator.url,
    '/api/enroll/approve',
    signEnrollment(org.alice, { host: 'h1', hostKey: host.publicKey, policyVersion: 1 }, new Date()),
  );
  assert.is(approved.status, 200, approved.body.error);
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'apps-cache-1');
  await fs.mkdir(join(dir, 'cache'), { recursive: true });
  cache = await serveBinaryCache(join(dir, 'cache'));

  // The stand-in docker: checks it is asked exactly `compose -p NAME ps --all --format json`.
  await fs.mkdir(stub, { recursive: true });
  await fs.writeFile(
    join(stub, 'docker'),
    [
      '#!/bin/sh',
      `stub=${stub}`,
      'echo "$*" >> "$stub/calls"',
      'if [ "$1 $2 $4 $5 $6 $7 $8" != "compose -p ps --all --format json " ]; then echo "unexpected: $*" >&2; exit 64; fi',
      'app=$3',
      'sleep "$(cat "$stub/$app.hang" 2>/dev/null || echo 0)"',
      'cat "$stub/$app.out" 2>/dev/null',
      'cat "$stub/$app.err" >&2 2>/dev/null',
      'exit "$(cat "$stub/$app.code" 2>/dev/null || echo 0)"',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  await fs.writeFile(
    manifest,
    JSON.stringify({
      version: 1,
      apps: Object.entries(revs).map(([name, rev]) => ({
        name,
        rev,
        repo: `https://git.example.org/${name}.git`,
        directory: join(dir, 'apps', name),
      })),
    }),
  );
  // What each unit last brought up (nix/modules/apps.nix writes it after `up`): clinic the declared
  // commit, notes an older one (the new one could not be fetched), broken nothing yet.
  for (const [name, deployed] of [
    ['clinic', revs.clinic],
    ['notes', olderNotes],
  ] as const) {
    await fs.mkdir(join(dir, 'apps', name, '.git'), { recursive: true });
    await fs.writeFile(join(dir, 'apps', name, '.git', 'outpost-deployed-rev'), `${deployed}\n`);
  }
  // clinic: one object per line (compose 2.21+); notes: one array (older compose), a worker
  // that crashed; broken: docker cannot reach its daemon.
  await answer('clinic', { out: `${line('web', 'running', 0, 'healthy')}\n${line('db', 'running')}\n` });
  await answer('notes', {
    out: JSON.stringify([JSON.parse(line('app', 'running')), JSON.parse(line('worker', 'exited', 1))]),
  });
  await answer('broken', {
    err: 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?',
    code: 1,
  });
  launch = {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--apps-manifest', manifest, '--apps-interval', '1', '--docker-command', join(stub, 'docker')],
  };
  agent = startAgent();
});

test.after(async () => {
  for (const c of open) c.close();
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test("the agent reports each app's compose state in its signed status; outpost status --apps shows it", async () => {
  const seen = await waitFor(
    'the three apps in h1 signed status',
    async () => {
      const v = await view();
      return v.apps?.length === 3 ? v : null;
    },
    30_000,
    300,
  );
  assert.is(seen.hostKeys, 'enrollment');
  assert.is(seen.statusSignatureValid, true, 'signed by the enrolled host key');
  assert.equal(states(seen.apps), { clinic: 'running', notes: 'degraded', broken: 'unknown' });
  const byName = new Map(seen.apps!.map((a) => [a.name, a]));
  assert.is(byName.get('clinic')!.rev, revs.clinic);
  assert.equal(byName.get('clinic')!.services, [
    { name: 'db', state: 'running' },
    { name: 'web', state: 'running', health: 'healthy' },
  ]);
  assert.equal(byName.get('notes')!.services[0], { name: 'worker', state: 'exited', exitCode: 1 });
  assert.is(byName.get('notes')!.reason, 'worker exited with code 1');
  assert.match(String(byName.get('broken')!.reason), /exited with code 1: Cannot connect to the Docker daemon/);
  assert.equal(
    seen.apps!.map((a) => [a.name, a.deployedRev]),
    [
      ['clinic', revs.clinic],
      ['notes', olderNotes],
      ['broken', null],
    ],
    'what each unit brought up',
  );

  const table = await statusCli('--apps');
  assert.is(table.code, 0, table.stderr);
  assert.match(table.stdout, /HOST +APP +REV +STATE +SINCE +CONTAINERS/);
  assert.match(table.stdout, /h1 +clinic +aaaaaaaaaaaa +running +\S+ +db running; web running, healthy/);
  assert.match(
    table.stdout,
    /h1 +notes +bbbbbbbbbbbb +DEGRADED: worker exited with code 1 \(bbbbbbbbbbbb NOT BROUGHT UP: dddddddddddd runs; journalctl -u outpost-app-notes\) +\S+ +worker exited 1; app running/,
  );
  assert.match(
    table.stdout,
    /h1 +broken +cccccccccccc +UNKNOWN: .*Cannot connect to the Docker daemon.* \(cccccccccccc NOT BROUGHT UP YET; /,
  );
  assert.match(table.stdout, /3 apps: 1 running, 1 degraded, 0 stopped, 1 unknown/);
  const plain = await statusCli();
  assert.not.match(plain.stdout, /CONTAINERS/, 'without --apps the table is as before');
});

test('an unchanged check rewrites nothing; a change is in the signed status within an interval', async () => {
  // The quiet window starts once the agent's start is over: it walks the policy on a connection of
  // its own, which can end after the first app check was published, and the status then changes
  // to name the policy in force (a publish the window must not count).
  await waitFor(
    'h1 status to name policy version 1',
    async () => (await view()).trust?.policyVersion === 1,
    30_000,
    300,
  );
  const before = await statusSeq();
  const calls = async () => (await fs.readFile(join(stub, 'calls'), 'utf8')).split('\n').filter(Boolean).length;
  const callsBefore = await calls();
  await sleep(3500);
  // Two more rounds of the three checks (--apps-interval 1): a round is its three docker runs
  // (each a shell and five small processes) plus the interval, well under 2 s on a quiet machine
  // but more on a loaded one, so the count is waited for (10 s), not read once after 3.5 s.
  await waitFor('two more rounds of checks', async () => (await calls()) >= callsBefore + 6, 10_000, 100).catch(
    () => undefined,
  );
  assert.ok((await calls()) >= callsBefore + 6, 'the apps were checked again and again meanwhile');
  assert.is(await statusSeq(), before, 'the same picture is not published again');
  await answer('notes', { out: `${line('app', 'running')}\n${line('worker', 'running')}\n` });
  const fixed = await waitFor(
    'notes to be running in the status',
    async () => {
      const v = await view();
      return v.apps?.find((a) => a.name === 'notes')?.state === 'running' ? v : null;
    },
    15_000,
    300,
  );
  assert.equal(states(fixed.apps), { clinic: 'running', notes: 'running', broken: 'unknown' });
  assert.ok((await statusSeq()) > before);
  assert.ok(logEvents(agent, 'app-state').some((e) => e.app === 'notes' && e.state === 'running'));
});

test('a restarted agent keeps the apps it reported, and their since: the same picture is not republished', async () => {
  const before = await view();
  const seq = await statusSeq();
  await agent.stop('SIGTERM');
  const calls = async () => (await fs.readFile(join(stub, 'calls'), 'utf8')).split('\n').filter(Boolean).length;
  const callsBefore = await calls();
  agent = startAgent();
  await waitFor('the restarted agent to check the apps twice', async () => (await calls()) >= callsBefore + 6, 30_000);
  assert.is(await statusSeq(), seq, 'nothing republished');
  assert.equal((await view()).apps, before.apps, 'same apps, same since');
});

test('a docker that hangs or floods is cut off: unknown with the reason, and the agent carries on', async () => {
  await answer('clinic', { out: line('web', 'running'), hang: 60 });
  await answer('notes', { out: `${line('app', 'running').padEnd(300 * 1024, ' ')}\n` });
  const cut = await waitFor(
    'clinic and notes to be unknown',
    async () => {
      const v = await view();
      const s = states(v.apps);
      return s.clinic === 'unknown' && s.notes === 'unknown' ? v : null;
    },
    30_000,
    300,
  );
  const reasons = new Map(cut.apps!.map((a) => [a.name, a.reason]));
  assert.match(String(reasons.get('clinic')), /did not finish within 1 s and was killed/);
  assert.match(String(reasons.get('notes')), /printed more than 262144 bytes; not read/);
  // Back to normal: the next checks read it again.
  await answer('clinic', { out: line('web', 'running') });
  await answer('notes', { out: line('app', 'running') });
  await waitFor(
    'clinic and notes to be running again',
    async () => {
      const s = states((await view()).apps);
      return s.clinic === 'running' && s.notes === 'running';
    },
    30_000,
    300,
  );
  assert.is(agent.child.exitCode, null, 'the agent still runs');
  // The manifest turning to garbage keeps the last picture and says why in the log.
  await fs.writeFile(manifest, '{"version": 1, "apps": [{"name": "Bad Name"');
  await waitFor('the manifest problem in the log', () => logEvents(agent, 'apps-manifest-unreadable').length > 0);
  assert.match(String(logEvents(agent, 'apps-manifest-unreadable')[0]!.msg), /is not JSON .*services\.outpost-apps/);
  assert.equal(states((await view()).apps), { clinic: 'running', notes: 'running', broken: 'unknown' });
});

test('a relay that forges a status with healthy apps is not believed: status --apps --org-root shows none of it', async () => {
  await agent.stop('SIGKILL');
  // r1 may write h1's status document (it serves h1). It replaces the status with one claiming
  // every app runs, signed by a key of its own, over the real protocol with its own key proof.
  const relay = connectDocument(coordinator.url, 'hosts/h1/status', { identity: relayKey, maxBackoffMs: 500 });
  open.push(relay);
  await waitForSync(relay, 10_000);
  const genuine = readCurrentStatus(relay.doc)!.status;
  const { seq: _seq, updatedAt: _updatedAt, ...content } = genuine;
  const forgedApps = (genuine.apps ?? []).map((a) => ({
    ...a,
    state: 'running' as const,
    reason: undefined,
    services: [{ name: 'forged-service', state: 'running' as const }],
  }));
  publishStatus(relay.doc, { ...content, apps: forgedApps }, genuine.seq + 1, forger);
  await waitFor('the coordinator to store the forged status', async () => {
    const reader = connectDocument(coordinator.url, 'hosts/h1/status', { identity: org.carol });
    try {
      await waitForSync(reader, 10_000);
      return readCurrentStatus(reader.doc)?.signature.publicKey === forger.publicKey;
    } finally {
      reader.close();
    }
  });
  const v = await view();
  assert.is(v.rejectedStatus?.signer, forger.publicKey);
  assert.is(v.apps, null, 'no app state from a status the host did not sign');
  const table = await statusCli('--apps');
  assert.is(table.code, 0, table.stderr);
  assert.not.match(table.stdout, /forged-service/);
  assert.match(table.stdout, /no apps reported by h1/);
});

test.run();
