import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { readDocuments } from '../../admin/policy-remote.js';
import { signReturnManifest } from '../../shared/bundle/format.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { type EntrySource, openBundleFile, readBundleEntries, writeBundleFile } from '../../shared/node/bundle-file.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type AdminTarget, bundleCreateArgs, deployArgs, hostStatus, targetArgs } from '../harness/admin-cli.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { startPolicyAgent } from '../harness/lifecycle-fleet.js';
import {
  buildTestClosure,
  type CacheKeyFiles,
  installFromCache,
  makeCacheKey,
  publishToCache,
} from '../harness/nix-fixtures.js';
import { pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startDaemon,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { sneakernetOrg } from '../harness/sneakernet.js';

// Sneakernet with closures and the way back (issue 16, docs/sneakernet.md), all real parts: HQ's
// coordinator (org root, an intent for h1) and the org's signed binary cache; a site relay whose
// upstream and cache upstream are unreachable (port 9) for the whole test, and a real agent (own
// store root, real Nix) behind it. The bundle carries the policy, enrollment, checkpoints, the
// intent and the closure's narinfos and NARs; the agent installs the closure from the relay's
// mirror; the return bundle brings its signed result back and HQ's `outpost status` shows it
// applied. Bundles rewritten by whoever holds the stick (hashes recomputed) are refused and change
// nothing at the site.
const dir = temporaryDirectory('bundle-closures');
const hqSetup = sneakernetOrg(dir);
const { org, hqDir, startHq } = hqSetup;
const files = {
  ...hqSetup.keyFiles,
  bundle: join(dir, 'site.outpost-bundle'),
  tampered: join(dir, 'tampered.outpost-bundle'),
  returned: join(dir, 'return.outpost-bundle'),
  siteState: join(dir, 'site-state.json'),
  next: join(dir, 'next.outpost-bundle'),
  carol: join(dir, 'carol.key'),
  otherRelay: join(dir, 'other-relay.key'),
  liveReturned: join(dir, 'live-return.outpost-bundle'),
};
// A second relay of the policy (another site): its key must not read this site relay's data.
const otherRelayKey = generateSigningKey('other-relay');
const relayDir = join(dir, 'relay');
const DEAD = '127.0.0.1:9';
let hq: DaemonProcess & { url: string; port: number };
let cache: BinaryCacheServer;
let cacheKey: CacheKeyFiles;
let host: SimulatedHost;
let closure: string;

// Alice at a server (HQ or the site relay), checking what it serves against the org root.
const alice = (url: string): AdminTarget => ({ coordinator: url, key: files.alice, orgRoot: org.root.publicKey });

const startSiteRelay = () =>
  startRelayProcess(relayDir, join(dir, 'relay.log'), [`ws://${DEAD}`], {
    extra: ['--org-root', org.root.publicKey, '--key', files.relay, '--cache-upstream', `http://${DEAD}`],
  });

// `bundle apply` with the org's cache key pinned, into the site relay's data unless told where.
function applyAtSite(bundle: string, target: string[] = ['--relay-data-dir', relayDir]) {
  return runCli(['bundle', 'apply', '--bundle', bundle, ...target, '--trusted-cache-key', cacheKey.publicKey]);
}

// `bundle create` at HQ for h1 with its closure from the org's cache.
function createAtHq(out: string, extra: string[] = []) {
  return runCli([
    ...bundleCreateArgs({ coordinator: hq.url, key: files.alice }, ['h1'], out, {
      url: cache.url,
      trustedKey: cacheKey.publicKey,
    }),
    ...extra,
  ]);
}

// Every file under the relay's data directory with its SHA-256: "changes nothing" is this, equal.
async function treeDigest(root: string): Promise<string> {
  const lines: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await fs.readdir(at, { withFileTypes: true }).catch(() => [])) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile())
        lines.push(
          `${path} ${createHash('sha256')
            .update(await fs.readFile(path))
            .digest('hex')}`,
        );
    }
  };
  await walk(root);
  return lines.sort().join('\n');
}

