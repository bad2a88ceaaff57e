import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { canonicalJson } from '../../shared/crypto/canonical.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { signedIntentSchema } from '../../shared/schemas/intent.js';

test('canonical JSON sorts keys at every depth and drops undefined', () => {
  assert.is(canonicalJson({ b: 1, a: { d: [1, { z: true, y: null }], c: 'x' }, u: undefined }), '{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}');
});

test('canonical JSON refuses values that cannot be signed', () => {
  assert.throws(() => canonicalJson({ a: Number.NaN }), /non-finite/);
  assert.throws(() => canonicalJson({ a: () => 1 }), /cannot be signed/);
});

test('a signature verifies, and fails for another payload, kind or key', () => {
  const key = generateSigningKey('alice');
  const other = generateSigningKey('mallory');
  const payload = { kind: 'intent', host: 'h1', generation: 1 };
  const signature = signPayload('intent', payload, key);
  assert.ok(verifyPayloadSignature('intent', payload, signature));
  assert.not.ok(verifyPayloadSignature('intent', { ...payload, generation: 2 }, signature));
  assert.not.ok(verifyPayloadSignature('result', payload, signature), 'domain separation');
  assert.not.ok(verifyPayloadSignature('intent', payload, { ...signature, publicKey: other.publicKey }));
});

test('malformed signatures and keys are rejected cleanly, never thrown', () => {
  const key = generateSigningKey('alice');
  const payload = { a: 1 };
  const good = signPayload('intent', payload, key);
  for (const bad of [
    { ...good, signature: good.signature.slice(0, 40) },
    { ...good, signature: '!'.repeat(88) },
    { ...good, publicKey: 'AAAA' },
    { ...good, publicKey: `${good.publicKey.slice(0, 43)}` },
  ]) {
    assert.not.ok(verifyPayloadSignature('intent', payload, bad));
  }
  const parsed = signedIntentSchema.safeParse({ intent: {}, signatures: [{ publicKey: 'x', signature: 'y' }] });
  assert.not.ok(parsed.success);
});

test.run();
