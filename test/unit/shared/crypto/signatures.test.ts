import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { canonicalJson } from '../../../../shared/crypto/canonical.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import { signedIntentSchema } from '../../../../shared/schemas/intent.js';
import { signedResultSchema, signedStatusSchema } from '../../../../shared/schemas/report.js';

test('canonical JSON sorts keys at every depth and drops undefined', () => {
  assert.is(
    canonicalJson({ b: 1, a: { d: [1, { z: true, y: null }], c: 'x' }, u: undefined }),
    '{"a":{"c":"x","d":[1,{"y":null,"z":true}]},"b":1}',
  );
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

test('a status or result from a newer agent (fields this reader does not know) still verifies after parsing', () => {
  const host = generateSigningKey('h1');
  const status = {
    kind: 'status',
    host: 'h1',
    seq: 3,
    updatedAt: new Date(0).toISOString(),
    phase: 'applied',
    applied: null,
    target: null,
    lastResultSeq: null,
    agentVersion: '9.0.0',
    futureField: { x: 1 },
    trust: { mode: 'policy', policyVersion: 2, frozen: false, lastTimestampAt: null, futureNested: true },
  };
  const parsedStatus = signedStatusSchema.parse(
    JSON.parse(JSON.stringify({ status, signature: signPayload('status', status, host) })),
  );
  assert.ok(
    verifyPayloadSignature('status', parsedStatus.status, parsedStatus.signature),
    'the status signature covers what was signed, unknown fields included',
  );
  const result = {
    kind: 'result',
    host: 'h1',
    seq: 1,
    at: new Date(0).toISOString(),
    outcome: 'applied',
    generation: 1,
    closure: `/nix/store/${'a'.repeat(32)}-x`,
    action: 'switch',
    intentDigest: 'f'.repeat(64),
    reason: '',
    outputTail: '',
    durationMs: 1234,
  };
  const parsedResult = signedResultSchema.parse(
    JSON.parse(JSON.stringify({ result, signature: signPayload('result', result, host) })),
  );
  assert.ok(verifyPayloadSignature('result', parsedResult.result, parsedResult.signature));
});

test.run();
