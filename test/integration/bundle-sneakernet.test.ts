import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { readDocuments } from '../../admin/policy-remote.js';
import { toBase64 } from '../../shared/crypto/encoding.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { openBundleFile } from '../../shared/node/bundle-file.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type AdminTarget, bundleCreateArgs, deployArgs, hostStatus } from '../harness/admin-cli.js';
import { pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';
import { sneakernetOrg } from '../harness/sneakernet.js';

// Sneakernet, first slice (issue 16, docs/sneakernet.md): HQ's coordinator holds an intent for
// h1; `bundle create` writes it, with the policy chain, enrollment and checkpoints, to a file;
// a second coordinator standing for the site (no link to HQ: it is never told HQ's address)
// gets it through `bundle apply`, and a reader there that pins only the org root sees the
// intent as valid. Applying again, or an older bundle, changes nothing; a bundle with one
// flipped byte is refused and changes nothing.
const dir = temporaryDirectory('bundle-sneakernet');
const hqSetup = sneakernetOrg(dir);
const { org } = hqSetup;
const files = {
  ...hqSetup.keyFiles,
  bundle1: join(dir, 'gen1.outpost-bundle'),
  bundle2: join(dir, 'gen2.outpost-bundle'),
  flipped: join(dir, 'flipped.outpost-bundle'),
  delta: join(dir, 'delta.outpost-bundle'),
  full3: join(dir, 'gen3.outpost-bundle'),
  state: join(dir, 'site-state.json'),
  since: join(dir, 'since.outpost-bundle'),
  full4: join(dir, 'gen4.outpost-bundle'),
  sinceBoth: join(dir, 'since-both.outpost-bundle'),
  stateOnly: join(dir, 'state-only.outpost-bundle'),
};
const closure = (n: number): string => `/nix/store/${String(n).repeat(32)}-nixos-system-h1`;
let hq: DaemonProcess & { url: string; port: number };
let site: DaemonProcess & { url: string; port: number };

const alice = (): AdminTarget => ({ coordinator: hq.url, key: files.alice });

async function deploy(closurePath: string): Promise<void> {
  const result = await runCli([...deployArgs(alice(), 'h1', closurePath), '--new-host']);
  assert.is(result.code, 0, result.stderr);
}

// h1's intent as a reader at the site sees it, pinning only the org root.
async function siteDesired() {
  return (await hostStatus({ coordinator: site.url, orgRoot: org.root.publicKey }, 'h1'))?.desired ?? null;
}

// The site's whole state, to prove a refused bundle changed nothing.
async function siteState(): Promise<string> {
  const names = ['fleet/policy', 'fleet/enrollment', 'fleet/timestamp', 'hosts/h1/desired'];
  const doc = await readDocuments(site.url, names, null, 10_000);
  return names.map((n) => toBase64(Y.encodeStateVector(doc(n)))).join(' ');
}

// `outpost bundle create` at HQ for h1, as alice.
function createBundle(out: string, extra: string[] = []) {
  return runCli([...bundleCreateArgs(alice(), ['h1'], out), ...extra]);
}

function apply(bundle: string) {
  return runCli(['bundle', 'apply', '--bundle', bundle, '--coordinator', site.url, '--timeout', '20s']);
}

test.before(async () => {
  await hqSetup.writeKeyFiles();
  hq = await hqSetup.startHq();
  assert.is((await pushPolicy(hq.url, signPolicy(hqSetup.sitePolicy(['*']), org.root))).status, 200);
  // The site's server: its own data, no upstream, reachable only from "the site".
  site = await startCoordinatorProcess(join(dir, 'site'), join(dir, 'site.log'), 0, []);
});

test.after(async () => {
  await hq?.stop();
  await site?.stop();
  removeDirectory(dir);
});

test('a bundle carries an intent to a site with no link; the site verifies it from the org root', async () => {
  await deploy(closure(1));
  const refusedSize = await createBundle(files.bundle1, ['--max-size', '100']);
  assert.is(refusedSize.code, 1);
  assert.match(refusedSize.stderr, 'more than --max-size 100; nothing was written');
  assert.is(
    await fs.access(files.bundle1).then(
      () => 'exists',
      () => 'absent',
    ),
    'absent',
  );

  const created = await createBundle(files.bundle1);
  assert.is(created.code, 0, created.stderr);
  const size = (await fs.stat(files.bundle1)).size;
  assert.match(created.stdout, `4 documents: ${size} bytes`);

  const before = await readDocuments(site.url, ['hosts/h1/desired'], null, 10_000);
  assert.is(readIntentEntries(before('hosts/h1/desired')).entries.length, 0, 'the site holds no intent yet');
  const applied = await apply(files.bundle1);
  assert.is(applied.code, 0, applied.stderr + applied.stdout);
  assert.match(applied.stdout, 'hosts/h1/desired: changed');
  assert.match(applied.stdout, 'fleet/policy: changed');
  const desired = await siteDesired();
  assert.ok(desired, 'the site shows the intent');
  assert.is(desired.generation, 1);
  assert.is(desired.signatureValid, true);
  assert.is(desired.trustedSigner, true, 'signed by an admin of the policy the bundle carried');

  const again = await apply(files.bundle1);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, '0 documents changed, 4 already had it');
});

