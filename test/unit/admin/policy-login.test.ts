import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { resolveSshPublicKeys } from '../../../admin/policy-cli-kit.js';
import { addLogin, removeLogin } from '../../../admin/policy-edit.js';
import { renderPolicy } from '../../../admin/policy-render.js';
import { toBase64, utf8Bytes } from '../../../shared/crypto/encoding.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';
import { SSH_KEYS } from '../shared/schemas/ssh-key-fixtures.js';

// `outpost policy add-login` / `remove-login` as edit functions, and how --ssh-key is read.
const org = makeTestOrg();
const spec = { name: 'policy add-login' };
const rejection = async (promise: Promise<unknown>): Promise<string> => {
  try {
    await promise;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected a rejection');
};

test('add-login adds, replaces whole and notes what changed; remove-login removes; show lists keys', () => {
  const base = basePolicy(org);
  const added = addLogin(base, {
    name: 'alice',
    account: 'ops',
    sshKeys: [SSH_KEYS.ed25519, SSH_KEYS.rsa2048],
    hosts: [],
    groups: ['production'],
  });
  assert.is(added.summary, 'added login alice: account ops with 2 keys on groups production');
  assert.equal(added.policy.logins, [
    { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519, SSH_KEYS.rsa2048], groups: ['production'] },
  ]);
  const shown = renderPolicy(added.policy).join('\n');
  assert.match(shown, 'alice  account: ops  hosts: -  groups: production');
  assert.match(shown, `    ${SSH_KEYS.rsa2048}`);
  const replaced = addLogin(added.policy, {
    name: 'alice',
    account: 'ops',
    sshKeys: [SSH_KEYS.ed25519],
    hosts: ['h1'],
    groups: [],
  });
  assert.match(replaced.summary, /^replaced login alice/);
  assert.ok(replaced.notes.some((n) => /no longer has 1 key/.test(n)));
  const nowhere = addLogin(base, { name: 'bob', account: 'ops', sshKeys: [SSH_KEYS.ed25519], hosts: [], groups: [] });
  assert.ok(nowhere.notes.some((n) => /lets no one log in anywhere/.test(n)));
  const removed = removeLogin(replaced.policy, 'alice');
  assert.equal(removed.policy.logins, []);
  assert.throws(() => removeLogin(removed.policy, 'alice'), /there is no login alice; the logins are \(none\)/);
});

test('add-login refuses options, unknown groups and key types it does not write', () => {
  const base = basePolicy(org);
  const edit = (sshKeys: string[], groups: string[] = []) =>
    addLogin(base, { name: 'alice', account: 'ops', sshKeys, hosts: ['h1'], groups });
  assert.throws(() => edit([`command="id" ${SSH_KEYS.ed25519}`]), /login alice: authorized_keys options/);
  assert.throws(() => edit([SSH_KEYS.ed25519], ['nowhere']), /unknown group nowhere; define it first/);
  const blob = (type: string) => {
    const name = utf8Bytes(type);
    const out = new Uint8Array(4 + name.length + 4 + 16);
    new DataView(out.buffer).setUint32(0, name.length);
    out.set(name, 4);
    new DataView(out.buffer).setUint32(4 + name.length, 16);
    return `${type} ${toBase64(out)}`;
  };
  assert.throws(() => edit([blob('ssh-future@example.org')]), /not one this outpost writes/);
  assert.throws(
    () => addLogin(base, { name: 'a', account: '../x', sshKeys: [SSH_KEYS.ed25519], hosts: [], groups: [] }),
    /invalid/,
  );
});

test('--ssh-key: key text, a .pub file, an authorized_keys-style list; a bad line is named with its file and line', async () => {
  const dir = await fs.mkdtemp(join(tmpdir(), 'outpost-login-keys-'));
  const pub = join(dir, 'id.pub');
  await fs.writeFile(pub, `${SSH_KEYS.ecdsa256}\n`);
  const list = join(dir, 'keys');
  await fs.writeFile(list, `# team\n${SSH_KEYS.ed25519}\r\n\n${SSH_KEYS.rsa2048}\n`);
  assert.equal(await resolveSshPublicKeys(spec, 'ssh-key', [SSH_KEYS.ecdsa384, pub, list, pub]), [
    SSH_KEYS.ecdsa384,
    SSH_KEYS.ecdsa256,
    SSH_KEYS.ed25519,
    SSH_KEYS.rsa2048,
  ]);
  const bad = join(dir, 'bad');
  await fs.writeFile(bad, `${SSH_KEYS.ed25519}\nno-pty ${SSH_KEYS.ed25519}\n`);
  assert.match(
    await rejection(resolveSshPublicKeys(spec, 'ssh-key', [bad])),
    /--ssh-key: .*bad:2: authorized_keys options/,
  );
  assert.match(await rejection(resolveSshPublicKeys(spec, 'ssh-key', ['ssh-ed25519 AAAA'])), /--ssh-key: .*not/);
  assert.match(
    await rejection(resolveSshPublicKeys(spec, 'ssh-key', [join(dir, 'missing')])),
    /neither an SSH public key nor an existing file/,
  );
  await fs.rm(dir, { recursive: true });
});

test.run();
