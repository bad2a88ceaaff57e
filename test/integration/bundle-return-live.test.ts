import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { applyToDataDir } from '../../relay/bundle-log.js';
import { RETURN_DATA_PATH } from '../../shared/bundle/format.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { openBundleFile } from '../../shared/node/bundle-file.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { authHeaders, signAuthProof } from '../../shared/sync/auth-proof.js';
import { fetchChallenge, httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { bundleCreateArgs } from '../harness/admin-cli.js';
import { pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, runCli, temporaryDirectory } from '../harness/processes.js';
import { sneakernetOrg } from '../harness/sneakernet.js';

// `bundle create --return` from a running site relay (issue 16, docs/sneakernet.md): the relay
// answers GET /api/bundle/return-data only to a proof by its own key. The site relay enforces the
// org root and holds the policy (site-relay serves h1, other-relay serves h2) from a bundle, and a
// status document of h1; its upstream is a dead port. Everyone else who asks, from where they
// really stand (the site network, the real command with their own key), is refused and gets none
// of the data. bundle-closures.test.ts runs the whole way with a real agent and HQ taking it.
const dir = temporaryDirectory('bundle-return-live');
const hqSetup = sneakernetOrg(dir);
const { org } = hqSetup;
const files = {
  ...hqSetup.keyFiles,
  otherRelay: join(dir, 'other-relay.key'),
  toSite: join(dir, 'site.outpost-bundle'),
  returned: join(dir, 'return.outpost-bundle'),
  refused: join(dir, 'refused.outpost-bundle'),
};
const otherRelayKey = generateSigningKey('other-relay');
const relayDir = join(dir, 'relay');
let relay: (DaemonProcess & { url: string; port: number }) | null = null;

const startSiteRelay = (withKey = true) =>
  startRelayProcess(relayDir, join(dir, 'relay.log'), ['ws://127.0.0.1:9'], {
    // A relay enforcing the org root needs its key (the upstream checks it); without one it runs open.
    extra: withKey ? ['--org-root', org.root.publicKey, '--key', files.relay] : [],
  });

const returnCreate = (url: string, keyFile: string, out: string) =>
  runCli(['bundle', 'create', '--return', '--coordinator', url, '--key', keyFile, '--out', out, '--timeout', '20s']);

const absent = (file: string) =>
  fs.access(file).then(
    () => 'exists',
    () => 'absent',
  );

test.before(async () => {
  await hqSetup.writeKeyFiles();
  await writeKeyFile(files.otherRelay, otherRelayKey);
  const hq = await hqSetup.startHq();
  try {
    const policy = hqSetup.sitePolicy(['h1']);
    policy.relays.push({ name: 'other-relay', key: otherRelayKey.publicKey, hosts: ['h2'], groups: [] });
    assert.is((await pushPolicy(hq.url, signPolicy(policy, org.root))).status, 200);
    const created = await runCli(bundleCreateArgs({ coordinator: hq.url, key: files.alice }, ['h1'], files.toSite));
    assert.is(created.code, 0, created.stderr);
  } finally {
    await hq.stop();
  }
  await (await startSiteRelay()).stop();
  const applied = await runCli(['bundle', 'apply', '--bundle', files.toSite, '--relay-data-dir', relayDir]);
  assert.is(applied.code, 0, applied.stderr);
  // What h1 reported at the site (its content does not matter here: HQ's readers verify it).
  const status = new Y.Doc();
  status.getMap('seed').set('at-site', 'h1 was here');
  await applyToDataDir(relayDir, new Map([['hosts/h1/status', Y.encodeStateAsUpdate(status)]]), 'test:h1');
  relay = await startSiteRelay();
});

test.after(async () => {
  await relay?.stop();
  removeDirectory(dir);
});

test('the running relay gives its return data to the holder of its own key', async () => {
  const created = await returnCreate(relay!.url, files.relay, files.returned);
  assert.is(created.code, 0, created.stderr);
  assert.match(
    created.stdout,
    `return bundle signed by site-relay (${hqSetup.relayKey.publicKey}): 1 status document (h1), state of`,
    created.stdout,
  );
  const opened = await openBundleFile(files.returned);
  if (!opened.ok) throw new Error(opened.reason);
  assert.equal(
    opened.manifest.entries.map((e) => (e.type === 'document' ? e.name : e.path)),
    ['hosts/h1/status'],
  );
  // Every document the relay's log holds (HQ had no intent or enrollment: those are empty).
  const held = Object.keys(opened.manifest.siteState?.documents ?? {}).sort();
  for (const name of ['fleet/policy', 'hosts/h1/status']) assert.ok(held.includes(name), name);
  assert.match(created.stdout, `state of ${held.length} documents`);
  assert.ok(opened.manifest.signature, 'signed by the relay key');
});

// The positions that could want a site's statuses and results: a stranger on the network (no
// proof; a proof by its own key), someone replaying the relay's own proof or using one signed for
// another path, an admin of the policy and another relay of the policy (the real command, their
// keys). Each is refused and gets none of the data; nothing is written.
test('a stranger, a replayed or other-path proof, an admin key and another relay key are refused', async () => {
  const url = relay!.url;
  const target = `${httpBaseFromWs(url)}${RETURN_DATA_PATH}`;
  const get = async (headers: Record<string, string>) => {
    const response = await fetch(target, { headers });
    return { status: response.status, body: await response.text() };
  };
  const proof = async (key: SigningKey, path = RETURN_DATA_PATH) =>
    authHeaders(signAuthProof(key, await fetchChallenge(url, 10_000), path));
  const refused = (what: string, answer: { status: number; body: string }, status: number, says: string): void => {
    assert.is(answer.status, status, `${what}: ${answer.body}`);
    assert.match(answer.body, says, what);
    assert.not.match(answer.body, 'hosts/h1/status', what);
  };
  refused('a stranger without a proof', await get({}), 401, 'needs a key proof');
  refused(
    'a stranger proving its own key',
    await get(await proof(generateSigningKey('stranger'))),
    403,
    "is not this relay's key",
  );
  refused(
    "the relay's key, signed for another path",
    await get(await proof(hqSetup.relayKey, '/api/documents')),
    401,
    'does not verify',
  );
  const once = await proof(hqSetup.relayKey);
  const first = await get(once);
  assert.is(first.status, 200, first.body);
  assert.match(first.body, 'hosts/h1/status');
  refused("the relay's proof replayed", await get(once), 401, 'unknown, used or expired challenge');
  for (const [who, keyFile] of [
    ['an admin of the policy (alice)', files.alice],
    ['another relay of the policy', files.otherRelay],
  ] as const) {
    const result = await returnCreate(url, keyFile, files.refused);
    assert.is(result.code, 1, `${who}: ${result.stdout}`);
    assert.match(result.stderr, "is not this relay's key", who);
    assert.is(await absent(files.refused), 'absent', `${who}: a return bundle was written`);
  }
});

test('a relay without --key answers to nobody; its stopped data directory still works', async () => {
  await relay!.stop();
  relay = await startSiteRelay(false);
  const stranger = await fetch(`${httpBaseFromWs(relay.url)}${RETURN_DATA_PATH}`);
  assert.is(stranger.status, 404);
  assert.not.match(await stranger.text(), 'hosts/h1/status');
  const refused = await returnCreate(relay.url, files.relay, files.refused);
  assert.is(refused.code, 1, refused.stdout);
  assert.match(refused.stderr, 'this relay runs without --key');
  assert.match(refused.stderr, '--relay-data-dir');
  assert.is(await absent(files.refused), 'absent');
  await relay.stop();
  relay = null;
  const stopped = await runCli([
    'bundle',
    'create',
    '--return',
    '--relay-data-dir',
    relayDir,
    '--key',
    files.relay,
    '--out',
    files.refused,
  ]);
  assert.is(stopped.code, 0, stopped.stderr);
  // The same statuses and site state as the running relay gave.
  const [live, fromDisk] = [await openBundleFile(files.returned), await openBundleFile(files.refused)];
  if (!live.ok || !fromDisk.ok) throw new Error('a return bundle does not open');
  assert.equal(fromDisk.manifest.entries, live.manifest.entries);
  assert.equal(fromDisk.manifest.siteState, live.manifest.siteState);
});

test.run();
