import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import type { Intent, SignedIntent } from '../../../../shared/schemas/intent.js';
import { verifyIntentUnderPolicy } from '../../../../shared/trust/policy-intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { intentDigest, type SelectionContext, selectIntent } from '../../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// Issue 11 item 8: copies of one signed content are one intent; only validly signed, different
// contents are an equivocation.
const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.parse('2026-11-22T12:00:00.000Z');
const junk = `${'A'.repeat(86)}==`;
const mallory = generateSigningKey('mallory');

function intent(generation: number, closureChar: string): Intent {
  return {
    kind: 'intent',
    host: 'h1',
    generation,
    closure: `/nix/store/${closureChar.repeat(32)}-nixos-system`,
    action: 'switch',
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
}

const context = (extra: Partial<SelectionContext> = {}): SelectionContext => ({
  verify: (signed) => verifyIntentUnderPolicy(signed, { host: 'h1', chain: [v1], now }),
  floor: { epoch: 0, generation: 0 },
  appliedDigest: null,
  ...extra,
});

const valid = signIntent(intent(2, 'a'), org.alice);
const appended: SignedIntent = {
  ...valid,
  signatures: [...valid.signatures, { publicKey: mallory.publicKey, signature: junk }],
};
const prepended: SignedIntent = {
  ...valid,
  signatures: [{ publicKey: org.alice.publicKey, signature: junk }, ...valid.signatures],
};

test('a copy with a junk signature appended or prepended (even under the signer’s own key) is the same intent, not an equivocation', () => {
  for (const order of [
    [valid, appended, prepended],
    [prepended, appended, valid],
    [appended, valid],
  ]) {
    const selection = selectIntent(order, context());
    assert.is(selection.refused.length, 0, JSON.stringify(selection.refused.map((r) => r.reason)));
    assert.equal(selection.chosen?.signed.intent, valid.intent);
    assert.is(selection.duplicates.length, order.length - 1);
  }
});

test('the envelope already being worked on stays chosen when copies arrive, so work never restarts under a new digest', () => {
  const known = new Set([intentDigest(prepended)]);
  const selection = selectIntent([valid, appended, prepended], context({ knownDigests: known }));
  assert.is(selection.chosen?.digest, intentDigest(prepended));
});

test('a copy of the applied intent is no rollback refusal', () => {
  const selection = selectIntent(
    [valid, appended],
    context({ floor: { epoch: 0, generation: 2 }, appliedDigest: intentDigest(valid) }),
  );
  assert.equal(selection.refused, []);
  assert.is(selection.chosen, null);
});

test('a copy that does not verify on its own is one more copy of the intent (its signatures merged, none counting) and vetoes nothing; two validly signed contents still equivocate', () => {
  const forged: SignedIntent = { ...valid, signatures: [{ publicKey: org.alice.publicKey, signature: junk }] };
  const alone = selectIntent([forged, valid], context());
  assert.equal(alone.chosen?.digest, intentDigest(valid));
  assert.equal(alone.chosen?.signed, valid, 'the copy carrying the valid signature is the one worked on');
  assert.equal(alone.refused, []);
  assert.equal(
    alone.duplicates.map((d) => d.digest),
    [intentDigest(forged)],
  );
  // Content nobody validly signed is still refused, once.
  const onlyForged = selectIntent([forged], context());
  assert.equal(
    onlyForged.refused.map((r) => r.code),
    ['bad-signature'],
  );
  const other = signIntent(intent(2, 'b'), org.alice);
  const both = selectIntent([valid, appended, other], context());
  assert.is(both.chosen, null);
  assert.equal(
    both.refused.map((r) => r.code),
    ['equivocation', 'equivocation'],
  );
});

test.run();
