import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { canonicalJson } from '../../../../shared/crypto/canonical.js';
import { toBase64, utf8Bytes } from '../../../../shared/crypto/encoding.js';
import { accessStatusSchema, parseSshPublicKey } from '../../../../shared/schemas/logins.js';
import { type Policy, policySchema, unknownPolicyFields } from '../../../../shared/schemas/policy.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { SSH_KEYS } from './ssh-key-fixtures.js';

// The policy's logins end up in sshd's authorized_keys: every way to smuggle more than one plain
// key into that file must fail validation, with a reason that says what is wrong.
const org = makeTestOrg();

function sshString(bytes: Uint8Array | string): Uint8Array {
  const data = typeof bytes === 'string' ? utf8Bytes(bytes) : bytes;
  const out = new Uint8Array(4 + data.length);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(data, 4);
  return out;
}
const blob = (...fields: (Uint8Array | string)[]): string => {
  const parts = fields.map(sshString);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return toBase64(out);
};
const point = (bytes: number): Uint8Array => Uint8Array.from({ length: bytes }, (_, i) => (i === 0 ? 4 : i));

const withLogins = (logins: unknown, overrides: Partial<Policy> = {}) =>
  policySchema.safeParse({ ...basePolicy(org, overrides), logins });
const reasonOf = (text: string): string => {
  const parsed = parseSshPublicKey(text);
  assert.not.ok(parsed.ok, `${text.slice(0, 60)} must be refused`);
  return (parsed as { reason: string }).reason;
};

test('real keys of every allowed type parse, with and without comment', () => {
  for (const [name, text] of Object.entries(SSH_KEYS)) {
    if (name === 'rsa1024') continue;
    const parsed = parseSshPublicKey(text);
    assert.ok(parsed.ok, `${name}: ${(parsed as { reason?: string }).reason}`);
    if (parsed.ok) {
      assert.ok(parsed.key.known);
      assert.is(parsed.key.comment, text.split(' ')[2]);
    }
    assert.ok(parseSshPublicKey(text.split(' ').slice(0, 2).join(' ')).ok, `${name} without comment`);
  }
  const sk = `sk-ssh-ed25519@openssh.com ${blob('sk-ssh-ed25519@openssh.com', new Uint8Array(32), 'ssh:')}`;
  assert.ok(parseSshPublicKey(sk).ok, 'security-key ed25519');
  const skEcdsa = `sk-ecdsa-sha2-nistp256@openssh.com ${blob('sk-ecdsa-sha2-nistp256@openssh.com', 'nistp256', point(65), 'ssh:')}`;
  assert.ok(parseSshPublicKey(skEcdsa).ok, 'security-key ecdsa');
  assert.ok(parseSshPublicKey(`${SSH_KEYS.ed25519.split(' ').slice(0, 2).join(' ')} alice at the clinic 2026`).ok);
});

test('injection: a newline, a carriage return, a second key, control characters', () => {
  const [type, b64] = SSH_KEYS.ed25519.split(' ');
  assert.match(reasonOf(`${SSH_KEYS.ed25519}\n${SSH_KEYS.rsa2048}`), /one line/);
  assert.match(reasonOf(`${type} ${b64}\ncommand="sh" ${SSH_KEYS.rsa2048}`), /one line/);
  assert.match(reasonOf(`${SSH_KEYS.ed25519}\r`), /one line/);
  assert.match(reasonOf(`${type} ${b64} a\u2028b`), /one line/);
  assert.match(reasonOf(`${type} ${b64} a\tb`), /control characters/);
  assert.match(reasonOf(`${type} ${b64} a\u0000b`), /control characters/);
  assert.match(reasonOf(`${type}\t${b64}`), /control characters/);
  assert.match(reasonOf(`${type}  ${b64}`), /not base64/, 'two spaces');
  assert.match(reasonOf(`${type} ${b64}  comment`), /single space/);
  assert.match(reasonOf(`${type} ${b64} caf\u00e9`), /printable ASCII/);
});

test('injection: authorized_keys options before the key are refused by name', () => {
  for (const options of [
    'command="/bin/sh -c id"',
    'from="10.0.0.0/8"',
    'no-pty',
    'restrict',
    'restrict,command="x"',
    'environment="LD_PRELOAD=/tmp/x"',
    'cert-authority',
    'permitopen="127.0.0.1:22"',
    'no-port-forwarding,no-agent-forwarding',
  ]) {
    assert.match(reasonOf(`${options} ${SSH_KEYS.ed25519}`), /options .* are not allowed/, options);
  }
});