// What someone holding the stick can do: read every entry, change some, and write a bundle whose
// manifest and hashes are all consistent again (the format is public; so is this code). With
// `resign`, also what a relay can do with its own key (or anyone with theirs): sign the result.
async function rewriteBundle(
  source: string,
  target: string,
  edit: (entries: { path: string; bytes: Buffer }[]) => void,
  resign?: { key: SigningKey; rename?: (name: string) => string },
): Promise<void> {
  const opened = await openBundleFile(source);
  if (!opened.ok) throw new Error(opened.reason);
  const contents: { path: string; bytes: Buffer }[] = [];
  const read = await readBundleEntries(opened, (entry) => {
    const parts: Buffer[] = [];
    return {
      write: (chunk) => void parts.push(Buffer.from(chunk)),
      end: () =>
        void contents.push({ path: entry.type === 'cache' ? entry.path : entry.name, bytes: Buffer.concat(parts) }),
    };
  });
  if (!read.ok) throw new Error(read.reason);
  edit(contents);
  const entries = opened.manifest.entries.map((entry, i) => ({
    ...entry,
    ...(entry.type === 'document' && resign?.rename ? { name: resign.rename(entry.name) } : {}),
    bytes: contents[i]!.bytes.length,
    sha256: createHash('sha256').update(contents[i]!.bytes).digest('hex'),
  }));
  const sources: EntrySource[] = contents.map((c) => ({ bytes: c.bytes }));
  const manifest = { ...opened.manifest, entries };
  await writeBundleFile(target, resign ? signReturnManifest(manifest, resign.key) : manifest, sources);
}

// `bundle apply` of a return bundle into HQ's running coordinator, as an admin.
function applyAtHq(bundle: string, keyFile: string, extra: string[] = []) {
  return runCli(['bundle', 'apply', '--bundle', bundle, '--coordinator', hq.url, '--key', keyFile, ...extra]);
}

// HQ's copies of the status documents a return bundle could touch: "changes nothing" is this, equal.
async function hqStatusState(): Promise<string> {
  const names = ['hosts/h1/status', 'hosts/h2/status'];
  const doc = await readDocuments(hq.url, names, org.alice, 10_000);
  return names.map((n) => Buffer.from(Y.encodeStateVector(doc(n))).toString('base64')).join(' ');
}

const hostView = (url: string) => hostStatus(alice(url), 'h1');

test.before(async () => {
  await hqSetup.writeKeyFiles();
  await writeKeyFile(files.carol, org.carol);
  await writeKeyFile(files.otherRelay, otherRelayKey);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'sneakernet-cache-1');
  closure = await buildTestClosure({
    name: 'sneakernet-system',
    extraPaths: 2,
    payloadBytes: 64 * 1024,
    uniqueness: dir,
  });
  await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  hq = await startHq();
  const policy = hqSetup.sitePolicy(['h1']);
  policy.relays.push({ name: 'other-relay', key: otherRelayKey.publicKey, hosts: ['h2'], groups: [] });
  assert.is((await pushPolicy(hq.url, signPolicy(policy, org.root))).status, 200);
  host = await prepareHost(dir, 'h1');
  const approved = await runCli([
    'enroll',
    'approve',
    ...targetArgs({ coordinator: hq.url, key: files.alice }),
    '--host',
    'h1',
    '--host-key',
    host.publicKey,
  ]);
  assert.is(approved.code, 0, approved.stderr);
  const deployed = await runCli(deployArgs({ coordinator: hq.url, key: files.alice }, 'h1', closure));
  assert.is(deployed.code, 0, deployed.stderr);
  // The site relay's data directory exists (it ran once, never reaching HQ).
  await (await startSiteRelay()).stop();
});

test.after(async () => {
  await hq?.stop();
  await cache?.close();
  removeDirectory(dir);
});

