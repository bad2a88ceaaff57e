import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { BinaryCacheServer } from '../harness/cache-server.js';
import { profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { type LifecycleFleet, logEvents, startLifecycleFleet } from '../harness/lifecycle-fleet.js';
import { runCommand } from '../harness/nix-fixtures.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';
import { mountTmpfs } from '../harness/tmpfs.js';

// Issue 4, download side, with real Nix and a real HTTP cache that can be slow on purpose: resume
// after the agent is killed, bounded retries when the cache dies mid-NAR, disk space, size cap,
// slow drip and the overall deadline. Every case ends in a signed result that says why.
let fleet: LifecycleFleet;
let fastCache: BinaryCacheServer;
const closures: Record<string, string> = {};
const KiB = 1024;

test.before(async () => {
  fleet = await startLifecycleFleet(temporaryDirectory('agent-download'));
  const builds: [string, number, number][] = [
    ['base', 0, 1],
    ['multi', 6, 256 * KiB],
    ['single', 1, 512 * KiB],
    ['huge', 3, 4 * 1024 * KiB],
    ['drip', 1, 64 * KiB],
  ];
  for (const [key, extraPaths, payloadBytes] of builds) {
    closures[key] = await buildSystemClosure({ name: `nixos-system-${key}`, extraPaths, payloadBytes });
    await fleet.publish(closures[key]!);
  }
  fastCache = await fleet.serveCache();
});

test.after(async () => {
  await fleet?.close();
  if (fleet && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(fleet.dir);
});

// Store path hash → the cache's NAR URL path and size, from the published narinfos.
async function narFiles(): Promise<Map<string, { url: string; size: number }>> {
  const map = new Map<string, { url: string; size: number }>();
  for (const name of await fs.readdir(fleet.cacheDir)) {
    if (!name.endsWith('.narinfo')) continue;
    const text = await fs.readFile(join(fleet.cacheDir, name), 'utf8');
    map.set(name.slice(0, 32), {
      url: `/${/^URL: (.*)$/m.exec(text)![1]}`,
      size: Number(/^FileSize: (\d+)$/m.exec(text)![1]),
    });
  }
  return map;
}

async function staged(
  host: SimulatedHost,
): Promise<{ complete: string[]; partial: { hash: string; bytes: number }[] }> {
  const dir = join(host.stateDir, 'downloads', 'nar');
  const names = existsSync(dir) ? await fs.readdir(dir) : [];
  const partial: { hash: string; bytes: number }[] = [];
  for (const name of names.filter((n) => n.endsWith('.nar.part')))
    partial.push({ hash: name.slice(0, 32), bytes: (await fs.stat(join(dir, name))).size });
  return { complete: names.filter((n) => n.endsWith('.nar')).map((n) => n.slice(0, 32)), partial };
}

async function storeHas(host: SimulatedHost, path: string): Promise<boolean> {
  return (await runCommand('nix-store', ['--store', host.storeRoot, '--check-validity', path])).code === 0;
}

test('agent killed halfway through a multi-path download: the restarted agent fetches only what it lacked, resuming the partial file', async () => {
  const cache = await fleet.serveCache({ narBytesPerSecond: 100 * KiB });
  const host = await fleet.host('resume');
  const first = fleet.startAgent(host, cache.url);
  await fleet.deploy('resume', closures.multi!);
  // Progress shows in outpost status while it downloads: live from awareness, with the totals.
  const live = await waitFor(
    'live download progress in outpost status',
    async () => {
      const view = await fleet.view('resume');
      return view.phase === 'downloading' && view.progress?.live && view.progress.bytesDone > 0 ? view.progress : null;
    },
    30_000,
    200,
  );
  assert.is(live.pathsTotal, 7, 'six payloads and the system itself');
  assert.ok(live.bytesTotal > 6 * 256 * KiB && live.bytesDone < live.bytesTotal);
  assert.ok(logEvents(first, 'download-progress').length > 0, 'progress is logged');
  const files = await narFiles();
  // At 100 KiB/s a file 64 KiB short of its end is still partial when the SIGKILL lands moments
  // later; what counts is what is on disk once the agent is dead, read after the kill.
  const midway = (p: { hash: string; bytes: number }): boolean =>
    p.bytes > 0 && p.bytes < files.get(p.hash)!.size - 64 * KiB;
  await waitFor(
    'two complete files and one partial',
    async () => {
      const now = await staged(host);
      return now.complete.length >= 2 && now.partial.some(midway) ? now : null;
    },
    30_000,
    20,
  );
  first.child.kill('SIGKILL');
  await first.exited;
  const atKill = await staged(host);
  const partial = (p: { hash: string; bytes: number }): boolean => p.bytes > 0 && p.bytes < files.get(p.hash)!.size;
  assert.ok(atKill.partial.some(partial), 'a partial file is on disk after the kill');
  const transfersBefore = cache.narTransfers.length;

  fleet.startAgent(host, cache.url);
  const result = await fleet.nextResult('resume', 0);
  assert.is(result.outcome, 'applied', result.reason);
  assert.is(await profileTarget(host), closures.multi);

  const transfersOf = (hash: string) => cache.narTransfers.filter((t) => t.path === files.get(hash)!.url);
  for (const hash of atKill.complete) {
    assert.is(transfersOf(hash).length, 1, `${hash}: complete before the kill, fetched exactly once`);
  }
  for (const { hash, bytes } of atKill.partial.filter(partial)) {
    const resumed = transfersOf(hash).filter((t) => cache.narTransfers.indexOf(t) >= transfersBefore);
    assert.is(resumed.length, 1, `${hash}: fetched once more after the restart`);
    const from = Number(/^bytes=(\d+)-$/.exec(resumed[0]!.range ?? '')?.[1] ?? 0);
    assert.ok(
      from > 0 && from <= bytes,
      `${hash}: resumed with a Range request from byte ${from} (had ${bytes} on disk)`,
    );
    assert.is(resumed[0]!.status, 206);
  }
  for (const [hash, file] of files) {
    const sent = transfersOf(hash).reduce((sum, t) => sum + t.bytesSent, 0);
    // Bytes still in the socket when the agent died are sent twice; nothing is fetched twice whole.
    assert.ok(sent < file.size + 64 * KiB, `${hash}: ${sent} bytes sent for a ${file.size}-byte file`);
  }
});

test('cache killed mid-NAR: bounded retries, then a signed failure; nothing half-installed', async () => {
  const cache = await fleet.serveCache({ narBytesPerSecond: 50 * KiB });
  const host = await fleet.host('cachekill');
  const agent = fleet.startAgent(host, cache.url, ['--download-retries', '2']);
  await fleet.deploy('cachekill', closures.single!);
  await waitFor(
    'part of the NAR to arrive',
    async () => (await staged(host)).partial.some((p) => p.bytes > 0),
    30_000,
    20,
  );
  const killedAt = Date.now();
  await cache.close();
  const result = await fleet.nextResult('cachekill', 0);
  assert.is(result.outcome, 'failed');
  assert.match(result.reason, /^download failed: .*gave up after 2 retries without progress \(--download-retries\)/);
  assert.ok(result.signatureValid);
  assert.is((await fleet.settledView('cachekill')).phase, 'failed');
  const retries = logEvents(agent, 'download-retry');
  assert.ok(retries.length >= 2 && retries.length <= 4, `a bounded number of retries (${retries.length})`);
  assert.ok(Date.now() - killedAt < 30_000, 'the failure came within seconds, not at the fetch timeout');
  assert.not.ok(await storeHas(host, closures.single!), 'nothing was registered');
});

test("a closure larger than the free space (16 MiB tmpfs store, 8 MiB of it Nix's GC reserve) is refused before anything is downloaded", async () => {
  const cache = await fleet.serveCache();
  const host = await fleet.host('tiny-disk');
  const unmount = await mountTmpfs(host.storeRoot, 16 * 1024 * KiB);
  try {
    const agent = fleet.startAgent(host, cache.url);
    await fleet.deploy('tiny-disk', closures.huge!);
    const result = await fleet.nextResult('tiny-disk', 0);
    assert.is(result.outcome, 'failed');
    assert.match(
      result.reason,
      /^not enough disk space on the filesystem of .*tiny-disk\/root.*: the closure needs 12\.\d MiB \(store paths 12\.\d MiB\), [0-8]\.\d MiB is free.*Nothing was downloaded$/,
    );
    assert.equal(cache.narTransfers, [], 'no NAR was requested');
    assert.is((await staged(host)).complete.length + (await staged(host)).partial.length, 0);
    await agent.stop();
  } finally {
    await unmount();
  }
});

test('--max-closure-size: a closure declaring more is refused before the download', async () => {
  const cache = await fleet.serveCache();
  const host = await fleet.host('capped');
  fleet.startAgent(host, cache.url, ['--max-closure-size', '100K']);
  await fleet.deploy('capped', closures.single!);
  const result = await fleet.nextResult('capped', 0);
  assert.is(result.outcome, 'failed');
  assert.match(
    result.reason,
    /^the closure is 51\d\.\d KiB \(sum of NarSize over 2 paths\), above --max-closure-size 100\.0 KiB/,
  );
  assert.equal(cache.narTransfers, []);
});

test('slow drip (64 bytes every 500 ms) is aborted by the throughput rule and reported', async () => {
  const cache = await fleet.serveCache({ drip: { bytes: 64, everyMs: 500 } });
  const host = await fleet.host('drip');
  const agent = fleet.startAgent(host, cache.url, [
    '--min-throughput',
    '4096',
    '--throughput-window',
    '2',
    '--download-retries',
    '1',
    '--fetch-timeout',
    '3600',
  ]);
  const started = Date.now();
  await fleet.deploy('drip', closures.drip!);
  const result = await fleet.nextResult('drip', 0);
  assert.is(result.outcome, 'failed');
  assert.match(
    result.reason,
    /too slow: \d+ B\/s over the last \d+ s is below the minimum throughput of 4096 B\/s \(--min-throughput\)/,
  );
  assert.ok(Date.now() - started < 30_000, 'aborted within seconds; the drip alone would take minutes');
  assert.ok(logEvents(agent, 'download-retry').length >= 1);
});

test('overall deadline: a download still running at --fetch-timeout fails, even though it keeps up the minimum throughput', async () => {
  const cache = await fleet.serveCache({ narBytesPerSecond: 20 * KiB });
  const host = await fleet.host('deadline');
  fleet.startAgent(host, cache.url, ['--fetch-timeout', '3']);
  await fleet.deploy('deadline', closures.single!);
  const result = await fleet.nextResult('deadline', 0);
  assert.is(result.outcome, 'failed');
  assert.match(result.reason, /^download failed: the download did not finish by its deadline .*--fetch-timeout/);
});

test('an unchanged path is never downloaded again: a closure sharing paths with the current one fetches only the new ones', async () => {
  const host = await fleet.host('shared');
  fleet.startAgent(host, fastCache.url);
  await fleet.deploy('shared', closures.base!);
  assert.is((await fleet.nextResult('shared', 0)).outcome, 'applied');
  const before = fastCache.narTransfers.length;
  const sharing = await buildSystemClosure({ name: 'nixos-system-sharing', extraPaths: 0, kernel: '6.1.1' });
  await fleet.publish(sharing);
  await fleet.deploy('shared', sharing);
  const result = await fleet.nextResult('shared', 1);
  assert.is(result.outcome, 'applied', result.reason);
  const fetched = fastCache.narTransfers.slice(before).map((t) => t.path);
  assert.is(fetched.length, 3, `the system, its kernel and its initrd: ${fetched.join(', ')}`);
  const again = await buildSystemClosure({ name: 'nixos-system-sharing2', extraPaths: 0, kernel: '6.1.1' });
  await fleet.publish(again);
  const beforeSecond = fastCache.narTransfers.length;
  await fleet.deploy('shared', again);
  assert.is((await fleet.nextResult('shared', 2)).outcome, 'applied');
  assert.is(
    fastCache.narTransfers.length - beforeSecond,
    1,
    'kernel and initrd were already in the store: only the new system path was fetched',
  );
});

test.run();
