import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import {
  preverifySignatures,
  type SignatureCheck,
  verifyPayloadSignatureOnce,
} from '../../../../shared/crypto/verified-once.js';

// The web editor checks signatures ahead with WebCrypto and keeps verdicts; what it then says
// must be what verifyPayloadSignature (tweetnacl, as agents check) says, for valid signatures,
// altered payloads, signatures copied onto other content or keys, and garbage.
const alice = generateSigningKey('alice');
const mallory = generateSigningKey('mallory');

function cases(): { check: SignatureCheck; label: string }[] {
  const payload = { kind: 'status', host: 'h1', seq: 7 };
  const good = signPayload('status', payload, alice);
  return [
    { label: 'valid', check: { kind: 'status', payload, signature: good } },
    { label: 'altered payload', check: { kind: 'status', payload: { ...payload, seq: 8 }, signature: good } },
    { label: 'other domain', check: { kind: 'result', payload, signature: good } },
    {
      label: 'claimed by another key',
      check: { kind: 'status', payload, signature: { ...good, publicKey: mallory.publicKey } },
    },
    {
      label: 'garbage signature',
      check: { kind: 'status', payload, signature: { publicKey: alice.publicKey, signature: `${'A'.repeat(86)}==` } },
    },
    { label: 'not a key', check: { kind: 'status', payload, signature: { ...good, publicKey: 'not base64!' } } },
  ];
}

test('verdicts filled natively ahead agree with tweetnacl on valid, altered, copied and garbage signatures', async () => {
  const all = cases();
  const recorded = await preverifySignatures(all.map((c) => c.check));
  assert.ok(recorded >= 5, `Node's WebCrypto has Ed25519: ${recorded} verdicts recorded natively`);
  for (const { check, label } of all)
    assert.is(
      verifyPayloadSignatureOnce(check.kind, check.payload, check.signature),
      verifyPayloadSignature(check.kind, check.payload, check.signature),
      label,
    );
  assert.ok(verifyPayloadSignatureOnce(all[0]!.check.kind, all[0]!.check.payload, all[0]!.check.signature));
});

test('a second pass finds everything known and checks nothing again', async () => {
  assert.is(await preverifySignatures(cases().map((c) => c.check)), 0);
});

test.run();