test('HQ writes the closure into the bundle; --max-size refuses what does not fit', async () => {
  const tooSmall = await createAtHq(files.bundle, ['--max-size', '50000']);
  assert.is(tooSmall.code, 1, tooSmall.stdout);
  assert.match(tooSmall.stderr, 'more than --max-size 50000; nothing was written', tooSmall.stderr);
  await fs.access(files.bundle).then(
    () => assert.unreachable('a refused bundle was written'),
    () => undefined,
  );
  const created = await createAtHq(files.bundle);
  assert.is(created.code, 0, created.stderr);
  assert.match(created.stdout, '1 closure (3 store paths, 3 carried, 0 left out');
  const size = (await fs.stat(files.bundle)).size;
  assert.match(created.stdout, `: ${size} bytes`);
  const opened = await openBundleFile(files.bundle);
  if (!opened.ok) throw new Error(opened.reason);
  const paths = opened.manifest.entries.filter((e) => e.type === 'cache').map((e) => e.path);
  assert.is(paths.filter((p) => p.endsWith('.narinfo')).length, 3);
  // The two payload paths have equal contents: one NAR file serves both narinfos, as in Nix.
  assert.is(paths.filter((p) => p.startsWith('nar/')).length, 2);
  assert.ok(paths.includes('nix-cache-info'));
  const narBytes = opened.manifest.entries.filter((e) => e.type === 'cache' && e.path.startsWith('nar/'));
  console.log(
    `  bundle ${size} bytes for NARs of ${narBytes.reduce((s, e) => s + e.bytes, 0)} bytes (${opened.manifest.entries.length} entries)`,
  );
  // The cache is gone from here on: the site never had a path to it anyway.
  await cache.close();
});

test('bundles rewritten by whoever holds the stick are refused and change nothing at the site', async () => {
  const before = await treeDigest(relayDir);
  const cases: { what: string; edit: (entries: { path: string; bytes: Buffer }[]) => void; says: string }[] = [
    {
      what: 'a flipped byte in a NAR',
      edit: (entries) => {
        const nar = entries.find((e) => e.path.startsWith('nar/'))!;
        nar.bytes[nar.bytes.length - 100]! ^= 0x01;
      },
      says: 'the NAR was altered',
    },
    {
      what: "a narinfo swapped for another path's (validly signed for that one)",
      edit: (entries) => {
        const narinfos = entries.filter((e) => e.path.endsWith('.narinfo'));
        const [a, b] = [narinfos[0]!, narinfos[1]!];
        [a.bytes, b.bytes] = [b.bytes, a.bytes];
      },
      says: 'the narinfo was swapped',
    },
    {
      what: 'a narinfo whose References were edited (to drop a path)',
      edit: (entries) => {
        const narinfo = entries.find(
          (e) => e.path.endsWith('.narinfo') && /References: \S+ \S+/.test(e.bytes.toString()),
        )!;
        narinfo.bytes = Buffer.from(narinfo.bytes.toString().replace(/^(References: \S+) \S+/m, '$1'));
      },
      says: 'does not verify',
    },
  ];
  for (const { what, edit, says } of cases) {
    await rewriteBundle(files.bundle, files.tampered, edit);
    const refused = await applyAtSite(files.tampered);
    assert.is(refused.code, 1, `${what}: ${refused.stdout}`);
    assert.match(refused.stderr, says, what);
    assert.match(refused.stderr, 'nothing was applied', what);
    assert.is(await treeDigest(relayDir), before, `${what} changed the site`);
  }
  // A naive edit (hashes not recomputed) and a partial copy are caught by the file's own hashes.
  const bytes = await fs.readFile(files.bundle);
  const flipped = Buffer.from(bytes);
  flipped[Math.floor(bytes.length / 2)]! ^= 0x01;
  await fs.writeFile(files.tampered, flipped);
  const naive = await applyAtSite(files.tampered);
  assert.is(naive.code, 1);
  assert.match(naive.stderr, 'SHA-256');
  await fs.writeFile(files.tampered, bytes.subarray(0, Math.floor(bytes.length * 0.6)));
  const partial = await applyAtSite(files.tampered);
  assert.is(partial.code, 1);
  assert.match(partial.stderr, 'it is incomplete (a copy cut short?); copy it again');
  const unkeyed = await runCli(['bundle', 'apply', '--bundle', files.bundle, '--relay-data-dir', relayDir]);
  assert.is(unkeyed.code, 1);
  assert.match(unkeyed.stderr, '--trusted-cache-key');
  assert.is(await treeDigest(relayDir), before);
});

