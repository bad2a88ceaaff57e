import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type CliResult,
  type DaemonProcess,
  mapLimited,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// `outpost policy` as an operator runs it: real key files from `outpost keygen`, policy files on
// disk, and a real coordinator pinned to the org root that checks what is pushed.
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
const keys: Record<string, { file: string; publicKey: string }> = {};

const file = (name: string): string => join(dir, name);

async function outpost(...args: string[]): Promise<CliResult> {
  return runCli(args);
}

async function ok(...args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

function signatureCount(path: string): number {
  return (JSON.parse(readFileSync(path, 'utf8')) as { signatures: unknown[] }).signatures.length;
}

async function showVersion(): Promise<{ version: number | null; chain: number[] }> {
  return JSON.parse(
    await ok(
      'policy',
      'show',
      '--coordinator',
      coordinator.url,
      '--key',
      keys.alice!.file,
      '--org-root',
      keys.root!.publicKey,
      '--json',
    ),
  ) as { version: number | null; chain: number[] };
}

test.before(async () => {
  dir = temporaryDirectory('policy-cli');
  await Promise.all(
    ['root', 'root2', 'alice', 'bob'].map(async (name) => {
      const out = await ok('keygen', '--out', file(`${name}.key`), '--name', name, '--json');
      keys[name] = { file: file(`${name}.key`), publicKey: (JSON.parse(out) as { publicKey: string }).publicKey };
    }),
  );
  coordinator = await startCoordinatorProcess(file('coordinator'), file('coordinator.log'), 0, [
    '--org-root',
    keys.root!.publicKey,
  ]);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('policy round trip: init, edit, sign, verify, push, show; root rotation needs both roots; the old root alone is refused after it', async () => {
  const v1 = file('v1.json');
  await ok('policy', 'init', '--out', v1, '--root-key', keys.root!.file);
  await ok('policy', 'add-group', '--policy', v1, '--name', 'production', '--host', 'prod-1', '--threshold', '2');
  await ok(
    'policy',
    'add-role',
    '--policy',
    v1,
    '--name',
    'ops',
    '--capability',
    'deploy',
    '--capability',
    'read',
    '--host',
    '*',
  );
  await ok(
    'policy',
    'add-role',
    '--policy',
    v1,
    '--name',
    'prod-ops',
    '--capability',
    'deploy',
    '--group',
    'production',
  );
  await ok('policy', 'add-admin', '--policy', v1, '--name', 'alice', '--key', keys.alice!.publicKey, '--role', 'ops');
  await ok('policy', 'sign', '--policy', v1, '--key', keys.root!.file);
  assert.match(await ok('policy', 'verify', '--policy', v1, '--org-root', keys.root!.publicKey), /^accepted/);
  assert.match(
    await ok('policy', 'push', '--policy', v1, '--coordinator', coordinator.url),
    /accepted policy version 1/,
  );
  const shown = await showVersion();
  assert.is(shown.version, 1);
  assert.equal(shown.chain, [1]);
  const human = await ok(
    'policy',
    'show',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--org-root',
    keys.root!.file,
  );
  assert.match(human, /in force at .*: version 1/);
  assert.match(human, /alice {2}roles: ops {2}keys: /);
  assert.match(human, /production {2}threshold 2 {2}hosts: prod-1/);

  const v2 = file('v2.json');
  await ok('policy', 'next', '--from', v1, '--out', v2);
  assert.match(
    await ok('policy', 'rotate-root', '--policy', v2, '--root-key', keys.root2!.publicKey),
    /BOTH the previous version's root and the new root/,
  );
  await ok('policy', 'sign', '--policy', v2, '--key', keys.root!.file);
  const halfVerified = await outpost('policy', 'verify', '--policy', v2, '--previous', v1);
  assert.is(halfVerified.code, 1);
  assert.match(halfVerified.stdout, /REFUSED: policy version 2 is not signed by 1 of its own root keys/);
  const halfPushed = await outpost('policy', 'push', '--policy', v2, '--coordinator', coordinator.url);
  assert.is(halfPushed.code, 1);
  assert.match(
    halfPushed.stderr,
    /refused .*v2\.json: policy version 2 refused: policy version 2 is not signed by 1 of its own root keys/,
  );
  assert.is((await showVersion()).version, 1);

  await ok('policy', 'sign', '--policy', v2, '--key', keys.root2!.file);
  assert.match(await ok('policy', 'verify', '--policy', v2, '--previous', v1), /^accepted/);
  await ok('policy', 'push', '--policy', v2, '--coordinator', coordinator.url);
  assert.equal((await showVersion()).chain, [1, 2]);

  // Version 3 signed by the version-1 root, which no longer holds the root after the rotation.
  const v3 = file('v3.json');
  await ok('policy', 'next', '--from', v2, '--out', v3);
  await ok('policy', 'sign', '--policy', v3, '--key', keys.root!.file);
  const stale = await outpost('policy', 'push', '--policy', v3, '--coordinator', coordinator.url);
  assert.is(stale.code, 1);
  assert.match(stale.stderr, /policy version 3 is not signed by 1 of version 2's root keys/);
  assert.is((await showVersion()).version, 2);
});

test('show --coordinator without a key is refused by an authenticating coordinator, with what to do', async () => {
  const result = await outpost(
    'policy',
    'show',
    '--coordinator',
    coordinator.url,
    '--org-root',
    keys.root!.publicKey,
    '--timeout',
    '5s',
  );
  assert.is(result.code, 1);
  assert.match(result.stderr, /4401.*give --key with an admin key file/);
});

test('editing a signed policy clears its signatures and says so; revoke-key strips the key from its admin', async () => {
  const draft = file('edited.json');
  await ok('policy', 'init', '--out', draft, '--root-key', keys.root!.publicKey);
  await ok('policy', 'add-role', '--policy', draft, '--name', 'viewer', '--capability', 'read', '--host', '*');
  await ok('policy', 'sign', '--policy', draft, '--key', keys.root!.file);
  assert.is(signatureCount(draft), 1);
  const edited = await ok(
    'policy',
    'add-admin',
    '--policy',
    draft,
    '--name',
    'bob',
    '--key',
    keys.bob!.file,
    '--role',
    'viewer',
  );
  assert.match(edited, /cleared 1 signature/);
  assert.is(signatureCount(draft), 0);
  const unsigned = await outpost('policy', 'verify', '--policy', draft, '--org-root', keys.root!.publicKey);
  assert.is(unsigned.code, 1);
  assert.match(unsigned.stdout, /no signatures/);
  const pushed = await outpost('policy', 'push', '--policy', draft, '--coordinator', coordinator.url);
  assert.is(pushed.code, 1);
  assert.match(pushed.stderr, /has no signatures yet; sign it with 'outpost policy sign/);

  await ok('policy', 'revoke-key', '--policy', draft, '--key', keys.bob!.publicKey);
  const { policy } = JSON.parse(readFileSync(draft, 'utf8')) as {
    policy: { admins: { name: string; keys: string[] }[]; revokedKeys: string[] };
  };
  assert.equal(policy.admins.find((a) => a.name === 'bob')?.keys, []);
  assert.equal(policy.revokedKeys, [keys.bob!.publicKey]);
  const again = await outpost('policy', 'add-admin', '--policy', draft, '--name', 'bob', '--key', keys.bob!.publicKey);
  assert.is(again.code, 1);
  assert.match(again.stderr, /is revoked in this policy/);
  const unknownRole = await outpost(
    'policy',
    'add-admin',
    '--policy',
    draft,
    '--name',
    'carol',
    '--key',
    keys.alice!.publicKey,
    '--role',
    'nope',
  );
  assert.is(unknownRole.code, 1);
  assert.match(unknownRole.stderr, /unknown role nope; define it first with 'outpost policy add-role'/);
});

const SUBCOMMANDS = [
  'init',
  'add-admin',
  'remove-admin',
  'add-role',
  'add-group',
  'add-relay',
  'add-timestamp-key',
  'revoke-key',
  'next',
  'rotate-root',
  'sign',
  'verify',
  'show',
  'push',
];

test('policy --help lists every subcommand, and each subcommand has --help', async () => {
  const overview = await ok('policy', '--help');
  for (const name of SUBCOMMANDS) assert.match(overview, new RegExp(`^  ${name} `, 'm'));
  const helps = await mapLimited(SUBCOMMANDS, (name) => outpost('policy', name, '--help'));
  helps.forEach((help, i) => {
    assert.is(help.code, 0, `policy ${SUBCOMMANDS[i]} --help`);
    assert.match(help.stdout, new RegExp(`^outpost policy ${SUBCOMMANDS[i]} — `));
  });
});

test('bad arguments exit 2 with a message naming the flag', async () => {
  const draft = file('v1.json');
  const cases: [string[], RegExp][] = [
    [['policy', 'init', '--out', file('x.json')], /--root-key: give at least one org root key/],
    [
      ['policy', 'init', '--out', file('x.json'), '--root-key', 'not-a-key'],
      /--root-key: "not-a-key" is neither a base64 Ed25519 public key/,
    ],
    [
      ['policy', 'add-group', '--policy', draft, '--name', 'g', '--host', 'h1', '--threshold', 'two'],
      /--threshold: expected a whole number/,
    ],
    [
      ['policy', 'add-role', '--policy', draft, '--name', 'r', '--capability', 'fly', '--host', '*'],
      /--capability: expected one of deploy, rollback, enroll, policy, read, audit, ssh, reboot, lock, collect, check; got "fly"/,
    ],
    [
      ['policy', 'add-role', '--policy', draft, '--name', 'r', '--capability', 'read', '--host', 'Bad_Host'],
      /--host: expected a host id/,
    ],
    [['policy', 'verify', '--policy', draft], /--previous: give either --previous FILE/],
    [['policy', 'show'], /--policy: give either --policy FILE or --coordinator URL/],
    [
      ['policy', 'show', '--coordinator', 'ws://127.0.0.1:1'],
      /--org-root: with --coordinator, give the pinned org root/,
    ],
    [
      ['policy', 'push', '--policy', draft, '--coordinator', 'http://x'],
      /--coordinator: expected a ws:\/\/ or wss:\/\/ URL/,
    ],
    [['policy', 'sign', '--policy', draft, '--bogus'], /Unknown option '--bogus'/],
    [['policy', 'frobnicate'], /unknown subcommand 'frobnicate'/],
  ];
  const results = await mapLimited(cases, ([args]) => outpost(...args));
  results.forEach((result, i) => {
    assert.is(result.code, 2, `${cases[i]![0].join(' ')} → ${result.code}: ${result.stderr}`);
    assert.match(result.stderr, cases[i]![1]);
  });
});

test.run();
