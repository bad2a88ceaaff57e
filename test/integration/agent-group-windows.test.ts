import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { sleep } from '../../shared/time/sleep.js';
import { hostStatus, writeEnrollToken } from '../harness/admin-cli.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, startPolicyAgent, utcWindow } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache, runCommand } from '../harness/nix-fixtures.js';
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

// Maintenance windows from the signed fleet policy, with real processes and real Nix: a host in a
// group whose window is closed waits (and says for which group window, until when) without
// fetching anything; the next policy version, edited with `outpost policy set-group-windows`,
// opens the window and the same agent proceeds to applied without a restart.
const org = makeTestOrg();
const dir = temporaryDirectory('group-windows');
const files = {
  root: join(dir, 'root.key'),
  alice: join(dir, 'alice.key'),
  token: join(dir, 'h1.token'),
  v1: join(dir, 'policy-v1.json'),
  v2: join(dir, 'policy-v2.json'),
};
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let closure: string;

const view = (): Promise<HostView | null> => hostStatus({ coordinator: coordinator.url, key: files.alice }, 'h1');

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  if (result.code !== 0) throw new Error(`outpost ${args.slice(0, 2).join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

const fetched = (): string[] => cache.requests.filter((r) => /\.narinfo|\/nar\//.test(r));

test.before(async () => {
  await writeKeyFile(files.root, org.root);
  await writeKeyFile(files.alice, org.alice);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'group-windows-cache-1');
  closure = await buildSystemClosure({ name: 'nixos-system-group-windows' });
  await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  host = await prepareHost(dir, 'h1');
  await writeEnrollToken(files.token, org.alice, 'h1');
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a closed group window holds the host (no download, status names the group window and its next start); the next policy version opens it and the host applies', async () => {
  // Version 1: h1 is in group clinics, whose only maintenance window opens in two hours (UTC).
  const closed = utcWindow(120, 150);
  const opensAt = new Date(Math.floor((Date.now() + 120 * 60_000) / 60_000) * 60_000).toISOString();
  const base = basePolicy(org);
  const v1: Policy = {
    ...base,
    groups: [
      ...base.groups,
      { name: 'clinics', hosts: ['h1'], threshold: 1, maintenanceWindows: [closed], timeZone: 'UTC' },
    ],
  };
  const signedV1 = signPolicy(v1, org.root);
  await fs.writeFile(files.v1, JSON.stringify(signedV1));
  const pushed = await pushPolicy(coordinator.url, signedV1);
  assert.is(pushed.status, 200, pushed.body.error);

  agent = startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--enroll-token', files.token],
  });
  await waitFor(
    'the group window to be in force',
    () => logEvents(agent, 'windows').some((e) => e.policyVersion === 1),
    30_000,
  );
  await cli(['deploy', '--coordinator', coordinator.url, '--key', files.alice, '--host', 'h1', '--closure', closure]);

  const waiting = await waitFor(
    'h1 to wait for the group window',
    async () => {
      const v = await view().catch(() => null);
      return v?.phase === 'waiting-for-window' ? v : null;
    },
    30_000,
    300,
  );
  assert.is(waiting.window?.waitingFor, 'download');
  assert.is(waiting.window?.windows, `group clinics: ${closed} (UTC)`, 'the status names the group and its window');
  assert.is(waiting.window?.nextStart, opensAt);
  assert.ok(waiting.statusSignatureValid);
  assert.is(waiting.target?.generation, 1);
  // Long enough for an agent that ignored the window to have asked the cache for narinfos.
  await sleep(2000);
  assert.equal(fetched(), [], 'nothing was fetched outside the window');
  assert.is(
    (await runCommand('nix-store', ['--store', host.storeRoot, '--check-validity', closure])).code === 0,
    false,
    'the closure is not in the store',
  );
  assert.equal(await activations(host), []);

  // Version 2, made the way an operator does: next, set-group-windows, sign, push.
  await cli(['policy', 'next', '--from', files.v1, '--out', files.v2]);
  const open = utcWindow(-5, 60);
  const edit = JSON.parse(
    await cli([
      'policy',
      'set-group-windows',
      '--policy',
      files.v2,
      '--name',
      'clinics',
      '--maintenance-window',
      open,
      '--timezone',
      'UTC',
      '--json',
    ]),
  ) as { change: string };
  assert.is(edit.change, `group clinics: maintenance ${open} (UTC)`);
  await cli(['policy', 'sign', '--policy', files.v2, '--key', files.root]);
  await cli(['policy', 'push', '--policy', files.v2, '--coordinator', coordinator.url]);
  const shown = JSON.parse(
    await cli([
      'policy',
      'show',
      '--coordinator',
      coordinator.url,
      '--key',
      files.alice,
      '--org-root',
      org.root.publicKey,
      '--json',
    ]),
  ) as { version: number; policy: Policy };
  assert.is(shown.version, 2);
  assert.equal(
    shown.policy.groups.find((g) => g.name === 'clinics'),
    { name: 'clinics', hosts: ['h1'], threshold: 1, maintenanceWindows: [open], timeZone: 'UTC' },
  );

  // The running agent walks to version 2 and proceeds: no restart, no new intent.
  const applied = await waitFor(
    'h1 to apply generation 1',
    async () => {
      const last = (await view().catch(() => null))?.lastResult;
      return last?.generation === 1 ? last : null;
    },
    90_000,
    300,
  );
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.is(await profileTarget(host), closure);
  assert.equal(await activations(host), [`switch ${closure}`]);
  const windows = logEvents(agent, 'windows').find((e) => e.policyVersion === 2);
  assert.is(windows?.maintenance, `group clinics: ${open} (UTC)`);
  assert.ok(logEvents(agent, 'window-open').length > 0);
  assert.is((await view())?.window, null, 'no longer waiting');
});

test.run();
