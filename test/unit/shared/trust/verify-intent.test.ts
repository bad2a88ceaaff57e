import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { type Intent, signedIntentSchema } from '../../../../shared/schemas/intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { intentDigest, selectIntent, verifyIntent } from '../../../../shared/trust/verify-intent.js';

const admin = generateSigningKey('alice');
const stranger = generateSigningKey('mallory');
const now = Date.parse('2026-11-22T12:00:00.000Z');
const closure = (n: number): string =>
  `/nix/store/${String(n)
    .padStart(32, 'a')
    .replace(/[eotu]/g, 'a')}-nixos-system`;

function intent(overrides: Partial<Intent> = {}): Intent {
  return {
    kind: 'intent',
    host: 'h1',
    generation: 1,
    closure: closure(1),
    action: 'switch',
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'alice',
    ...overrides,
  };
}

const checks = { host: 'h1', trustedAdminKeys: new Set([admin.publicKey]), now };
const context = {
  verify: (signed: ReturnType<typeof signIntent>) => verifyIntent(signed, checks),
  floor: { epoch: 0, generation: 0 },
  appliedDigest: null,
};

test('accepts a well-formed intent from a trusted admin', () => {
  const signed = signIntent(intent(), admin);
  assert.equal(verifyIntent(signed, checks), { ok: true, counted: signed.signatures });
});

test('an intent written by a newer outpost (a field this agent does not know) is refused by name, not as a bad signature', () => {
  const newer = signIntent({ ...intent(), canaryPercent: 10 } as Intent, admin);
  const received = signedIntentSchema.parse(JSON.parse(JSON.stringify(newer)));
  const verdict = verifyIntent(received, checks);
  assert.equal(verdict.ok ? 'ok' : [verdict.code, verdict.reason], [
    'unknown-field',
    "intent has fields this agent does not know (canaryPercent): it was written by a newer outpost; upgrade this host's agent",
  ]);
});

test('refuses unknown signer, altered intent, other host, expired, future-issued', () => {
  const cases: [string, ReturnType<typeof signIntent>][] = [
    ['unknown-signer', signIntent(intent(), stranger)],
    ['bad-signature', { ...signIntent(intent(), admin), intent: intent({ generation: 9 }) }],
    ['wrong-host', signIntent(intent({ host: 'h2' }), admin)],
    ['expired', signIntent(intent({ expiresAt: new Date(now - 1).toISOString() }), admin)],
    [
      'not-yet-valid',
      signIntent(
        intent({
          issuedAt: new Date(now + 3_600_000).toISOString(),
          expiresAt: new Date(now + 7_200_000).toISOString(),
        }),
        admin,
      ),
    ],
  ];
  for (const [code, signed] of cases) {
    const verdict = verifyIntent(signed, checks);
    assert.is(verdict.ok, false, code);
    if (!verdict.ok) assert.is(verdict.code, code);
  }
});

// Verdicts are kept per signature and content: a signature checked once for one intent must not
// pass for altered content it is copied onto, before or after the good one was checked.
test('a signature already verified for an intent does not pass for altered content', () => {
  const good = signIntent(intent({ generation: 41 }), admin);
  const altered = { ...good, intent: intent({ generation: 42 }) };
  assert.equal(verifyIntent(good, checks), { ok: true, counted: good.signatures });
  for (let i = 0; i < 2; i++) {
    const verdict = verifyIntent(altered, checks);
    assert.is(verdict.ok, false);
    if (!verdict.ok) assert.is(verdict.code, 'bad-signature');
    assert.equal(verifyIntent(good, checks), { ok: true, counted: good.signatures });
  }
});

test('picks the newest valid generation and marks older ones superseded', () => {
  const intents = [1, 3, 2].map((g) => signIntent(intent({ generation: g, closure: closure(g) }), admin));
  const selection = selectIntent(intents, context);
  assert.is(selection.chosen?.signed.intent.generation, 3);
  assert.equal(
    selection.superseded.map((c) => c.signed.intent.generation),
    [2, 1],
  );
  assert.is(selection.refused.length, 0);
});

test('refuses generations at or below the floor as rollback, except the applied intent itself', () => {
  const applied = signIntent(intent({ generation: 2, closure: closure(2) }), admin);
  const older = signIntent(intent({ generation: 1 }), admin);
  const selection = selectIntent([older, applied], {
    ...context,
    floor: { epoch: 0, generation: 2 },
    appliedDigest: intentDigest(applied),
  });
  assert.is(selection.chosen, null);
  assert.equal(
    selection.refused.map((r) => [r.code, r.candidate.signed.intent.generation]),
    [['rollback', 1]],
  );
});

test('two different intents with one generation are both refused (equivocation), in any order', () => {
  const a = signIntent(intent({ generation: 5, closure: closure(5) }), admin);
  const b = signIntent(intent({ generation: 5, closure: closure(6) }), admin);
  for (const order of [
    [a, b],
    [b, a],
  ]) {
    const selection = selectIntent(order, context);
    assert.is(selection.chosen, null);
    assert.equal(selection.refused.map((r) => r.code).sort(), ['equivocation', 'equivocation']);
  }
});

test('an intent under a higher policy epoch ranks above any generation of a lower epoch (recovery from a runaway generation)', () => {
  const huge = signIntent(intent({ generation: 9_000_000_000, closure: closure(9) }), admin);
  const recovery = signIntent(intent({ generation: 3, closure: closure(3) }), admin);
  const epochOf = (signed: ReturnType<typeof signIntent>): number => (signed === recovery ? 1 : 0);
  const stuck = selectIntent([recovery], { ...context, floor: { epoch: 0, generation: 9_000_000_000 } });
  assert.is(stuck.chosen, null, 'without an epoch bump the runaway generation blocks everything');
  const recovered = selectIntent([huge, recovery], {
    ...context,
    epochOf,
    floor: { epoch: 0, generation: 9_000_000_000 },
    appliedDigest: intentDigest(huge),
  });
  assert.is(recovered.chosen?.signed, recovery);
  const replayed = selectIntent([huge], { ...context, epochOf, floor: { epoch: 1, generation: 3 } });
  assert.equal(
    replayed.refused.map((r) => r.code),
    ['rollback'],
    'the old-epoch intent can never come back',
  );
});

test.run();