test('a bundle with one flipped byte is refused, names the document, and changes nothing', async () => {
  await deploy(closure(2));
  const created = await createBundle(files.bundle2);
  assert.is(created.code, 0, created.stderr);
  const bytes = await fs.readFile(files.bundle2);
  // Flip a byte inside h1's desired update: the closure path of generation 2 is in it.
  const at = bytes.indexOf(Buffer.from(closure(2)));
  assert.ok(at > 0);
  const flipped = Buffer.from(bytes);
  flipped[at + 20]! ^= 0x01;
  await fs.writeFile(files.flipped, flipped);
  const before = await siteState();
  const refused = await apply(files.flipped);
  assert.is(refused.code, 1);
  assert.match(refused.stderr, 'the update of hosts/h1/desired has SHA-256');
  assert.match(refused.stderr, 'nothing was applied');
  assert.is(await siteState(), before);
  assert.is((await siteDesired())?.generation, 1);

  const applied = await apply(files.bundle2);
  assert.is(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, 'hosts/h1/desired: changed');
  assert.is((await siteDesired())?.generation, 2);

  // The older bundle after the newer one: nothing changes, the newest intent stays.
  const older = await apply(files.bundle1);
  assert.is(older.code, 0, older.stderr);
  assert.match(older.stdout, '0 documents changed');
  assert.is((await siteDesired())?.generation, 2);
});

test('--since-state carries only what the site lacks', async () => {
  await deploy(closure(3));
  const names = ['fleet/policy', 'fleet/enrollment', 'fleet/timestamp', 'hosts/h1/desired'];
  const doc = await readDocuments(site.url, names, null, 10_000);
  await fs.writeFile(
    files.state,
    JSON.stringify({ documents: Object.fromEntries(names.map((n) => [n, toBase64(Y.encodeStateVector(doc(n)))])) }),
  );
  const created = await createBundle(files.delta, ['--since-state', files.state]);
  assert.is(created.code, 0, created.stderr);
  const full = await createBundle(files.full3);
  assert.is(full.code, 0, full.stderr);
  const desiredBytes = async (file: string): Promise<number> => {
    const opened = await openBundleFile(file);
    if (!opened.ok) throw new Error(opened.reason);
    return opened.manifest.entries.find((d) => d.type === 'document' && d.name === 'hosts/h1/desired')!.bytes;
  };
  const [deltaDesired, fullDesired] = [await desiredBytes(files.delta), await desiredBytes(files.full3)];
  console.log(
    `  since-state bundle: ${(await fs.stat(files.delta)).size} bytes (h1 desired ${deltaDesired}); full: ${(await fs.stat(files.full3)).size} bytes (h1 desired ${fullDesired})`,
  );
  assert.ok(deltaDesired < fullDesired, `delta ${deltaDesired} bytes < full ${fullDesired} bytes`);
  const applied = await apply(files.delta);
  assert.is(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, 'hosts/h1/desired: changed');
  assert.is((await siteDesired())?.generation, 3);
});

// The manifest entry of one document in a bundle file.
async function documentEntry(file: string, name: string) {
  const opened = await openBundleFile(file);
  if (!opened.ok) throw new Error(opened.reason);
  const entry = opened.manifest.entries.find((d) => d.type === 'document' && d.name === name);
  if (entry?.type !== 'document') throw new Error(`${file} has no ${name}`);
  return entry;
}