test('at the site: the relay takes the bundle, the agent installs the closure with no link; the return bundle shows it applied at HQ', async () => {
  const applied = await applyAtSite(files.bundle);
  assert.is(applied.code, 0, applied.stderr + applied.stdout);
  assert.match(applied.stdout, '4 documents changed, 0 already had it');
  assert.match(applied.stdout, '3 store paths checked against sneakernet-cache-1; 6 files added');
  const again = await applyAtSite(files.bundle);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, '0 documents changed, 4 already had it');
  assert.match(again.stdout, '0 files added (0 B), 6 already there');

  const relay = await startSiteRelay();
  let agent: DaemonProcess | null = null;
  try {
    agent = startPolicyAgent(host, {
      coordinators: [relay.url],
      orgRoot: org.root.publicKey,
      substituter: `${httpBaseFromWs(relay.url)}/nix-cache`,
      cacheKey: cacheKey.publicKey,
    });
    const result = await waitFor(
      "h1's applied result at the site relay",
      async () => {
        const last = (await hostView(relay.url).catch(() => null))?.lastResult;
        return last?.outcome === 'applied' ? last : null;
      },
      120_000,
      500,
    );
    assert.ok(result.signatureValid);
    assert.is(await profileTarget(host), closure);
    await agent.stop('SIGKILL');
    agent = null;
    // The way back with the relay running: its own key proves the request (attacks on it:
    // bundle-return-live.test.ts).
    const live = await runCli([
      'bundle',
      'create',
      '--return',
      '--coordinator',
      relay.url,
      '--key',
      files.relay,
      '--out',
      files.liveReturned,
    ]);
    assert.is(live.code, 0, live.stderr);
    assert.match(
      live.stdout,
      `return bundle signed by site-relay (${hqSetup.relayKey.publicKey}): 1 status document (h1)`,
    );
    assert.match(live.stdout, '3 cached store paths');
  } finally {
    await agent?.stop('SIGKILL');
    await relay.stop();
  }

  // The stopped-relay path gives the same status, state vectors and store paths.
  const created = await runCli([
    'bundle',
    'create',
    '--return',
    '--relay-data-dir',
    relayDir,
    '--key',
    files.relay,
    '--out',
    files.returned,
  ]);
  assert.is(created.code, 0, created.stderr);
  assert.match(
    created.stdout,
    `return bundle signed by site-relay (${hqSetup.relayKey.publicKey}): 1 status document (h1)`,
  );
  assert.match(created.stdout, '3 cached store paths');
  const [stoppedBundle, liveBundle] = [await openBundleFile(files.returned), await openBundleFile(files.liveReturned)];
  if (!stoppedBundle.ok || !liveBundle.ok) throw new Error('a return bundle does not open');
  assert.equal(liveBundle.manifest.entries, stoppedBundle.manifest.entries);
  assert.equal(liveBundle.manifest.siteState, stoppedBundle.manifest.siteState);
  assert.match(liveBundle.manifest.source, /^ws:\/\/127\.0\.0\.1:\d+$/);
  // HQ takes the one made from the running relay.
  await fs.copyFile(files.liveReturned, files.returned);
  console.log(`  return bundle ${(await fs.stat(files.returned)).size} bytes`);

  assert.is((await hostView(hq.url))?.lastResult ?? null, null, 'HQ has heard nothing from h1 yet');
  await returnBundleAttacks();

  // HQ keeps running: alice (deploy on h1) applies the site relay's return bundle through the
  // coordinator's endpoint, and status shows the site's result at once.
  const back = await applyAtHq(files.returned, files.alice, ['--save-site-state', files.siteState]);
  assert.is(back.code, 0, back.stderr + back.stdout);
  assert.match(back.stdout, 'hosts/h1/status: changed');
  const view = await hostView(hq.url);
  assert.is(view?.lastResult?.outcome, 'applied');
  assert.is(view?.lastResult?.signatureValid, true, "HQ verified the host's own signature on the result");
  assert.is(view?.lastResult?.closure, closure);
  const twice = await applyAtHq(files.returned, files.alice);
  assert.is(twice.code, 0, twice.stderr);
  assert.match(twice.stdout, '0 documents changed, 1 already had it');
  // The stopped-coordinator path still takes it (and finds it there already).
  await hq.stop();
  const stopped = await runCli(['bundle', 'apply', '--bundle', files.returned, '--relay-data-dir', hqDir]);
  assert.is(stopped.code, 0, stopped.stderr);
  assert.match(stopped.stdout, '0 documents changed, 1 already had it');
  hq = await startHq();
  assert.is((await hostView(hq.url))?.lastResult?.outcome, 'applied');
  // The audit timeline shows the site's result, signed by the host, logged as the bundle's write
  // (the relay that signed it, the admin who applied it).
  const audit = await runCli(['audit', 'timeline', ...targetArgs(alice(hq.url)), '--host', 'h1', '--json']);
  assert.is(audit.code, 0, audit.stderr);
  const events = (
    JSON.parse(audit.stdout) as {
      events: { kind: string; principal: string; verified: boolean; signers: { role: string }[]; summary: string }[];
    }
  ).events;
  const siteResult = events.find(
    (e) => e.kind === 'result' && e.principal === 'bundle:relay:site-relay via admin:alice',
  );
  assert.ok(
    siteResult,
    `no result from the return bundle in ${JSON.stringify(events.map((e) => [e.kind, e.principal]))}`,
  );
  assert.ok(siteResult.verified, siteResult.summary);
  assert.is(siteResult.signers[0]?.role, 'host');

  // HQ's next bundle leaves out what the site reported having.
  cache = await serveBinaryCache(join(dir, 'cache'));
  const next = await createAtHq(files.next, ['--since-state', files.siteState, '--site-has', files.siteState]);
  assert.is(next.code, 0, next.stderr);
  assert.match(next.stdout, '3 store paths, 0 carried, 3 left out as the site has them');
  console.log(`  next bundle with --since-state and --site-has: ${(await fs.stat(files.next)).size} bytes`);
  // At the site: the newer bundle (newer checkpoints), then the older one again: nothing changes.
  const newer = await applyAtSite(files.next);
  assert.is(newer.code, 0, newer.stderr);
  assert.match(newer.stdout, 'fleet/timestamp: changed');
  const older = await applyAtSite(files.bundle);
  assert.is(older.code, 0, older.stderr);
  assert.match(older.stdout, '0 documents changed, 4 already had it');
  assert.match(older.stdout, '0 files added (0 B), 6 already there');
});

