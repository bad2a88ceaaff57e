import fc from 'fast-check';
import nacl from 'tweetnacl';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type DetachedVerify, useEd25519Verifier, verifyDetached } from '../../../../shared/crypto/signatures.js';
import { nodeEd25519Verify } from '../../../../shared/node/ed25519.js';

// The core verifies with tweetnacl (browsers, agents) or with Node's Ed25519 (an auditor's bulk
// replay, worker threads). Both must say the same on every input, or an audit could pass what an
// agent refuses (or the reverse). Compared here through the core's one entry point
// (verifyDetached: lengths and a canonical S checked before any backend runs), on valid
// signatures, every kind of corruption, random bytes and the known Ed25519 edge cases.
// tweetnacl verifies ~1,000 signatures a second on an idle core; these runs stay within seconds.
const RUNS = 100;
const backends: Record<string, DetachedVerify> = { tweetnacl: nacl.sign.detached.verify, node: nodeEd25519Verify };
const L = (1n << 252n) + 27742317777372353535851937790883648493n;
const P = (1n << 255n) - 19n;

function verdicts(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const [name, backend] of Object.entries(backends)) {
    useEd25519Verifier(backend);
    out[name] = verifyDetached(message, signature, publicKey);
  }
  useEd25519Verifier(null);
  return out;
}

function agree(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  const v = verdicts(message, signature, publicKey);
  assert.is(v.node, v.tweetnacl, `backends disagree: ${JSON.stringify(v)}`);
  return v.node!;
}

const littleEndian = (x: bigint, length = 32): Uint8Array => {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i += 1) {
    bytes[i] = Number(x & 255n);
    x >>= 8n;
  }
  return bytes;
};
const fromLittleEndian = (bytes: Uint8Array): bigint => bytes.reduceRight((x, b) => (x << 8n) | BigInt(b), 0n);

const seed = fc.uint8Array({ minLength: 32, maxLength: 32 });
const message = fc.uint8Array({ maxLength: 600 });
const signed = fc.tuple(seed, message).map(([s, m]) => {
  const pair = nacl.sign.keyPair.fromSeed(s);
  return { message: m, signature: nacl.sign.detached(m, pair.secretKey), publicKey: pair.publicKey };
});

test('valid signatures verify under both', () => {
  fc.assert(
    fc.property(signed, ({ message, signature, publicKey }) => agree(message, signature, publicKey)),
    { numRuns: RUNS },
  );
});

test('one flipped bit in the message, the signature or the key: both refuse', () => {
  fc.assert(
    fc.property(signed, fc.constantFrom('message', 'signature', 'publicKey'), fc.nat(), (s, part, bit) => {
      const bytes = s[part as 'message' | 'signature' | 'publicKey'].slice();
      if (bytes.length === 0) return true;
      const at = bit % (bytes.length * 8);
      bytes[at >> 3]! ^= 1 << (at & 7);
      const changed = { ...s, [part]: bytes };
      return !agree(changed.message, changed.signature, changed.publicKey);
    }),
    { numRuns: RUNS },
  );
});

test('random bytes of any length: both refuse, none throws', () => {
  fc.assert(
    fc.property(
      message,
      fc.uint8Array({ maxLength: 80 }),
      fc.uint8Array({ maxLength: 40 }),
      (m, signature, publicKey) => !agree(m, signature, publicKey),
    ),
    { numRuns: RUNS },
  );
});

test('S + k·L (the same signature, malleated): both refuse, although tweetnacl alone accepts it', () => {
  fc.assert(
    fc.property(signed, fc.integer({ min: 1, max: 15 }), ({ message, signature, publicKey }, k) => {
      const malleated = signature.slice();
      malleated.set(littleEndian(fromLittleEndian(signature.subarray(32)) + BigInt(k) * L), 32);
      // The reason the core checks S: on its own tweetnacl takes it.
      assert.ok(nacl.sign.detached.verify(message, malleated, publicKey));
      return !agree(message, malleated, publicKey);
    }),
    { numRuns: 50 },
  );
  // S = L exactly, and S = L - 1 (canonical, wrong): refused by both.
  const pair = nacl.sign.keyPair();
  const m = new Uint8Array([1]);
  const signature = nacl.sign.detached(m, pair.secretKey);
  for (const s of [L, L - 1n]) {
    const edge = signature.slice();
    edge.set(littleEndian(s), 32);
    assert.not.ok(agree(m, edge, pair.publicKey));
  }
});

test('small-order and non-canonical points as key or R: both give the same answer', () => {
  // Encodings of the eight small-order points (y = 1, -1, 0, and the two order-8 y values, either
  // sign of x), and non-canonical y values (y >= p) that reduce to small-order ones.
  const ys = [
    0n,
    1n,
    P - 1n,
    0x05fc536d880238b13933c6d305acdfd5f098eff289f4c345b027b2c28f95e826n,
    0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
    P,
    P + 1n,
    (1n << 255n) - 1n,
  ];
  const points = ys.flatMap((y) => {
    const plain = littleEndian(y);
    const signed = plain.slice();
    signed[31]! |= 0x80;
    return [plain, signed];
  });
  const pair = nacl.sign.keyPair();
  let accepted = 0;
  const m = new Uint8Array([7, 7, 7]);
  for (const key of [...points, pair.publicKey])
    for (const r of points)
      for (const s of [0n, 8n]) {
        const signature = new Uint8Array(64);
        signature.set(r, 0);
        signature.set(littleEndian(s), 32);
        if (agree(m, signature, key)) accepted += 1;
      }
  // Both accept some of these (cofactorless verification with a small-order key): agreed, and
  // recorded so a backend change that alters it shows up here.
  assert.ok(accepted > 0, 'small-order keys with a matching R are accepted by both backends');
});

test.run();
