import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { appendRolloutEntries } from '../../../../shared/rollout/document.js';
import { deriveRolloutIntent, placeHosts, planDigest } from '../../../../shared/rollout/plan.js';
import type { SignedIntent } from '../../../../shared/schemas/intent.js';
import { intentDigest } from '../../../../shared/trust/verify-intent.js';
import { hostTimeline } from '../../../../shared/views/host-timeline.js';
import { hostViewFromDocuments } from '../../../../shared/views/host-view.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { makePlan } from '../../../harness/rollout-fixtures.js';
import {
  authorityFor,
  closure,
  desiredWith,
  intent,
  iso,
  result,
  signed,
  status,
  statusDoc,
  T0,
} from './view-fixtures.js';

const org = makeTestOrg();
const h1 = generateSigningKey('h1');
const forger = generateSigningKey('forger');
const authority = authorityFor(org, basePolicy(org), { h1 });
const first = signed(intent('h1', 1, closure('a', 'one'), { issuedAt: iso(T0) }), org.alice);
const second = signed(
  intent('h1', 2, closure('b', 'two'), { issuedAt: iso(T0 + 120_000), expiresAt: iso(T0 + 180_000) }),
  org.alice,
);
const byCarol = signed(
  intent('h1', 3, closure('c', 'three'), { issuedAt: iso(T0 + 240_000), issuer: 'carol' }),
  org.carol,
);
const altered: SignedIntent = { ...first, intent: { ...first.intent, generation: 4, issuedAt: iso(T0 + 300_000) } };
const desired = desiredWith(
  first,
  second,
  first,
  byCarol,
  altered,
  signed(intent('h2', 9, closure('d', 'x')), org.alice),
);
const statusDocument = statusDoc(
  { status: status('h1', 'idle', { generation: 1, closure: closure('a', 'one') }), key: h1 },
  [
    { result: result('h1', 1, 1, closure('a', 'one'), { intentDigest: intentDigest(first) }), key: h1 },
    { result: result('h1', 2, 99, closure('f', 'forged')), key: forger },
  ],
);

function timeline(withAuthority: boolean, now = T0 + 600_000) {
  const auth = withAuthority ? authority : null;
  const view = hostViewFromDocuments('h1', {
    desired,
    status: statusDocument,
    awarenessStates: [],
    authority: auth,
    now,
  });
  return hostTimeline('h1', desired, view, auth, now);
}

test("the host's intents and results, oldest first, each once; other hosts' intents left out", () => {
  const entries = timeline(true);
  assert.equal(
    entries.map((e) => (e.kind === 'intent' ? `intent ${e.generation}` : `result ${e.seq}`)),
    ['intent 1', 'result 1', 'intent 2', 'result 2', 'intent 3', 'intent 4'],
  );
  const one = entries[0]!;
  assert.is(one.kind === 'intent' && one.digest, intentDigest(first));
  assert.equal(one.kind === 'intent' && one.signers, [org.alice.publicKey]);
});

test('with an authority: trusted signers and enrolled-key results are trusted; expiry is noted, not held against them', () => {
  const byGeneration = new Map(
    timeline(true).flatMap((e) => (e.kind === 'intent' ? [[e.generation, e] as const] : [])),
  );
  assert.is(byGeneration.get(1)?.mark, 'trusted');
  assert.is(byGeneration.get(1)?.note, null);
  assert.is(byGeneration.get(2)?.mark, 'trusted');
  assert.match(String(byGeneration.get(2)?.note), /^expired at /);
  assert.is(byGeneration.get(3)?.mark, 'untrusted');
  assert.match(String(byGeneration.get(3)?.note), /carol lacks 'deploy'/);
  assert.is(byGeneration.get(4)?.mark, 'untrusted');
  const results = timeline(true).filter((e) => e.kind === 'result');
  assert.equal(
    results.map((r) => r.mark),
    ['trusted', 'untrusted'],
  );
  assert.match(String(results[1]!.note), /not h1's enrolled key/);
});

test('without an authority: valid signatures are unverified, never trusted; bad ones untrusted', () => {
  const entries = timeline(false);
  const marks = entries.map((e) => `${e.kind} ${e.mark}`);
  assert.equal(marks, [
    'intent unverified',
    'result unverified',
    'intent unverified',
    'result untrusted',
    'intent unverified',
    'intent untrusted',
  ]);
  assert.match(String(entries[0]!.note), /no org root is pinned/);
  assert.match(String(entries.at(-1)!.note), /altered or forged/);
});

test('rollout intents are marked as the signed plan gives them; without the plan, unverified (never trusted)', () => {
  const plan = makePlan(org.alice, {
    id: 'r1',
    createdAt: T0 + 400_000,
    generation: 5,
    waves: [{ name: 'first', hosts: [{ host: 'h1', key: h1, closure: closure('h', 'rolled') }] }],
  });
  const genuine = deriveRolloutIntent(plan, planDigest(plan.plan), placeHosts(plan.plan).get('h1')!);
  const forged: SignedIntent = {
    ...genuine,
    intent: { ...genuine.intent, generation: 6, closure: closure('j', 'evil') },
  };
  const doc = desiredWith(genuine, forged);
  const rollouts = new Y.Doc();
  appendRolloutEntries(rollouts, { plans: [plan] });
  const view = hostViewFromDocuments('h1', {
    desired: doc,
    status: new Y.Doc(),
    awarenessStates: [],
    authority,
    now: T0,
  });
  const marks = (lookup?: (name: string) => Y.Doc | null) =>
    hostTimeline('h1', doc, view, authority, T0, lookup).map((e) => [
      e.kind === 'intent' && e.generation,
      e.mark,
      e.note,
    ]);
  assert.equal(
    marks(() => rollouts),
    [
      [5, 'trusted', null],
      [
        6,
        'untrusted',
        `the signed plan gives h1 generation 5 of ${closure('h', 'rolled')}, not generation 6 of ${closure('j', 'evil')}`,
      ],
    ],
  );
  assert.equal(
    marks().map(([generation, mark]) => [generation, mark]),
    [
      [5, 'unverified'],
      [6, 'unverified'],
    ],
  );
  assert.match(String(marks()[0]![2]), /^plan not available/);
});

test.run();
