import { promises as fs } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { bundleCreateArgs, deployArgs } from '../harness/admin-cli.js';
import { serveBinaryCache } from '../harness/cache-server.js';
import { buildTestClosure, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, runCli, startCoordinatorProcess, temporaryDirectory } from '../harness/processes.js';
import { startRelayProcess } from './relay-fixtures.js';

// `npm run bench:bundle`: issue 16's figure. A site of N hosts (default 10) all on one new
// closure of one big uncompressed NAR: the bundle's size against the closure's NAR size (target
// ≤ 1.05× plus a few KB), and the time `bundle create` (from HQ's coordinator and cache on
// 127.0.0.1) and `bundle apply --relay-data-dir` take, each against a peer in the same run: a
// plain copy of the cache's files (what any tool must at least do with those bytes). See
// docs/performance.md.

const MiB = 1024 * 1024;

async function timed<T>(run: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const start = performance.now();
  const value = await run();
  return { ms: performance.now() - start, value };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: { hosts: { type: 'string' }, 'size-mb': { type: 'string' }, keep: { type: 'boolean' } },
  });
  const hosts = Number(values.hosts ?? 10);
  const sizeMiB = Number(values['size-mb'] ?? 64);
  const dir = temporaryDirectory('bench-bundle');
  const org = makeTestOrg();
  const aliceFile = join(dir, 'alice.key');
  await writeKeyFile(aliceFile, org.alice);
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'bench-cache-1');
  const closure = await buildTestClosure({
    name: 'bench-bundle-system',
    extraPaths: 1,
    payloadBytes: sizeMiB * MiB,
    uniqueness: dir,
  });
  const cacheDir = join(dir, 'cache');
  await publishToCache(closure, cacheDir, cacheKey.secretKeyFile);
  const cache = await serveBinaryCache(cacheDir);
  const hq = await startCoordinatorProcess(join(dir, 'hq'), join(dir, 'hq.log'), 0, ['--org-root', org.root.publicKey]);
  try {
    const pushed = await pushPolicy(hq.url, signPolicy(basePolicy(org), org.root));
    if (pushed.status !== 200) throw new Error(`policy: ${pushed.body.error}`);
    const alice = { coordinator: hq.url, key: aliceFile };
    const ids = Array.from({ length: hosts }, (_, i) => `site-${i + 1}`);
    for (const host of ids) {
      const deployed = await runCli([...deployArgs(alice, host, closure), '--new-host']);
      if (deployed.code !== 0) throw new Error(`deploy ${host}: ${deployed.stderr}`);
    }
    const narFiles = (await fs.readdir(join(cacheDir, 'nar'))).map((n) => join(cacheDir, 'nar', n));
    const narBytes = (await Promise.all(narFiles.map((f) => fs.stat(f)))).reduce((s, st) => s + st.size, 0);

    const out = join(dir, 'site.outpost-bundle');
    const create = await timed(() =>
      runCli(bundleCreateArgs(alice, ids, out, { url: cache.url, trustedKey: cacheKey.publicKey }), {
        timeoutMs: 600_000,
      }),
    );
    if (create.value.code !== 0) throw new Error(`bundle create: ${create.value.stderr}`);
    const bundleBytes = (await fs.stat(out)).size;
    // The peer: copying the cache's files once (the bytes any carrier must move).
    const copy = await timed(() => fs.cp(cacheDir, join(dir, 'cache-copy'), { recursive: true }));

    const relayDir = join(dir, 'relay');
    await (await startRelayProcess(relayDir, join(dir, 'relay.log'), ['ws://127.0.0.1:9'])).stop();
    const apply = await timed(() =>
      runCli(
        ['bundle', 'apply', '--bundle', out, '--relay-data-dir', relayDir, '--trusted-cache-key', cacheKey.publicKey],
        { timeoutMs: 600_000 },
      ),
    );
    if (apply.value.code !== 0) throw new Error(`bundle apply: ${apply.value.stderr}`);
    const copyBack = await timed(() => fs.cp(join(dir, 'cache-copy'), join(dir, 'cache-copy-2'), { recursive: true }));
    const overhead = bundleBytes - narBytes;
    const result = {
      hosts,
      narBytes,
      bundleBytes,
      ratio: bundleBytes / narBytes,
      overheadBytes: overhead,
      targetMet: bundleBytes <= narBytes * 1.05 + 16 * 1024,
      createMs: Math.round(create.ms),
      createVsCopy: create.ms / copy.ms,
      applyMs: Math.round(apply.ms),
      applyVsCopy: apply.ms / copyBack.ms,
      copyMs: Math.round(copy.ms),
      load: loadavg().map((l) => Number(l.toFixed(2))),
    };
    console.log(JSON.stringify(result, null, 2));
    console.log(
      `${hosts} hosts on one closure: bundle ${bundleBytes} bytes for NARs of ${narBytes} bytes = ${result.ratio.toFixed(4)}× (+${overhead} bytes; target ≤ 1.05× + 16 KiB: ${result.targetMet ? 'met' : 'NOT met'}); create ${result.createMs} ms (${result.createVsCopy.toFixed(1)}× a plain copy of the cache, ${result.copyMs} ms), apply ${result.applyMs} ms (${result.applyVsCopy.toFixed(1)}× a plain copy); load ${result.load.join(' ')}`,
    );
  } finally {
    await hq.stop();
    await cache.close();
    if (values.keep) console.log(`kept ${dir}`);
    else removeDirectory(dir);
  }
}

main().catch((error: Error) => {
  console.error(error.message);
  process.exit(1);
});