test('--since TIME carries only what HQ logged after TIME; a bad time names the flag; --since-state wins where it names a document', async () => {
  const absent = async (file: string) =>
    fs.access(file).then(
      () => 'exists',
      () => 'absent',
    );
  for (const bad of ['yesterday', '2026-13-01T00:00:00Z', '2026-06-01 12:00']) {
    const refused = await createBundle(files.since, ['--since', bad]);
    assert.is.not(refused.code, 0, bad);
    assert.match(refused.stderr, '--since', bad);
    assert.match(refused.stderr, 'ISO 8601 UTC time such as 2026-06-01T12:00:00Z', bad);
    assert.is(await absent(files.since), 'absent', bad);
  }
  // `since` is when the site last heard from HQ: it then gets everything HQ logged until a bit
  // after (a full bundle made after `since`); HQ logs generation 4 later.
  const pause = () => new Promise((resolve) => setTimeout(resolve, 20));
  await pause();
  const since = new Date().toISOString();
  await pause();
  const current = await createBundle(files.full4);
  assert.is(current.code, 0, current.stderr);
  const caughtUp = await apply(files.full4);
  assert.is(caughtUp.code, 0, caughtUp.stderr + caughtUp.stdout);
  await deploy(closure(4));
  const created = await createBundle(files.since, ['--since', since]);
  assert.is(created.code, 0, created.stderr);
  assert.match(created.stdout, `(only updates since ${since})`);
  const full = await createBundle(files.full4);
  assert.is(full.code, 0, full.stderr);
  const [sinceDesired, fullDesired] = [
    await documentEntry(files.since, 'hosts/h1/desired'),
    await documentEntry(files.full4, 'hosts/h1/desired'),
  ];
  console.log(
    `  --since bundle: ${(await fs.stat(files.since)).size} bytes (h1 desired ${sinceDesired.bytes}); full: ${(await fs.stat(files.full4)).size} bytes (h1 desired ${fullDesired.bytes})`,
  );
  assert.is(sinceDesired.full, false);
  assert.ok(sinceDesired.bytes < fullDesired.bytes, `since ${sinceDesired.bytes} bytes < full ${fullDesired.bytes}`);
  assert.ok(sinceDesired.bytes > 0);
  const applied = await apply(files.since);
  assert.is(applied.code, 0, applied.stderr + applied.stdout);
  assert.match(applied.stdout, 'hosts/h1/desired: changed');
  assert.is((await siteDesired())?.generation, 4);

  // The state file (the site before generation 3) names h1's desired document: its vector wins
  // over a --since after generation 4, so generations 3 and 4 both go, as with the file alone.
  const late = new Date(Date.now() + 1000).toISOString();
  const both = await createBundle(files.sinceBoth, ['--since-state', files.state, '--since', late]);
  assert.is(both.code, 0, both.stderr);
  assert.match(both.stdout, `lacks; for documents it does not name, updates since ${late}`);
  const stateOnly = await createBundle(files.stateOnly, ['--since-state', files.state]);
  assert.is(stateOnly.code, 0, stateOnly.stderr);
  const [bothDesired, stateDesired] = [
    await documentEntry(files.sinceBoth, 'hosts/h1/desired'),
    await documentEntry(files.stateOnly, 'hosts/h1/desired'),
  ];
  assert.is(bothDesired.sha256, stateDesired.sha256);
  assert.ok(bothDesired.bytes > sinceDesired.bytes);

  // A --since later than the site's last news: generation 6 builds on generation 5, which the
  // site never got. The site says so, and its document does not take a half it cannot show.
  await deploy(closure(5));
  await pause();
  const tooLate = new Date().toISOString();
  await pause();
  await deploy(closure(6));
  const gap = await createBundle(files.since, ['--since', tooLate]);
  assert.is(gap.code, 0, gap.stderr);
  const before = await siteState();
  const refused = await apply(files.since);
  assert.is(refused.code, 1, refused.stdout);
  assert.match(refused.stdout, 'hosts/h1/desired: refused: it builds on earlier updates this site does not have');
  assert.match(refused.stdout, 'ask HQ for a bundle with an earlier --since');
  assert.is((await siteDesired())?.generation, 4);
  assert.is((await siteState()).split(' ')[3], before.split(' ')[3], "h1's desired document at the site is unchanged");
});

