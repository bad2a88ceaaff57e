import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { canonicalJson } from '../../../../shared/crypto/canonical.js';
import { fromBase64, toBase64 } from '../../../../shared/crypto/encoding.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import {
  envelopeDigest,
  type SignedKind,
  signPayload,
  verifyPayloadSignature,
} from '../../../../shared/crypto/signatures.js';
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

const atobBytes = (text: string): number[] => [...atob(text)].map((c) => c.charCodeAt(0));

const KINDS: SignedKind[] = ['intent', 'result', 'status', 'policy', 'enrollment', 'timestamp', 'auth'];

test('a signed envelope survives the wire (JSON text) and verifies only as the kind, payload and key it was signed as', () => {
  const keys = [generateSigningKey('alice'), generateSigningKey('bob')];
  fc.assert(
    fc.property(
      fc.jsonValue({ maxDepth: 3 }),
      fc.jsonValue({ maxDepth: 3 }),
      fc.constantFrom(...KINDS),
      fc.constantFrom(...KINDS),
      fc.nat({ max: 63 }),
      (payload, otherPayload, kind, otherKind, flip) => {
        const signature = signPayload(kind, payload, keys[0]!);
        const wire = JSON.parse(JSON.stringify({ payload, signature })) as {
          payload: unknown;
          signature: typeof signature;
        };
        assert.ok(verifyPayloadSignature(kind, wire.payload, wire.signature));
        assert.is(envelopeDigest(kind, wire), envelopeDigest(kind, { signature, payload }), 'digest ignores key order');
        if (otherKind !== kind) assert.not.ok(verifyPayloadSignature(otherKind, payload, signature));
        if (canonicalJson(otherPayload) !== canonicalJson(payload))
          assert.not.ok(verifyPayloadSignature(kind, otherPayload, signature));
        assert.not.ok(verifyPayloadSignature(kind, payload, { ...signature, publicKey: keys[1]!.publicKey }));
        const bytes = fromBase64(signature.signature);
        bytes[flip] ^= 1;
        assert.not.ok(verifyPayloadSignature(kind, payload, { ...signature, signature: toBase64(bytes) }));
      },
    ),
    { numRuns: 60, seed: 81 },
  );
});

test('any signature text is refused or verified, never thrown', () => {
  const key = generateSigningKey('alice');
  const good = signPayload('intent', { a: 1 }, key);
  fc.assert(
    fc.property(fc.string({ maxLength: 100 }), fc.string({ maxLength: 100 }), (publicKey, signature) => {
      assert.not.ok(verifyPayloadSignature('intent', { a: 1 }, { publicKey, signature }));
      assert.not.ok(verifyPayloadSignature('intent', { a: 1 }, { ...good, signature }));
    }),
    { numRuns: 500, seed: 82 },
  );
  // The same key and signature in a second spelling (unused bits set) are not accepted.
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  const last = alphabet.indexOf(good.publicKey[42]!);
  const respelled = `${good.publicKey.slice(0, 42)}${alphabet[last | 1]}=`;
  assert.equal(atobBytes(respelled), atobBytes(good.publicKey), 'a lenient decoder reads the same key');
  assert.not.ok(verifyPayloadSignature('intent', { a: 1 }, { ...good, publicKey: respelled }));
});

test.run();