// Return bundles into HQ's running coordinator from the positions that could abuse the endpoint:
// whoever carried the stick (edits an entry and recomputes every hash), the site relay (signs a
// status of a host outside its scope with its own key), anyone else with a key (signs with it),
// and an admin without deploy on the host. Each is refused and HQ's status documents stay as
// they were.
async function returnBundleAttacks(): Promise<void> {
  const before = await hqStatusState();
  const attack = join(dir, 'attack-return.outpost-bundle');
  const refusedWhole = async (what: string, says: string, keyFile = files.alice): Promise<void> => {
    const result = await applyAtHq(attack, keyFile);
    assert.is(result.code, 1, `${what}: ${result.stdout}`);
    assert.match(result.stderr, says, what);
    assert.match(result.stderr, 'nothing was applied', what);
    assert.is(await hqStatusState(), before, `${what} changed HQ`);
  };
  const flipInStatus = (entries: { path: string; bytes: Buffer }[]): void => {
    const status = entries.find((e) => e.path === 'hosts/h1/status')!;
    status.bytes[Math.floor(status.bytes.length / 2)]! ^= 0x01;
  };
  // The carrier: one byte of the status changed, every hash recomputed, the relay's signature kept.
  await rewriteBundle(files.returned, attack, flipInStatus);
  await refusedWhole("an edited status (hashes recomputed, the relay's signature kept)", 'does not verify');
  // The site relay: its own valid signature over a status of h2, which it does not serve.
  await rewriteBundle(files.returned, attack, () => undefined, {
    key: hqSetup.relayKey,
    rename: (name) => name.replace('h1', 'h2'),
  });
  const outside = await applyAtHq(attack, files.alice);
  assert.is(outside.code, 1, outside.stdout);
  assert.match(outside.stdout, 'hosts/h2/status: refused: hosts/h2/status is outside the scope of relay:site-relay');
  assert.is(await hqStatusState(), before, 'a relay wrote outside its scope');
  // Not a relay: alice's admin key signs a (genuine) status.
  await rewriteBundle(files.returned, attack, () => undefined, { key: org.alice });
  await refusedWhole("a return bundle signed by an admin's key", 'which is not a relay of policy version 1');
  // An admin with read only (carol) applies the genuine bundle.
  const carol = await applyAtHq(files.returned, files.carol);
  assert.is(carol.code, 1, carol.stdout);
  assert.match(carol.stdout, 'hosts/h1/status: refused: admin:carol has no role granting deploy on h1');
  assert.is(await hqStatusState(), before, 'an admin without deploy applied a return bundle');
  assert.is((await hostView(hq.url))?.lastResult ?? null, null, 'HQ still has heard nothing from h1');
}

