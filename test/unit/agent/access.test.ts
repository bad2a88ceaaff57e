import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createAccessKeeper } from '../../../agent/access.js';
import { createMemoryLogger } from '../../../shared/node/log.js';
import { type Policy, policySchema } from '../../../shared/schemas/policy.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';
import { SSH_KEYS } from '../shared/schemas/ssh-key-fixtures.js';

const org = makeTestOrg();
const policy = (version: number, logins: unknown[]): Policy =>
  policySchema.parse({ ...basePolicy(org), version, logins });
const alice = { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519], hosts: ['h1'] };
const bob = { name: 'bob', account: 'deploy', sshKeys: [SSH_KEYS.ecdsa256, SSH_KEYS.rsa2048], hosts: ['*'] };

async function setup() {
  const dir = await fs.mkdtemp(join(tmpdir(), 'outpost-access-'));
  const { logger, events } = createMemoryLogger('agent');
  return { dir, events, keeper: createAccessKeeper({ dir: join(dir, 'keys'), host: 'h1', logger }) };
}
const read = (dir: string, name: string) => fs.readFile(join(dir, 'keys', name), 'utf8');
const list = async (dir: string) => (await fs.readdir(join(dir, 'keys'))).sort();

test('one file per account, mode 0644, following each version; an account without keys loses its file', async () => {
  const { dir, keeper } = await setup();
  assert.ok(await keeper.sync(policy(1, [alice, bob])));
  assert.equal(await list(dir), ['.outpost-access.json', 'deploy', 'ops']);
  assert.is((await fs.stat(join(dir, 'keys', 'ops'))).mode & 0o777, 0o644);
  assert.match(await read(dir, 'ops'), `\n# login alice\n${SSH_KEYS.ed25519}\n`);
  assert.equal(keeper.status()?.accounts, { deploy: 2, ops: 1 });
  assert.is(keeper.status()?.policyVersion, 1);
  assert.not.ok(await keeper.sync(policy(1, [alice, bob])), 'the same version again changes nothing');
  // Version 2 revokes alice and one of bob's keys.
  assert.ok(await keeper.sync(policy(2, [{ ...bob, sshKeys: [SSH_KEYS.rsa2048] }])));
  assert.equal(await list(dir), ['.outpost-access.json', 'deploy']);
  assert.not.match(await read(dir, 'deploy'), SSH_KEYS.ecdsa256.split(' ')[1]!);
  assert.equal(keeper.status(), {
    policyVersion: 2,
    accounts: { deploy: 1 },
    digest: keeper.status()!.digest,
  });
  // Nothing left for this host: every account file goes, the manifest stays.
  await keeper.sync(policy(3, []));
  assert.equal(await list(dir), ['.outpost-access.json']);
  await fs.rm(dir, { recursive: true });
});

test('an older version never reaches the files, even for an agent that forgot its trust state', async () => {
  const { dir, keeper, events } = await setup();
  await keeper.sync(policy(2, [bob]));
  assert.not.ok(await keeper.sync(policy(1, [alice, bob])), 'a live agent ignores an older version');
  assert.equal(await list(dir), ['.outpost-access.json', 'deploy']);
  // A new agent (state directory wiped) that walked only to version 1: the manifest holds it back.
  const { logger } = createMemoryLogger('agent');
  const fresh = createAccessKeeper({ dir: join(dir, 'keys'), host: 'h1', logger });
  assert.ok(await fresh.sync(policy(1, [alice, bob])));
  assert.equal(await list(dir), ['.outpost-access.json', 'deploy'], 'alice is not back');
  assert.is(fresh.status()?.policyVersion, 2, 'the status says what the files hold');
  assert.match(String(fresh.status()?.error), /newer than version 1 in force here/);
  assert.ok(await fresh.sync(policy(2, [bob])));
  assert.is(fresh.status()?.error, undefined);
  assert.equal(events.filter((e) => e.event === 'access-written').length, 1);
  await fs.rm(dir, { recursive: true });
});

test('planted files: a symlink in an account place is replaced, not followed; temp leftovers go; other files stay', async () => {
  const { dir, keeper } = await setup();
  await fs.mkdir(join(dir, 'keys'));
  const target = join(dir, 'victim');
  await fs.writeFile(target, 'untouched\n');
  await fs.symlink(target, join(dir, 'keys', 'ops'));
  await fs.writeFile(join(dir, 'keys', '.tmp-ops-1-1'), 'half');
  await fs.writeFile(join(dir, 'keys', 'README.md'), 'mine');
  await fs.writeFile(join(dir, 'keys', 'mallory'), `${SSH_KEYS.ecdsa521}\n`);
  await keeper.sync(policy(1, [alice]));
  assert.is(await fs.readFile(target, 'utf8'), 'untouched\n');
  assert.ok((await fs.lstat(join(dir, 'keys', 'ops'))).isFile());
  assert.equal(await list(dir), ['.outpost-access.json', 'README.md', 'ops'], 'mallory (an account name) is removed');
  await fs.rm(dir, { recursive: true });
});

test('the directory: made readable by all under a umask of 0077, refused when others may write to it', async () => {
  const { dir, keeper } = await setup();
  const umask = process.umask(0o077);
  try {
    await keeper.sync(policy(1, [alice]));
  } finally {
    process.umask(umask);
  }
  assert.is((await fs.stat(join(dir, 'keys'))).mode & 0o777, 0o755);
  await fs.chmod(join(dir, 'keys'), 0o777);
  await keeper.sync(policy(2, []));
  assert.match(String(keeper.status()?.error), /writable by group or others/);
  assert.equal(await list(dir), ['.outpost-access.json', 'ops'], 'nothing written into it');
  await fs.rm(dir, { recursive: true });
});

test('a write that fails is reported in the status, and the next version retries', async () => {
  const { dir, keeper } = await setup();
  await fs.writeFile(join(dir, 'keys'), 'not a directory');
  await keeper.sync(policy(1, [alice]));
  assert.is(keeper.status(), null, 'nothing written yet, nothing claimed');
  await fs.rm(join(dir, 'keys'));
  await keeper.sync(policy(2, [alice]));
  assert.is(keeper.status()?.policyVersion, 2);
  await fs.rm(dir, { recursive: true });
});

test.run();
