import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Intent, SignedIntent } from '../../../../shared/schemas/intent.js';
import { capabilitiesFor } from '../../../../shared/trust/capabilities.js';
import {
  addSignature,
  coSignProgress,
  describeCoSignProgress,
  groupByContent,
  mergeSignatures,
  tallyAdminSignatures,
} from '../../../../shared/trust/co-signatures.js';
import { intentCoSigning, verifyIntentUnderPolicy } from '../../../../shared/trust/policy-intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { intentDigest, type SelectionContext, selectIntent } from '../../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// Co-signing (issue 12): prod-1 is in group production, threshold 2; alice (ops everywhere) and
// bob (prod-ops) may deploy there, carol only reads.
const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.parse('2026-11-22T12:00:00.000Z');
const junk = `${'A'.repeat(86)}==`;
const mallory = generateSigningKey('mallory');

const intent: Intent = {
  kind: 'intent',
  host: 'prod-1',
  generation: 3,
  closure: `/nix/store/${'a'.repeat(32)}-nixos-system`,
  action: 'switch',
  issuedAt: new Date(now - 1000).toISOString(),
  expiresAt: new Date(now + 3_600_000).toISOString(),
  issuer: 'alice',
  policyVersion: 1,
};
const byAlice = signIntent(intent, org.alice);
const bobSignature = signPayload('intent', intent, org.bob);
const byBob: SignedIntent = { intent, signatures: [bobSignature] };
const both: SignedIntent = { intent, signatures: [...byAlice.signatures, bobSignature] };

// A junk signature under a fresh key (never an admin's).
const junk15 = (i: number) => ({ publicKey: generateSigningKey(`junk-${i}`).publicKey, signature: junk });

const context = (): SelectionContext => ({
  verify: (signed) => verifyIntentUnderPolicy(signed, { host: 'prod-1', chain: [v1], now }),
  floor: { epoch: 0, generation: 0 },
  appliedDigest: null,
});
const rules = {
  policies: [v1],
  mayAct: (policy: typeof v1, admin: Parameters<typeof capabilitiesFor>[1]) =>
    capabilitiesFor(policy, admin, 'prod-1').has('deploy'),
  lacking: "'deploy' for host prod-1",
};

test('two admins signing in separate envelopes of the same content meet threshold 2 together', () => {
  for (const order of [
    [byAlice, byBob],
    [byBob, byAlice],
  ]) {
    const selection = selectIntent(order, context());
    assert.equal(selection.refused, []);
    const chosen = selection.chosen!;
    assert.ok(chosen, 'chosen');
    // Neither stored copy carries both: the envelope worked on holds what counts, named by a stored digest.
    assert.equal(new Set(chosen.signed.signatures), new Set([...byAlice.signatures, bobSignature]));
    assert.ok([intentDigest(byAlice), intentDigest(byBob)].includes(chosen.digest));
    assert.equal(verifyIntentUnderPolicy(chosen.signed, { host: 'prod-1', chain: [v1], now }).ok, true);
  }
});

test('an envelope that carries every counted signature is the one chosen, whatever else was written', () => {
  const selection = selectIntent([byAlice, byBob, both], context());
  assert.is(selection.chosen?.digest, intentDigest(both));
  assert.is(selection.chosen?.signed, both);
  assert.is(selection.duplicates.length, 2);
});

test('one admin alone, however copied, stays below the threshold: duplicates, junk and non-admin keys add nothing', () => {
  const attempts: SignedIntent[][] = [
    [byAlice],
    [byAlice, { intent, signatures: [byAlice.signatures[0]!, byAlice.signatures[0]!] }],
    [byAlice, { intent, signatures: [{ publicKey: org.bob.publicKey, signature: junk }] }],
    [byAlice, { intent, signatures: [signPayload('intent', intent, mallory)] }],
    [byAlice, { intent, signatures: [signPayload('intent', intent, org.carol)] }],
    // bob's genuine signature over other content does not count for this one
    [byAlice, { intent, signatures: [signPayload('intent', { ...intent, generation: 4 }, org.bob)] }],
  ];
  for (const intents of attempts) {
    const selection = selectIntent(intents, context());
    assert.is(selection.chosen, null);
    assert.equal(
      selection.refused.map((r) => r.code),
      ['below-threshold'],
    );
    assert.match(selection.refused[0]!.reason, /^1 of 2 required admin signatures \(alice\)/);
  }
});

test('junk written before the genuine signatures crowds nothing out: 300 junk signatures under fresh keys and alice’s, then bob’s real one', () => {
  const crowd: SignedIntent[] = Array.from({ length: 20 }, (_, i) => ({
    intent,
    signatures: Array.from({ length: 15 }, (_, j) => junk15(i * 15 + j)).concat([
      { publicKey: org.alice.publicKey, signature: `${String(i).padStart(86, 'C')}==` },
    ]),
  }));
  const selection = selectIntent([...crowd, byAlice, byBob], context());
  assert.equal(selection.refused, []);
  assert.ok(selection.chosen, 'two admins counted');
});

test('tally: each admin counts once, a junk signature under an admin key hides no valid one after it', () => {
  const tally = tallyAdminSignatures(
    'intent',
    intent,
    [{ publicKey: org.bob.publicKey, signature: junk }, bobSignature, ...byAlice.signatures, bobSignature],
    rules,
  );
  assert.equal(tally.admins, ['bob', 'alice']);
  assert.equal(tally.counted, [bobSignature, byAlice.signatures[0]!]);
  assert.match(tally.problems.join('; '), /bob does not verify/);
});

test('merge and group: exact duplicates dropped, copies grouped by canonical content, bounded', () => {
  assert.equal(mergeSignatures([byAlice.signatures, both.signatures]), both.signatures);
  const reordered = {
    intent: Object.fromEntries(Object.entries(intent).reverse()) as Intent,
    signatures: [bobSignature],
  };
  const groups = groupByContent([byAlice, reordered], (e) => ({ content: e.intent, signatures: e.signatures }));
  assert.is(groups.length, 1, 'key order does not make another content');
  assert.equal(groups[0]!.signatures, both.signatures);
  const many = Array.from({ length: 40 }, (_, i) => [
    { publicKey: org.bob.publicKey, signature: `${String(i).padStart(86, 'B')}==` },
  ]);
  assert.is(mergeSignatures(many, 16).length, 16);
});

test('progress: who signed, how many more, who may still sign; addSignature carries only what counted', () => {
  const signing = intentCoSigning(
    intent,
    [...byAlice.signatures, { publicKey: mallory.publicKey, signature: junk }],
    [v1],
  );
  if ('error' in signing) throw new Error(signing.error);
  assert.equal(signing.progress, { threshold: 2, signed: ['alice'], missing: 1, couldSign: ['bob'] });
  assert.is(describeCoSignProgress(signing.progress), '1 of 2 admin signatures (alice); needs 1 more of: bob');
  const signatures = addSignature('intent', intent, signing.tally.counted, org.bob);
  assert.equal(signatures, [bobSignature, byAlice.signatures[0]!], 'the junk is not copied forward');
  const after = tallyAdminSignatures('intent', intent, signatures, rules);
  assert.equal(coSignProgress(after, 2, v1, rules.mayAct).missing, 0);
  assert.equal(addSignature('intent', intent, signatures, org.bob), signatures, 'signing twice changes nothing');
});

test.run();
