import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, useEd25519Verifier, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import { installNodeEd25519 } from '../../../../shared/node/ed25519.js';

// Node processes verify with node:crypto instead of tweetnacl: it must agree on every verdict
// the readers depend on.
const key = generateSigningKey('k');
const other = generateSigningKey('other');
const payload = { kind: 'result', host: 'h1', seq: 3 };
const good = signPayload('result', payload, key);
const cases: [string, Parameters<typeof verifyPayloadSignature>][] = [
  ['valid', ['result', payload, good]],
  ['another payload', ['result', { ...payload, seq: 4 }, good]],
  ['another domain', ['status', payload, good]],
  ['another key', ['result', payload, { ...good, publicKey: other.publicKey }]],
  ['a junk signature', ['result', payload, { ...good, signature: `${'A'.repeat(86)}==` }]],
  // 32 bytes that are no point on the curve: OpenSSL cannot import them, tweetnacl refuses them.
  ['a key that is no point', ['result', payload, { ...good, publicKey: `${'/'.repeat(43)}=` }]],
];

test('node:crypto and tweetnacl give the same verdicts', () => {
  useEd25519Verifier(null);
  const nacl = cases.map(([, args]) => verifyPayloadSignature(...args));
  installNodeEd25519();
  const node = cases.map(([, args]) => verifyPayloadSignature(...args));
  useEd25519Verifier(null);
  assert.equal(node, nacl, cases.map(([name]) => name).join(', '));
  assert.equal(nacl, [true, false, false, false, false, false]);
});

test.run();