test('a host with no relay: --cache-dir writes a binary cache, serve-cache serves it, real Nix installs the closure from it, and from the bundle untarred', async () => {
  const cacheDir = join(dir, 'host-cache');
  const applied = await applyAtSite(files.bundle, ['--cache-dir', cacheDir]);
  // The documents need a server: without one the command says so and applies nothing.
  assert.is(applied.code, 1);
  assert.match(applied.stderr, 'it carries 4 documents and no target for them was given');
  const withDocuments = await applyAtSite(files.bundle, ['--cache-dir', cacheDir, '--relay-data-dir', relayDir]);
  assert.is(withDocuments.code, 0, withDocuments.stderr);
  assert.match(withDocuments.stdout, '6 files added');
  const server = startDaemon(['bundle', 'serve-cache', '--cache-dir', cacheDir, '--port', '0'], join(dir, 'serve.log'));
  try {
    const line = await waitFor('serve-cache to listen', () =>
      server
        .logs()
        .split('\n')
        .find((l) => l.startsWith('{"event":"listening"')),
    );
    const { url } = JSON.parse(line) as { url: string };
    assert.is((await fetch(`${url}/../../etc/passwd`)).status, 404);
    const installed = await installFromCache({
      storeRoot: join(dir, 'fresh-store'),
      storePath: closure,
      substituterUrl: url,
      trustedPublicKeys: [cacheKey.publicKey],
    });
    assert.is(installed.code, 0, installed.stderr);
  } finally {
    await server.stop();
  }
  // The bundle is a plain tar file: GNU tar lists it manifest first, and what `tar xf` gives is a
  // binary cache real Nix installs the closure from (file://), checked against the pinned key.
  const listed = execFileSync('tar', ['tf', files.bundle], { encoding: 'utf8' }).trim().split('\n');
  assert.is(listed[0], 'outpost-bundle.json');
  assert.is(listed.at(-1), 'outpost-bundle.sha256');
  assert.ok(listed.includes('documents/hosts/h1/desired.update'), listed.join(' '));
  const extracted = join(dir, 'extracted');
  await fs.mkdir(extracted, { recursive: true });
  execFileSync('tar', ['xf', files.bundle, '-C', extracted]);
  const fromTar = await installFromCache({
    storeRoot: join(dir, 'tar-store'),
    storePath: closure,
    substituterUrl: `file://${extracted}`,
    trustedPublicKeys: [cacheKey.publicKey],
  });
  assert.is(fromTar.code, 0, fromTar.stderr);
});

test.run();
