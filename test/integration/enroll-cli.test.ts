import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { sleep } from '../../shared/time/sleep.js';
import { basePolicy, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type CliResult,
  type DaemonProcess,
  mapLimited,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// `outpost enroll` against a real coordinator pinned to the org root. The policy (from the shared
// trust fixtures) gives alice 'enroll' everywhere and bob only 'deploy' on production.
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
const keys: Record<string, { file: string; publicKey: string }> = {};

const file = (name: string): string => join(dir, name);

function outpost(...args: string[]): Promise<CliResult> {
  return runCli(args);
}

async function ok(...args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

interface Listing {
  policyVersion: number | null;
  bound: { host: string; hostKey: string; via: string }[];
  pending: { host: string; hostKey: string; tokenProblem: string | null }[];
}

async function list(): Promise<Listing> {
  return JSON.parse(
    await ok(
      'enroll',
      'list',
      '--coordinator',
      coordinator.url,
      '--key',
      keys.alice!.file,
      '--org-root',
      keys.root!.publicKey,
      '--json',
    ),
  ) as Listing;
}

const request = (host: string, key: string, ...extra: string[]): Promise<CliResult> =>
  outpost(
    'enroll',
    'request',
    '--coordinator',
    coordinator.url,
    '--host',
    host,
    '--key',
    keys[key]!.file,
    '--json',
    ...extra,
  );

test.before(async () => {
  dir = temporaryDirectory('enroll-cli');
  await Promise.all(
    ['root', 'alice', 'bob', 'mallory', 'h1', 'h2', 'h3', 'h5a', 'h5b'].map(async (name) => {
      const out = await ok('keygen', '--out', file(`${name}.key`), '--name', name, '--json');
      keys[name] = { file: file(`${name}.key`), publicKey: (JSON.parse(out) as { publicKey: string }).publicKey };
    }),
  );
  coordinator = await startCoordinatorProcess(file('coordinator'), file('coordinator.log'), 0, [
    '--org-root',
    keys.root!.publicKey,
  ]);
  const [root, alice, bob] = await Promise.all(['root', 'alice', 'bob'].map((name) => readKeyFile(keys[name]!.file)));
  const org = {
    root: root!,
    alice: alice!,
    bob: bob!,
    carol: generateSigningKey('carol'),
    timestamp: generateSigningKey('timestamp'),
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a request is pending until an admin with enroll approves it; an admin without enroll is refused by the coordinator', async () => {
  const asked = await request('h1', 'h1');
  assert.is(asked.code, 0, asked.stderr);
  assert.equal(JSON.parse(asked.stdout), { host: 'h1', hostKey: keys.h1!.publicKey, enrolled: false, pending: true });
  assert.equal(
    (await list()).pending.map((p) => [p.host, p.hostKey]),
    [['h1', keys.h1!.publicKey]],
  );

  const byBob = await outpost(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.bob!.file,
    '--host',
    'h1',
  );
  assert.is(byBob.code, 1);
  assert.match(byBob.stderr, /refused the approval of h1: enrollment of h1: admin bob lacks 'enroll' for host h1/);
  assert.equal((await list()).bound, []);

  const human = await ok(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--host',
    'h1',
  );
  assert.match(human, new RegExp(`approved: h1 is bound to key ${keys.h1!.publicKey.replace(/[+/]/g, '\\$&')}`));
  const listing = await list();
  assert.equal(listing.bound, [{ host: 'h1', hostKey: keys.h1!.publicKey, via: 'approval' }]);
  assert.equal(listing.pending, []);
  assert.match(
    await ok(
      'enroll',
      'list',
      '--coordinator',
      coordinator.url,
      '--key',
      keys.alice!.file,
      '--org-root',
      keys.root!.file,
    ),
    /bound hosts \(1\):\n {2}h1 {2}key .* {2}via approval/,
  );
});

test('a token from an admin with enroll binds its host at once; an expired token is refused', async () => {
  const token = file('h2.token');
  await ok(
    'enroll',
    'token',
    '--key',
    keys.alice!.file,
    '--host',
    'h2',
    '--expires',
    '1h',
    '--coordinator',
    coordinator.url,
    '--out',
    token,
  );
  const asked = await request('h2', 'h2', '--token', token);
  assert.is(asked.code, 0, asked.stderr);
  assert.is((JSON.parse(asked.stdout) as { enrolled: boolean }).enrolled, true);
  assert.ok((await list()).bound.some((b) => b.host === 'h2' && b.hostKey === keys.h2!.publicKey && b.via === 'token'));

  const wrongHost = await request('h3', 'h3', '--token', token);
  assert.is(wrongHost.code, 1);
  assert.match(wrongHost.stderr, /--token: .* is for host h2, not h3/);

  const shortLived = file('h3.token');
  await ok(
    'enroll',
    'token',
    '--key',
    keys.alice!.file,
    '--host',
    'h3',
    '--expires',
    '1s',
    '--policy-version',
    '1',
    '--out',
    shortLived,
  );
  await sleep(1100);
  const expired = await request('h3', 'h3', '--token', shortLived);
  assert.is(expired.code, 1);
  assert.match(expired.stderr, /refused the enrollment request for h3: enrollment token for h3 expired at/);
});

test('an approval signed by a key outside the policy is refused', async () => {
  const forged = await outpost(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.mallory!.file,
    '--host',
    'h3',
    '--host-key',
    keys.h3!.publicKey,
    '--policy-version',
    '1',
  );
  assert.is(forged.code, 1);
  assert.match(
    forged.stderr,
    /refused the approval of h3: enrollment of h3: key .* is not an admin key under policy 1/,
  );
  assert.not.ok((await list()).bound.some((b) => b.host === 'h3'));
});

test('approve without --host-key refuses to choose between several pending keys and lists them', async () => {
  assert.is((await request('h5', 'h5a')).code, 0);
  assert.is((await request('h5', 'h5b')).code, 0);
  const ambiguous = await outpost(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--host',
    'h5',
  );
  assert.is(ambiguous.code, 1);
  assert.match(ambiguous.stderr, /2 pending requests for h5 with different keys/);
  assert.ok(ambiguous.stderr.includes(keys.h5a!.publicKey) && ambiguous.stderr.includes(keys.h5b!.publicKey));
  await ok(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--host',
    'h5',
    '--host-key',
    keys.h5b!.file,
  );
  const listing = await list();
  assert.ok(listing.bound.some((b) => b.host === 'h5' && b.hostKey === keys.h5b!.publicKey));
  assert.equal(
    listing.pending.map((p) => [p.host, p.hostKey]),
    [['h5', keys.h5a!.publicKey]],
  );
});

const SUBCOMMANDS = ['request', 'token', 'list', 'approve'];

test('enroll --help lists every subcommand, each has --help, and bad arguments exit 2 naming the flag', async () => {
  const overview = await ok('enroll', '--help');
  for (const name of SUBCOMMANDS) assert.match(overview, new RegExp(`^  ${name} `, 'm'));
  const cases: [string[], RegExp][] = [
    [
      [
        'enroll',
        'token',
        '--key',
        'k',
        '--host',
        'h9',
        '--expires',
        'forever',
        '--policy-version',
        '1',
        '--out',
        file('t'),
      ],
      /--expires: expected a duration/,
    ],
    [
      ['enroll', 'token', '--key', 'k', '--host', 'h9', '--expires', '0', '--policy-version', '1', '--out', file('t')],
      /--expires: the token must be valid for some time/,
    ],
    [
      ['enroll', 'token', '--key', 'k', '--host', 'h9', '--expires', '1h', '--out', file('t')],
      /--policy-version: give either --policy-version N or --coordinator URL/,
    ],
    [
      ['enroll', 'request', '--coordinator', 'ws://127.0.0.1:1', '--host', 'Not_A_Host', '--key', 'k'],
      /--host: host ids are/,
    ],
    [['enroll', 'list', '--coordinator', 'ws://127.0.0.1:1', '--key', 'k'], /--org-root: give the pinned org root/],
    [
      [
        'enroll',
        'approve',
        '--coordinator',
        'ws://127.0.0.1:1',
        '--key',
        'k',
        '--host',
        'h9',
        '--policy-version',
        'latest',
      ],
      /--policy-version: expected a policy version number/,
    ],
    [
      ['enroll', 'approve', '--coordinator', 'ws://127.0.0.1:1', '--key', 'k', '--host', 'h9', '--host-key', 'nope'],
      /--host-key: "nope" is neither a base64 Ed25519 public key/,
    ],
    [['enroll', 'frobnicate'], /unknown subcommand 'frobnicate'/],
  ];
  const helps = await mapLimited(SUBCOMMANDS, (name) => outpost('enroll', name, '--help'));
  const bad = await mapLimited(cases, ([args]) => outpost(...args));
  helps.forEach((help, i) => {
    assert.is(help.code, 0, `enroll ${SUBCOMMANDS[i]} --help`);
    assert.match(help.stdout, new RegExp(`^outpost enroll ${SUBCOMMANDS[i]} — `));
  });
  bad.forEach((result, i) => {
    assert.is(result.code, 2, `${cases[i]![0].join(' ')} → ${result.code}: ${result.stderr}`);
    assert.match(result.stderr, cases[i]![1]);
  });
});

test.run();
