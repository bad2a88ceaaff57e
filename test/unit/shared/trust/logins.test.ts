import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type Policy, policySchema } from '../../../../shared/schemas/policy.js';
import {
  accessDigest,
  accessMatchesPolicy,
  accessSummary,
  authorizedKeysText,
  loginsForHost,
} from '../../../../shared/trust/logins.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { SSH_KEYS } from '../schemas/ssh-key-fixtures.js';

const org = makeTestOrg();
const keyOf = (text: string): string => text.split(' ').slice(0, 2).join(' ');

function policy(logins: unknown[], version = 1): Policy {
  const base = basePolicy(org);
  return policySchema.parse({
    ...base,
    version,
    groups: [...base.groups, { name: 'clinics', hosts: ['c1', 'c2'], threshold: 1 }],
    logins,
  });
}

const p = policy([
  { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519, SSH_KEYS.ecdsa256], groups: ['clinics'] },
  { name: 'bob', account: 'ops', sshKeys: [SSH_KEYS.rsa2048], hosts: ['c1'] },
  { name: 'carol', account: 'admin', sshKeys: [SSH_KEYS.ecdsa384], hosts: ['*'] },
  // The same key as alice's for the same account: written once.
  { name: 'alice-2', account: 'ops', sshKeys: [SSH_KEYS.ed25519], hosts: ['c1'] },
  { name: 'nobody', account: 'ghost', sshKeys: [SSH_KEYS.ecdsa521] },
]);

test('per host: hosts, groups and * decide; accounts sorted; a key once per account; a login with no scope grants nothing', () => {
  assert.equal(loginsForHost(p, 'c1'), [
    { account: 'admin', keys: [{ login: 'carol', key: keyOf(SSH_KEYS.ecdsa384), comment: 'user@ecdsab384' }] },
    {
      account: 'ops',
      keys: [
        { login: 'alice', key: keyOf(SSH_KEYS.ed25519), comment: 'user@ed25519' },
        { login: 'alice', key: keyOf(SSH_KEYS.ecdsa256), comment: 'user@ecdsab256' },
        { login: 'bob', key: keyOf(SSH_KEYS.rsa2048), comment: 'user@rsab2048' },
      ],
    },
  ]);
  assert.equal(
    loginsForHost(p, 'c2').map((a) => [a.account, a.keys.map((k) => k.login)]),
    [
      ['admin', ['carol']],
      ['ops', ['alice', 'alice']],
    ],
  );
  assert.equal(
    loginsForHost(p, 'elsewhere').map((a) => a.account),
    ['admin'],
  );
  assert.equal(loginsForHost(basePolicy(org), 'c1'), [], 'no logins field');
  assert.equal(loginsForHost(undefined, 'c1'), [], 'no policy yet');
});

test('the digest covers keys only, and changes when a key is revoked', () => {
  const before = accessDigest(loginsForHost(p, 'c1'));
  const relabelled = policy([
    { name: 'x', account: 'admin', sshKeys: [keyOf(SSH_KEYS.ecdsa384)], hosts: ['c1'] },
    { name: 'y', account: 'ops', sshKeys: [SSH_KEYS.ed25519, SSH_KEYS.ecdsa256, SSH_KEYS.rsa2048], hosts: ['c1'] },
  ]);
  assert.is(accessDigest(loginsForHost(relabelled, 'c1')), before, 'names and comments do not count');
  const revoked = policy([
    { name: 'y', account: 'ops', sshKeys: [SSH_KEYS.ed25519, SSH_KEYS.ecdsa256], hosts: ['c1'] },
  ]);
  assert.is.not(accessDigest(loginsForHost(revoked, 'c1')), before);
  assert.equal(accessSummary(4, loginsForHost(p, 'c1')).accounts, { admin: 1, ops: 3 });
});

test('the file text: a header, the login named above each key, nothing sshd would read as an option', () => {
  const text = authorizedKeysText(7, loginsForHost(p, 'c1')[1]!);
  const lines = text.trimEnd().split('\n');
  assert.match(lines[0]!, /^# written by outpost agent from signed policy version 7/);
  assert.equal(lines.slice(1), [
    '# login alice',
    SSH_KEYS.ed25519,
    '# login alice',
    SSH_KEYS.ecdsa256,
    '# login bob',
    SSH_KEYS.rsa2048,
  ]);
  assert.ok(text.endsWith('\n'));
});

test('an admin checks the digest an agent reports against the policy version it names', () => {
  const chain = [policy([], 1), policy([{ name: 'a', account: 'ops', sshKeys: [SSH_KEYS.ed25519], hosts: ['*'] }], 2)];
  const reported = accessSummary(2, loginsForHost(chain[1], 'h1'));
  assert.equal(accessMatchesPolicy(reported, chain, 'h1').verdict, 'matches');
  assert.equal(accessMatchesPolicy({ ...reported, policyVersion: 1 }, chain, 'h1').verdict, 'differs');
  assert.equal(accessMatchesPolicy({ ...reported, policyVersion: 3 }, chain, 'h1').verdict, 'unknown-version');
});

test.run();