test('a key whose embedded type differs from its label, a truncated or padded blob, bad base64', () => {
  const [, edB64] = SSH_KEYS.ed25519.split(' ');
  const [, rsaB64] = SSH_KEYS.rsa2048.split(' ');
  assert.match(reasonOf(`ssh-rsa ${edB64}`), /says ssh-rsa but the key inside is "ssh-ed25519"/);
  assert.match(reasonOf(`ssh-ed25519 ${rsaB64}`), /key inside is "ssh-rsa"/);
  assert.match(
    reasonOf(`ecdsa-sha2-nistp384 ${SSH_KEYS.ecdsa256.split(' ')[1]}`),
    /key inside is "ecdsa-sha2-nistp256"/,
  );
  assert.match(reasonOf(`ssh-ed25519 ${blob('ssh-ed25519', new Uint8Array(31))}`), /not 32 bytes/);
  assert.match(reasonOf(`ssh-ed25519 ${blob('ssh-ed25519', new Uint8Array(32), 'extra')}`), /has 2 fields, this one 3/);
  assert.match(reasonOf(`ecdsa-sha2-nistp256 ${blob('ecdsa-sha2-nistp256', 'nistp384', point(65))}`), /names curve/);
  assert.match(reasonOf(`ecdsa-sha2-nistp256 ${blob('ecdsa-sha2-nistp256', 'nistp256', point(64))}`), /malformed/);
  assert.match(reasonOf(`ssh-ed25519 ${edB64.slice(0, -4)}`), /not an SSH public key/);
  assert.match(reasonOf(`ssh-ed25519 ${edB64.slice(0, -1)}`), /not valid base64/);
  assert.match(reasonOf(`ssh-ed25519 ${edB64.replace('A', '*')}`), /not base64/);
  assert.match(reasonOf('ssh-ed25519'), /not base64/);
  assert.match(reasonOf(SSH_KEYS.rsa1024), /1024 bits, at least 2048/);
  assert.match(reasonOf(`Ssh-Ed25519 ${edB64}`), /not an SSH key type/);
});

test('oversize: key text, comment, number of keys and logins are bounded', () => {
  const [type, b64] = SSH_KEYS.ed25519.split(' ');
  assert.match(reasonOf(`${type} ${b64} ${'x'.repeat(257)}`), /comment is at most 256/);
  assert.match(reasonOf(`ssh-rsa ${'A'.repeat(5000)}`), /at most 4096 characters/);
  const big = `ssh-rsa ${blob(
    'ssh-rsa',
    Uint8Array.of(1, 0, 1),
    Uint8Array.from({ length: 2049 }, () => 0xff),
  )}`;
  assert.match(reasonOf(big), /16392 bits, at most 16384/);
  const login = { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519], hosts: ['*'] };
  assert.not.ok(withLogins([{ ...login, sshKeys: Array(17).fill(SSH_KEYS.ed25519) }]).success, '17 keys');
  assert.not.ok(withLogins([{ ...login, sshKeys: [] }]).success, 'no key');
  const many = Array.from({ length: 1001 }, (_, i) => ({ ...login, name: `p${i}` }));
  assert.not.ok(withLogins(many).success, '1001 logins');
});

test('the policy checks logins: account names, unique names, known groups, no options anywhere', () => {
  const login = { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519], groups: ['production'] };
  const ok = withLogins([login]);
  assert.ok(ok.success, ok.error?.message);
  for (const account of ['..', '.', 'a/b', 'Ops', '-x', '1abc', 'a'.repeat(33), '', 'ops\n', 'o ps']) {
    assert.not.ok(withLogins([{ ...login, account }]).success, `account ${JSON.stringify(account)}`);
  }
  const twice = withLogins([login, { ...login, account: 'root' }]);
  assert.match(String(twice.error?.message), /login alice is declared twice/);
  const unknownGroup = withLogins([{ ...login, groups: ['nowhere'] }]);
  assert.match(String(unknownGroup.error?.message), /login alice names unknown group nowhere/);
  const optioned = withLogins([{ ...login, sshKeys: [`command="id" ${SSH_KEYS.ed25519}`] }]);
  assert.match(String(optioned.error?.message), /options/);
  assert.not.ok(withLogins([{ ...login, hosts: ['Bad_Host'] }]).success);
});

test('a policy without logins keeps its exact content; unknown fields and key types are named, not fatal', () => {
  const base = basePolicy(org);
  assert.not.ok('logins' in base, 'no default added');
  assert.is(canonicalJson(policySchema.parse(JSON.parse(JSON.stringify(base)))), canonicalJson(base));
  // A key type a newer outpost may allow: well formed, embedded type matches; grants nothing here.
  const future = `ssh-future@example.org ${blob('ssh-future@example.org', new Uint8Array(16))}`;
  const parsed = withLogins([
    { name: 'alice', account: 'ops', sshKeys: [SSH_KEYS.ed25519, future], hosts: ['*'], shell: 'zsh' },
  ]);
  assert.ok(parsed.success, parsed.error?.message);
  assert.equal(unknownPolicyFields(parsed.data!), [
    'logins.0.shell',
    'logins.0.sshKeys.1 (key type ssh-future@example.org)',
  ]);
  // ...but a mislabelled unknown type is still refused.
  assert.not.ok(parseSshPublicKey(`ssh-future@example.org ${blob('ssh-other', new Uint8Array(16))}`).ok);
});

test('the access status is bounded and checks account names', () => {
  const status = { policyVersion: 3, accounts: { ops: 2 }, digest: 'a'.repeat(64) };
  assert.ok(accessStatusSchema.safeParse(status).success);
  assert.not.ok(accessStatusSchema.safeParse({ ...status, accounts: { '../etc': 1 } }).success);
  const many = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`u${i}`, 1]));
  assert.not.ok(accessStatusSchema.safeParse({ ...status, accounts: many }).success);
  assert.not.ok(accessStatusSchema.safeParse({ ...status, digest: 'x' }).success);
});

test.run();
