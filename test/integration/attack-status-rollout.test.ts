import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { appendRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import { deriveRolloutIntent, placeHosts, planDigest } from '../../shared/rollout/plan.js';
import type { SignedPlan } from '../../shared/rollout/schemas.js';
import type { Intent, SignedIntent } from '../../shared/schemas/intent.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, runCli, temporaryDirectory } from '../harness/processes.js';
import { type FixtureHost, makePlan } from '../harness/rollout-fixtures.js';

// A compromised coordinator writes rollout intents that no admin signed into hosts' desired
// documents, to make `outpost status` show them as what admins decided. Its real position
// (test/harness/hostile-peer.ts): it serves every document the admin command reads — the genuine
// policy, a genuine admin-signed plan, and whatever else it likes — over the real sync protocol,
// and holds no admin key. A rollout intent carries the plan's signature (over the plan, not over
// the intent), so that signature proves nothing about the intent: only the plan it names does.
// The real `outpost status --json` must check each rollout intent against the signed plan as the
// agent does, and never call a forged one valid.
const org = makeTestOrg();
const stranger = generateSigningKey('stranger');
const closure = (c: string, name: string): string => `/nix/store/${c.repeat(32)}-nixos-system-${name}`;
const fixture = (host: string): FixtureHost => ({ host, key: generateSigningKey(host), closure: closure('a', host) });
let dir = '';
let peer: HostilePeer;
let plan: SignedPlan;
let views: Map<string, HostView>;
let table = '';

// The intent the genuine plan gives `host`, with the attacker's changes.
function forged(signed: SignedPlan, host: string, change: (intent: Intent) => Intent): SignedIntent {
  const derived = deriveRolloutIntent(signed, planDigest(signed.plan), placeHosts(signed.plan).get(host)!);
  return { intent: change(derived.intent), signatures: derived.signatures };
}

test.before(async () => {
  dir = temporaryDirectory('attack-status-rollout');
  await writeKeyFile(join(dir, 'alice.key'), org.alice);
  peer = await startHostilePeer();
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(basePolicy(org), org.root));
  const createdAt = Date.now() - 60_000;
  // Alice's genuine plan: h1 and h4 in the first wave, h2 in the second. h3 is in no wave.
  plan = makePlan(org.alice, {
    id: 'r1',
    createdAt,
    waves: [
      { name: 'first', hosts: [fixture('h1'), fixture('h4')] },
      { name: 'second', hosts: [fixture('h2')] },
    ],
  });
  appendRolloutEntries(peer.doc(rolloutDocName('r1')), { plans: [plan] });
  const write = (host: string, signed: SignedIntent): void => appendIntent(peer.doc(desiredDocName(host)), signed);
  // h1: the genuine intent, as the coordinator would deliver it.
  write(
    'h1',
    forged(plan, 'h1', (intent) => intent),
  );
  // h2 is in wave 2: the attacker says wave 1 (as if its gate were open).
  write(
    'h2',
    forged(plan, 'h2', (intent) => ({ ...intent, rollout: { ...intent.rollout!, wave: 1 } })),
  );
  // h3 is in no wave of the plan: the attacker gives it h1's intent, renamed.
  write(
    'h3',
    forged(plan, 'h1', (intent) => ({ ...intent, host: 'h3' })),
  );
  // h4 is in wave 1: the attacker swaps its closure for one of its own.
  write(
    'h4',
    forged(plan, 'h4', (intent) => ({ ...intent, closure: closure('b', 'backdoor') })),
  );
  // h5: a rollout intent naming a plan nobody signed (its digest is in no document).
  write(
    'h5',
    forged(plan, 'h1', (intent) => ({
      ...intent,
      host: 'h5',
      closure: closure('c', 'backdoor'),
      rollout: { id: 'rx', plan: 'f'.repeat(64), wave: 1 },
    })),
  );
  peer.doc(rolloutDocName('rx'));
  // h6: a plan the attacker signed itself, with a key that is no admin's, stored as rollout rs.
  const own = makePlan(stranger, {
    id: 'rs',
    createdAt,
    waves: [{ name: 'first', hosts: [{ ...fixture('h6'), closure: closure('d', 'backdoor') }] }],
  });
  appendRolloutEntries(peer.doc(rolloutDocName('rs')), { plans: [own] });
  write(
    'h6',
    forged(own, 'h6', (intent) => intent),
  );

  const base = ['status', '--coordinator', peer.url, '--key', join(dir, 'alice.key'), '--org-root', org.root.publicKey];
  const json = await runCli([...base, '--json']);
  assert.is(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { hosts: HostView[] };
  views = new Map(parsed.hosts.map((v) => [v.host, v]));
  const text = await runCli(base);
  assert.is(text.code, 0, text.stderr);
  table = text.stdout;
});

test.after(async () => {
  await peer?.close();
  removeDirectory(dir);
});

const desired = (host: string): NonNullable<HostView['desired']> => {
  const view = views.get(host);
  assert.ok(view?.desired, `status shows a desired intent for ${host}`);
  return view.desired;
};
const row = (host: string): string => table.split('\n').find((line) => line.startsWith(`${host} `)) ?? '';

test('the genuine rollout intent is valid, signed by alice under the policy', () => {
  const h1 = desired('h1');
  assert.is(h1.signatureValid, true);
  assert.is(h1.trustedSigner, true);
  assert.is(h1.rollout?.verdict, 'valid');
  assert.equal(h1.rollout?.signers, ['alice']);
  assert.match(row('h1'), /\(rollout r1, wave 1\) /);
});

test('a rollout intent for a wave the plan does not put the host in is invalid', () => {
  const h2 = desired('h2');
  assert.is(h2.signatureValid, false);
  assert.is(h2.rollout?.verdict, 'invalid');
  assert.match(String(h2.rollout?.reason), /puts h2 in wave 2, not 1/);
  assert.match(row('h2'), /INVALID: the signed plan puts h2 in wave 2, not 1/);
});

test('a rollout intent for a host the plan does not contain is invalid', () => {
  const h3 = desired('h3');
  assert.is(h3.signatureValid, false);
  assert.is(h3.rollout?.verdict, 'invalid');
  assert.match(String(h3.rollout?.reason), /has no wave for h3/);
});

test('a rollout intent whose closure is not the one the plan gives the host is invalid', () => {
  const h4 = desired('h4');
  assert.is(h4.signatureValid, false);
  assert.is(h4.trustedSigner, null);
  assert.is(h4.rollout?.verdict, 'invalid');
  assert.match(
    String(h4.rollout?.reason),
    /gives h4 generation 2 of .*-nixos-system-h4, not generation 2 of .*backdoor/,
  );
  assert.match(row('h4'), /INVALID/);
});

test('a rollout intent naming a plan nobody signed is unverified: plan not available', () => {
  const h5 = desired('h5');
  assert.is(h5.signatureValid, false);
  assert.is(h5.trustedSigner, null);
  assert.is(h5.rollout?.verdict, 'unverified');
  assert.match(
    String(h5.rollout?.reason),
    /^plan not available: fleet\/rollout-rx holds no plan with digest ffffffffffff/,
  );
  assert.match(row('h5'), /UNVERIFIED: plan not available/);
  assert.not.match(row('h5'), /BAD SIGNATURE/);
});

test("a plan signed by a key that is no admin's gives an untrusted signer", () => {
  const h6 = desired('h6');
  assert.is(h6.rollout?.verdict, 'valid', 'the intent is what that plan says');
  assert.is(h6.trustedSigner, false);
  assert.match(
    String(h6.untrustedBecause),
    /0 of 1 required admin signatures for h6: key .* is not an admin key under policy 1/,
  );
  assert.match(row('h6'), /UNTRUSTED SIGNER/);
});

test.run();
