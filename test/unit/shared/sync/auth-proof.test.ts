import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import {
  AUTH_HEADERS,
  authHeaders,
  authParamsSchema,
  signAuthProof,
  verifyAuthProof,
} from '../../../../shared/sync/auth-proof.js';

// The connection proof travels as URL query parameters (websocket upgrade) or headers (HTTP
// APIs): what the client signs arrives parsed and verifiable for exactly the document or path it
// was signed for; anything else a client sends is refused by the schema or the signature, never
// thrown.

const keys = [generateSigningKey('alice'), generateSigningKey('relay-1')];
const challenge = fc.stringMatching(/^[0-9a-f]{64}$/);
const document = fc.oneof(
  fc.stringMatching(/^hosts\/[a-z0-9][a-z0-9-]{0,20}\/(desired|status)$/),
  fc.constantFrom('_relay', '/api/documents', '/api/presence'),
  fc.string({ maxLength: 40 }),
);

test('a proof survives the query string and the headers and verifies for its document only', () => {
  fc.assert(
    fc.property(fc.constantFrom(...keys), challenge, document, document, (key, c, doc, other) => {
      const proof = signAuthProof(key, c, doc);
      const query = new URLSearchParams(proof).toString();
      const fromQuery = authParamsSchema.parse(Object.fromEntries(new URLSearchParams(query)));
      assert.equal(fromQuery, proof);
      assert.ok(verifyAuthProof(fromQuery, doc));
      const headers = new Headers(authHeaders(proof));
      const fromHeaders = authParamsSchema.parse({
        principal: headers.get(AUTH_HEADERS.principal),
        challenge: headers.get(AUTH_HEADERS.challenge),
        signature: headers.get(AUTH_HEADERS.signature),
      });
      assert.equal(fromHeaders, proof);
      if (other !== doc) assert.not.ok(verifyAuthProof(fromQuery, other), 'signed for another document');
    }),
    { numRuns: 60, seed: 61 },
  );
});

test('a tampered or malformed proof is refused, never thrown', () => {
  const proof = signAuthProof(keys[0]!, 'ab'.repeat(32), 'hosts/h1/status');
  assert.not.ok(verifyAuthProof({ ...proof, challenge: 'cd'.repeat(32) }, 'hosts/h1/status'));
  assert.not.ok(verifyAuthProof({ ...proof, principal: keys[1]!.publicKey }, 'hosts/h1/status'));
  fc.assert(
    fc.property(fc.dictionary(fc.constantFrom('principal', 'challenge', 'signature', 'x'), fc.string()), (query) => {
      const parsed = authParamsSchema.safeParse(query);
      if (parsed.success) assert.not.ok(verifyAuthProof(parsed.data, 'hosts/h1/status'));
    }),
    { numRuns: 2000, seed: 62 },
  );
  fc.assert(
    fc.property(
      fc.stringMatching(/^[A-Za-z0-9+/]{43}=$/),
      fc.stringMatching(/^[A-Za-z0-9+/]{86}==$/),
      (principal, signature) => {
        assert.not.ok(verifyAuthProof({ principal, challenge: proof.challenge, signature }, 'hosts/h1/status'));
      },
    ),
    { numRuns: 40, seed: 63 },
  );
});

test.run();
