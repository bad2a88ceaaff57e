import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey, type SigningKey } from '../../../../shared/crypto/keys.js';
import {
  signPayload,
  useEd25519Signer,
  useEd25519Verifier,
  verifyPayloadSignature,
} from '../../../../shared/crypto/signatures.js';
import { installNodeEd25519, nodeSignPayload } from '../../../../shared/node/ed25519.js';
import { cosignPlan, signPlan } from '../../../../shared/rollout/sign.js';
import { planSignatureValid } from '../../../../shared/rollout/verify.js';
import { fixtureHosts, makePlan } from '../../../harness/rollout-fixtures.js';

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

// Node processes sign with node:crypto too (installNodeEd25519); tweetnacl stays the portable
// reference. Ed25519 is deterministic: the same signature over the same bytes, whoever signs.
function bothWays<T>(sign: () => T): { nacl: T; node: T } {
  useEd25519Signer(null);
  useEd25519Verifier(null);
  const nacl = sign();
  installNodeEd25519();
  const node = sign();
  useEd25519Signer(null);
  useEd25519Verifier(null);
  return { nacl, node };
}

test('a 200-host rollout plan and its co-signature: node:crypto signs what tweetnacl signs', () => {
  const alice = generateSigningKey('alice');
  const hosts = fixtureHosts(200);
  const { plan } = makePlan(alice, {
    waves: [
      { name: 'first', hosts: hosts.slice(0, 20) },
      { name: 'final', hosts: hosts.slice(20) },
    ],
  });
  const signed = bothWays(() => signPlan(plan, alice));
  assert.equal(signed.node, signed.nacl);
  assert.ok(planSignatureValid(signed.node));
  const bob = generateSigningKey('bob');
  const cosigned = bothWays(() => cosignPlan(plan, bob));
  assert.equal(cosigned.node, cosigned.nacl);
});

test('every domain, many keys and payloads: the same signatures; nodeSignPayload agrees whatever is installed', () => {
  for (let i = 0; i < 20; i += 1) {
    const signer = generateSigningKey(`k${i}`);
    const content = { i, text: 'é'.repeat(i), nested: { list: Array.from({ length: i }, (_, j) => j) } };
    for (const kind of ['auth', 'intent', 'result', 'rollout-action'] as const) {
      const signed = bothWays(() => signPayload(kind, content, signer));
      assert.equal(signed.node, signed.nacl, `${kind} ${i}`);
      assert.equal(nodeSignPayload(kind, content, signer), signed.nacl);
    }
  }
});

test("a damaged secret key (its second half not its seed's public key) is signed as tweetnacl signs it", () => {
  const a = generateSigningKey('a');
  const b = generateSigningKey('b');
  const damaged: SigningKey = { name: 'damaged', publicKey: a.publicKey, secretKey: new Uint8Array(64) };
  damaged.secretKey.set(a.secretKey.subarray(0, 32), 0);
  damaged.secretKey.set(b.secretKey.subarray(32), 32);
  const signed = bothWays(() => signPayload('result', payload, damaged));
  assert.equal(signed.node, signed.nacl);
  assert.not.ok(verifyPayloadSignature('result', payload, signed.node), 'and it verifies under no one');
});

test.run();
