import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Real `outpost deploy` and `outpost status` processes against a real coordinator run with
// --org-root (so the admin key really is needed), given the coordinator and key only by the
// environment or only by the admin config file: flag > environment > file.
const org = makeTestOrg();
const dir = temporaryDirectory('admin-config');
const closure = `/nix/store/${'a'.repeat(32)}-nixos-system-h1`;
let coordinator: DaemonProcess & { url: string; port: number };

// The test process's own settings must not leak into the commands it runs.
for (const name of ['OUTPOST_CONFIG', 'OUTPOST_COORDINATOR', 'OUTPOST_KEY', 'OUTPOST_ORG_ROOT', 'OUTPOST_TIMEOUT'])
  delete process.env[name];

// Only what the test gives: a home of its own with no config in it unless the test writes one.
const home = join(dir, 'home');
const cli = (args: string[], env: Record<string, string> = {}) =>
  runCli(args, { env: { HOME: home, XDG_CONFIG_HOME: '', ...env }, timeoutMs: 30_000 });

test.before(async () => {
  await fs.mkdir(join(home, '.config', 'outpost'), { recursive: true });
  await writeKeyFile(join(home, '.config', 'outpost', 'alice.key'), org.alice);
  await writeKeyFile(join(dir, 'carol.key'), org.carol);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('deploy with the coordinator and key from the environment only', async () => {
  const result = await cli(['deploy', '--host', 'h1', '--closure', closure, '--new-host'], {
    OUTPOST_COORDINATOR: coordinator.url,
    OUTPOST_KEY: join(home, '.config', 'outpost', 'alice.key'),
    OUTPOST_TIMEOUT: '20',
  });
  assert.is(result.code, 0, result.stderr);
  assert.match(result.stdout, /stored: h1 → generation 1/);
});

test('status with the coordinator, key and timeout from the default config file only', async () => {
  // The key path is relative to the config file's folder.
  await fs.writeFile(
    join(home, '.config', 'outpost', 'config.json'),
    JSON.stringify({ coordinator: coordinator.url, key: 'alice.key', timeout: '20s' }),
  );
  const result = await cli(['status', '--json']);
  assert.is(result.code, 0, result.stderr);
  const view = JSON.parse(result.stdout) as { hosts: { host: string; desired?: { generation: number } | null }[] };
  const h1 = view.hosts.find((h) => h.host === 'h1');
  assert.ok(h1, result.stdout);
  assert.match(JSON.stringify(h1), /"generation":1/);
});

test('the environment wins over the file, and a flag over both', async () => {
  const configFile = join(dir, 'other-config.json');
  await fs.writeFile(configFile, JSON.stringify({ coordinator: coordinator.url, key: 'carol.key', timeout: 20 }));
  // carol may read: status works with her key from $OUTPOST_CONFIG's file.
  const carol = await cli(['status', '--json'], { OUTPOST_CONFIG: configFile });
  assert.is(carol.code, 0, carol.stderr);
  // A dead coordinator in the environment wins over the file's good one…
  const dead = 'ws://127.0.0.1:9';
  const fromEnv = await cli(['status', '--json', '--timeout', '2'], {
    OUTPOST_CONFIG: configFile,
    OUTPOST_COORDINATOR: dead,
  });
  assert.is.not(fromEnv.code, 0, 'the environment coordinator was used');
  assert.match(fromEnv.stderr, /127\.0\.0\.1:9/);
  // …and the flag wins over the environment.
  const fromFlag = await cli(['status', '--json', '--coordinator', coordinator.url], {
    OUTPOST_CONFIG: configFile,
    OUTPOST_COORDINATOR: dead,
  });
  assert.is(fromFlag.code, 0, fromFlag.stderr);
});

test('without the key the coordinator refuses: the key from the file is what proves who asks', async () => {
  const configFile = join(dir, 'no-key.json');
  await fs.writeFile(configFile, JSON.stringify({ coordinator: coordinator.url, timeout: '3s' }));
  const result = await cli(['status', '--json'], { OUTPOST_CONFIG: configFile });
  assert.is.not(result.code, 0, result.stdout);
  assert.match(result.stderr, /answered 401/);
});

test('a bad config file is a usage error naming the file and the field', async () => {
  const configFile = join(dir, 'bad.json');
  await fs.writeFile(configFile, JSON.stringify({ coordinator: 'https://fleet.example.org', key: 'alice.key' }));
  const result = await cli(['status'], { OUTPOST_CONFIG: configFile });
  assert.is(result.code, 2);
  assert.match(
    result.stderr,
    new RegExp(
      `^outpost status: config file ${configFile.replace(/[.]/g, '\\.')}: field coordinator: expected a ws:// or wss:// URL; fix it`,
    ),
  );
  const help = await cli(['status', '--help', '--json'], { OUTPOST_CONFIG: configFile });
  assert.is(help.code, 0, 'help never reads the file');
  const json = JSON.parse(help.stdout) as { configFile: { path: string } };
  assert.is(json.configFile.path, configFile);
});

test.run();
