import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import { nodeSignPayload } from '../../../../shared/node/ed25519.js';
import { cosignPlan, signPlan, signRolloutAction } from '../../../../shared/rollout/sign.js';
import { planSignatureValid } from '../../../../shared/rollout/verify.js';
import { fixtureHosts, makePlan } from '../../../harness/rollout-fixtures.js';

// The CLI signs rollout plans, co-signatures and actions with Node's Ed25519; tweetnacl stays the
// portable reference (the web editor's fallback, shared/ everywhere). Ed25519 is deterministic, so
// the two must give the very same signature over the same bytes, and each verify the other's.
const admin = generateSigningKey('alice');
const hosts = fixtureHosts(200);
const { plan } = makePlan(admin, {
  waves: [
    { name: 'first', hosts: hosts.slice(0, 20) },
    { name: 'final', hosts: hosts.slice(20), gate: { soakSeconds: 60 } },
  ],
});

test('a plan signed with node:crypto carries the signature tweetnacl gives, and verifies', () => {
  const byNode = signPlan(plan, admin, nodeSignPayload);
  const byNacl = signPlan(plan, admin);
  assert.equal(byNode.signature, byNacl.signature);
  assert.ok(planSignatureValid(byNode));
});

test('co-signatures and actions: node:crypto and tweetnacl agree', () => {
  const bob = generateSigningKey('bob');
  assert.equal(cosignPlan(plan, bob, nodeSignPayload), cosignPlan(plan, bob));
  const action = {
    kind: 'rollout-action' as const,
    rollout: plan.id,
    plan: cosignPlan(plan, bob).plan,
    verb: 'pause' as const,
    seq: 1,
    issuer: 'bob',
    at: '2026-12-01T12:05:00.000Z',
  };
  const byNode = signRolloutAction(action, bob, nodeSignPayload);
  assert.equal(byNode, signRolloutAction(action, bob));
  assert.ok(verifyPayloadSignature('rollout-action', byNode.action, byNode.signature));
});

test('over arbitrary payloads and every key, the same bytes are signed', () => {
  for (let i = 0; i < 20; i += 1) {
    const key = generateSigningKey(`k${i}`);
    const payload = { i, text: 'é'.repeat(i), nested: { list: Array.from({ length: i }, (_, j) => j) } };
    assert.equal(nodeSignPayload('result', payload, key), signPayload('result', payload, key));
  }
});

test.run();
