import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { intentSchema } from '../../../../shared/schemas/intent.js';
import { verifyIntentUnderPolicy } from '../../../../shared/trust/policy-intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { draftIntent, highestGeneration, mayIssueIntent } from '../../../../shared/views/intent-draft.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { closure, desiredWith, intent, signed, T0 } from './view-fixtures.js';

const org = makeTestOrg();
const policy = basePolicy(org);

test("highestGeneration is the host's highest generation in the document, 0 when none", () => {
  const doc = desiredWith(
    signed(intent('h1', 3, closure('a', 'x')), org.alice),
    signed(intent('h1', 7, closure('b', 'x')), org.alice),
    signed(intent('h2', 40, closure('c', 'x')), org.alice),
  );
  assert.is(highestGeneration(doc, 'h1'), 7);
  assert.is(highestGeneration(doc, 'h3'), 0);
  assert.is(highestGeneration(new Y.Doc(), 'h1'), 0);
});

test('mayIssueIntent says who may sign, and why not, as agents would judge the intent', () => {
  assert.equal(mayIssueIntent([policy], org.alice.publicKey, 'h1'), { ok: true, threshold: 1 });
  // A group that needs two admins: alice's signature is the first; the intent waits for a
  // co-signer (outpost approve, or the web editor's host view), so the threshold is said.
  assert.equal(mayIssueIntent([policy], org.alice.publicKey, 'prod-1'), { ok: true, threshold: 2 });
  const cases: [string, string, string, RegExp][] = [
    ['no policy', org.alice.publicKey, 'h1', /no fleet policy signed by the pinned org root/],
    [
      'stranger',
      generateSigningKey('x').publicKey,
      'h1',
      /not an admin key under policy 1; .*outpost policy admin add/,
    ],
    ['carol reads only', org.carol.publicKey, 'h1', /admin carol lacks 'deploy' for host h1 under policy 1/],
    ['bob has no deploy on h1', org.bob.publicKey, 'h1', /admin bob lacks 'deploy' for host h1/],
    ['carol reads only on prod-1 too', org.carol.publicKey, 'prod-1', /admin carol lacks 'deploy' for host prod-1/],
  ];
  for (const [what, key, host, reason] of cases) {
    const verdict = mayIssueIntent(what === 'no policy' ? [] : [policy], key, host);
    assert.is(verdict.ok, false, what);
    assert.match(verdict.ok ? '' : verdict.reason, reason);
  }
  const revoked = basePolicy(org, { revokedKeys: [org.alice.publicKey] });
  const verdict = mayIssueIntent([revoked], org.alice.publicKey, 'h1');
  assert.match(verdict.ok ? '' : verdict.reason, /revoked under policy 1/);
  // Rollback is its own capability: carol has none, alice has it.
  assert.is(mayIssueIntent([policy], org.alice.publicKey, 'h1', 'rollback').ok, true);
});

test('draftIntent gives a valid intent that agents accept when mayIssueIntent said ok', () => {
  const input = {
    host: 'h1',
    closure: closure('a', 'nixos-system-h1'),
    action: 'boot' as const,
    generation: 8,
    validForMs: 3_600_000,
    issuer: 'alice',
    now: T0,
  };
  const draft = draftIntent({ ...input, policyVersion: 1 });
  assert.ok(intentSchema.safeParse(draft).success);
  assert.is(draft.issuedAt, new Date(T0).toISOString());
  assert.is(draft.expiresAt, new Date(T0 + 3_600_000).toISOString());
  const verdict = verifyIntentUnderPolicy(signIntent(draft, org.alice), {
    host: 'h1',
    chain: [policy],
    now: T0 + 1000,
  });
  assert.ok(verdict.ok, verdict.ok ? '' : verdict.reason);
  const noPolicy = draftIntent(input);
  assert.not.ok('policyVersion' in noPolicy);
});

test.run();
