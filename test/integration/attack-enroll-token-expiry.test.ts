import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { connectDocument } from '../../shared/node/connect.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { basePolicy, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Issue 11, item 5: a host enrolled with a one-time token stayed bound only until the token
// expired — every recomputation (a coordinator restart, any enrollment POST) re-checked the
// expiry against the clock, and the host got 4403. Expiry limits when a token can be used, not
// how long the binding lasts. A real coordinator is restarted after the token expired.
let dir = '';
let coordinator: (DaemonProcess & { url: string; port: number }) | null = null;
const keys: Record<string, { file: string; publicKey: string }> = {};
let h3: SigningKey;

const file = (name: string): string => join(dir, name);

async function ok(...args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function startCoordinator(): Promise<DaemonProcess & { url: string; port: number }> {
  coordinator = await startCoordinatorProcess(file('coordinator'), file('coordinator.log'), 0, [
    '--org-root',
    keys.root!.publicKey,
  ]);
  return coordinator;
}

// Opens h3's status document as the agent does (a key proof with h3's key): 'synced' or the close code.
function connectAsHost(url: string): Promise<'synced' | number> {
  const connection = connectDocument(url, 'hosts/h3/status', { identity: h3, maxBackoffMs: 500 });
  return new Promise<'synced' | number>((resolve) => {
    connection.provider.on('sync', (synced: boolean) => synced && resolve('synced'));
    connection.provider.on('connection-close', (event: { code: number } | null) => event && resolve(event.code));
    setTimeout(() => resolve(-1), 15_000);
  }).finally(() => connection.close());
}

test.before(async () => {
  dir = temporaryDirectory('attack-enroll-expiry');
  await Promise.all(
    ['root', 'alice', 'h3'].map(async (name) => {
      const out = await ok('keygen', '--out', file(`${name}.key`), '--name', name, '--json');
      keys[name] = { file: file(`${name}.key`), publicKey: (JSON.parse(out) as { publicKey: string }).publicKey };
    }),
  );
  h3 = await readKeyFile(keys.h3!.file);
  await startCoordinator();
  const [root, alice] = await Promise.all(['root', 'alice'].map((name) => readKeyFile(keys[name]!.file)));
  const org = {
    root: root!,
    alice: alice!,
    bob: generateSigningKey('bob'),
    carol: generateSigningKey('carol'),
    timestamp: generateSigningKey('timestamp'),
  };
  const pushed = await pushPolicy(coordinator!.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a host bound by a token stays bound after the token expired: across a coordinator restart and new enrollment POSTs', async () => {
  const token = file('h3.token');
  // The token must still be valid when the request below reaches the coordinator: the end of this
  // command and the start of `outpost enroll request` are two process starts, which a loaded
  // machine can stretch past the 6 s the token used to live. The test waits for the expiry anyway.
  await ok(
    'enroll',
    'token',
    '--key',
    keys.alice!.file,
    '--host',
    'h3',
    '--expires',
    '20s',
    '--policy-version',
    '1',
    '--out',
    token,
  );
  const expiresAt = Date.parse(
    (JSON.parse(readFileSync(token, 'utf8')) as { token: { expiresAt: string } }).token.expiresAt,
  );
  const request = (): Promise<string> =>
    ok(
      'enroll',
      'request',
      '--coordinator',
      coordinator!.url,
      '--host',
      'h3',
      '--key',
      keys.h3!.file,
      '--token',
      token,
      '--json',
    );
  assert.is((JSON.parse(await request()) as { enrolled: boolean }).enrolled, true);
  assert.is(await connectAsHost(coordinator!.url), 'synced', 'bound while the token is valid');
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, expiresAt - Date.now()) + 500));

  // Restart: the bindings are recomputed from fleet/enrollment with the token long expired.
  await coordinator!.stop();
  await startCoordinator();
  assert.is(await connectAsHost(coordinator!.url), 'synced', 'still bound after a restart past the expiry');
  // The agent asks again at every start, with the token it was given: still enrolled, not refused.
  assert.is((JSON.parse(await request()) as { enrolled: boolean }).enrolled, true);
  // Another host's enrollment POST (any write to fleet/enrollment) recomputes the bindings too.
  const other = file('h9.key');
  await ok('keygen', '--out', other, '--name', 'h9');
  await ok('enroll', 'request', '--coordinator', coordinator!.url, '--host', 'h9', '--key', other);
  assert.is(await connectAsHost(coordinator!.url), 'synced', 'still bound after another enrollment POST');
  const listing = JSON.parse(
    await ok(
      'enroll',
      'list',
      '--coordinator',
      coordinator!.url,
      '--key',
      keys.alice!.file,
      '--org-root',
      keys.root!.publicKey,
      '--json',
    ),
  ) as { bound: { host: string; hostKey: string; via: string }[] };
  assert.equal(
    listing.bound.filter((b) => b.host === 'h3'),
    [{ host: 'h3', hostKey: keys.h3!.publicKey, via: 'token' }],
  );
});

test('the expired token still binds no new key', async () => {
  const late = file('late.key');
  await ok('keygen', '--out', late, '--name', 'late');
  const result = await runCli([
    'enroll',
    'request',
    '--coordinator',
    coordinator!.url,
    '--host',
    'h3',
    '--key',
    late,
    '--token',
    file('h3.token'),
  ]);
  assert.is(result.code, 1);
  assert.match(result.stderr, /enrollment token for h3 expired at/);
});

test.run();
