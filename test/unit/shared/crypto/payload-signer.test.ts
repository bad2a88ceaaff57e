import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { createSigner } from '../../../../shared/crypto/payload-signer.js';
import { signPayload, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';

// The web editor signs with WebCrypto's Ed25519 where it can and tweetnacl otherwise; both must
// give exactly the CLI's signature (signPayload) over the same canonical bytes, so an intent
// signed in the page is one an agent accepts like one from `outpost deploy`. Node's WebCrypto has
// Ed25519 too, so the two engines are checked against each other here on random payloads (and in
// real Chromium by test/integration/web-editor.test.ts).
const key = generateSigningKey('alice');
const json = fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.parse(JSON.stringify(v)) as unknown);

test('WebCrypto Ed25519 is available here and chosen', async () => {
  const signer = await createSigner(key);
  assert.is(signer.engine, 'webcrypto');
  assert.is(signer.publicKey, key.publicKey);
});

test('WebCrypto, tweetnacl and the CLI sign every payload identically, and the shared verifier accepts it', async () => {
  const webcrypto = await createSigner(key, 'webcrypto');
  const tweetnacl = await createSigner(key, 'tweetnacl');
  assert.is(tweetnacl.engine, 'tweetnacl');
  await fc.assert(
    fc.asyncProperty(json, fc.constantFrom('intent', 'status', 'auth' as const), async (payload, kind) => {
      const [a, b] = await Promise.all([webcrypto.sign(kind, payload), tweetnacl.sign(kind, payload)]);
      const cli = signPayload(kind, payload, key);
      assert.is(a.signature, cli.signature);
      assert.is(b.signature, cli.signature);
      assert.ok(verifyPayloadSignature(kind, payload, a));
      // Domain separation holds for both: an intent signature is not a status signature.
      assert.not.ok(verifyPayloadSignature(kind === 'intent' ? 'status' : 'intent', payload, a));
    }),
    { numRuns: 100 },
  );
});

test('a signer whose WebCrypto is missing falls back to tweetnacl', async () => {
  const subtle = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  Object.defineProperty(globalThis, 'crypto', { value: {}, configurable: true });
  try {
    const signer = await createSigner(key);
    assert.is(signer.engine, 'tweetnacl');
    assert.is((await signer.sign('intent', { a: 1 })).signature, signPayload('intent', { a: 1 }, key).signature);
  } finally {
    if (subtle) Object.defineProperty(globalThis, 'crypto', subtle);
  }
});

test.run();