test('--relay-data-dir: a relay enforcing the org root, whose upstream is unreachable, gets the policy and intent', async () => {
  const relayDir = join(dir, 'relay');
  // Nothing listens on port 9 (discard): the relay never reaches HQ.
  const relayArgs = ['--org-root', org.root.publicKey, '--key', files.relay];
  const start = () => startRelayProcess(relayDir, join(dir, 'relay.log'), ['ws://127.0.0.1:9'], { extra: relayArgs });
  let relay = await start();
  // A running relay holds its log: the command says to stop it, and applies nothing.
  const busy = await runCli(['bundle', 'apply', '--bundle', files.full3, '--relay-data-dir', relayDir]);
  assert.is(busy.code, 1);
  assert.match(busy.stderr, 'Stop it');
  // Over the sync protocol the relay, holding no policy, lets no key write (or read) anything.
  const refused = await runCli([
    'bundle',
    'apply',
    '--bundle',
    files.full3,
    '--coordinator',
    relay.url,
    '--key',
    files.alice,
    '--timeout',
    '5s',
  ]);
  assert.is(refused.code, 1);
  await relay.stop();

  const applied = await runCli(['bundle', 'apply', '--bundle', files.full3, '--relay-data-dir', relayDir]);
  assert.is(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, 'fleet/policy: changed');
  assert.match(applied.stdout, 'hosts/h1/desired: changed');
  const again = await runCli(['bundle', 'apply', '--bundle', files.full3, '--relay-data-dir', relayDir]);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, '0 documents changed, 4 already had it');

  relay = await start();
  try {
    const desired = (await hostStatus({ coordinator: relay.url, key: files.alice, orgRoot: org.root.publicKey }, 'h1'))
      ?.desired;
    assert.is(desired?.generation, 3);
    assert.is(desired?.signatureValid, true);
    assert.is(desired?.trustedSigner, true);
  } finally {
    await relay.stop();
  }
});

test('--relay and --group: the site is the hosts the verified policy gives the relay or the group', async () => {
  const v2 = hqSetup.sitePolicy([]);
  v2.version = 2;
  v2.relays = [{ name: 'site-relay', key: hqSetup.relayKey.publicKey, hosts: ['h1'], groups: ['production'] }];
  assert.is((await pushPolicy(hq.url, signPolicy(v2, org.root))).status, 200);
  const bundleHosts = async (file: string): Promise<string[]> => {
    const opened = await openBundleFile(file);
    if (!opened.ok) throw new Error(opened.reason);
    return opened.manifest.hosts;
  };
  const withRoot = ['--org-root', org.root.publicKey];
  const byRelay = join(dir, 'by-relay.outpost-bundle');
  const relayCreated = await runCli([
    'bundle',
    'create',
    '--coordinator',
    hq.url,
    '--key',
    files.alice,
    '--relay',
    'site-relay',
    ...withRoot,
    '--out',
    byRelay,
  ]);
  assert.is(relayCreated.code, 0, relayCreated.stderr);
  assert.match(relayCreated.stdout, 'relay site-relay: 2 hosts (h1, prod-1)');
  assert.match(relayCreated.stdout, '5 documents');
  assert.equal(await bundleHosts(byRelay), ['h1', 'prod-1']);

  const byGroup = join(dir, 'by-group.outpost-bundle');
  const groupCreated = await runCli([
    ...bundleCreateArgs(alice(), ['h1'], byGroup),
    '--group',
    'production',
    ...withRoot,
  ]);
  assert.is(groupCreated.code, 0, groupCreated.stderr);
  assert.match(groupCreated.stdout, 'group production: 1 host (prod-1)');
  assert.equal(await bundleHosts(byGroup), ['h1', 'prod-1']);

  // The site's bundle from --relay applies like any other: h1's intent arrives.
  const applied = await apply(byRelay);
  assert.is(applied.code, 0, applied.stderr + applied.stdout);
  assert.match(applied.stdout, 'hosts/prod-1/desired');

  const missing = join(dir, 'unknown.outpost-bundle');
  const unknownRelay = await runCli([...bundleCreateArgs(alice(), [], missing), '--relay', 'nope', ...withRoot]);
  assert.is(unknownRelay.code, 1);
  assert.match(
    unknownRelay.stderr,
    'policy version 2 (walked from --org-root) has no relay named nope (relays: site-relay)',
  );
  const unknownGroup = await runCli([...bundleCreateArgs(alice(), [], missing), '--group', 'nope', ...withRoot]);
  assert.is(unknownGroup.code, 1);
  assert.match(unknownGroup.stderr, 'has no group named nope (groups: production)');
  const noRoot = await runCli([...bundleCreateArgs(alice(), [], missing), '--relay', 'site-relay']);
  assert.not.equal(noRoot.code, 0);
  assert.match(noRoot.stderr, '--org-root');
  assert.is(
    await fs.access(missing).then(
      () => 'exists',
      () => 'absent',
    ),
    'absent',
  );
});

test.run();
