import { createPrivateKey, sign as ed25519Sign, type KeyObject } from 'node:crypto';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { canonicalBytes } from '../../shared/crypto/canonical.js';
import { toBase64 } from '../../shared/crypto/encoding.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import type { Signature, SignedKind } from '../../shared/crypto/signatures.js';
import type { RolloutEntries } from '../../shared/rollout/document.js';
import { expectedResultDigest, planDigest } from '../../shared/rollout/plan.js';
import {
  DEFAULT_GATE,
  type Gate,
  type RolloutPlan,
  rolloutPlanSchema,
  type SignedPlan,
} from '../../shared/rollout/schemas.js';
import type { Result, SignedResult } from '../../shared/schemas/report.js';
import { basePolicy, postJson, pushPolicy, signPolicy, type TestOrg } from './policy-fixtures.js';
import { waitFor } from './processes.js';

// Plans, host keys and host-signed results for rollout tests: real keys, real signatures.

export interface FixtureHost {
  host: string;
  key: SigningKey;
  closure: string;
}

const closureOf = (host: string, release: string): string => {
  // 32 nix-base32 characters derived from the names, so closures differ per host and release.
  const alphabet = '0123456789abcdfghijklmnpqrsvwxyz';
  let seed = 0;
  for (const c of `${host}/${release}`) seed = (seed * 31 + c.charCodeAt(0)) >>> 0;
  let hash = '';
  for (let i = 0; i < 32; i += 1) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    hash += alphabet[seed % 32];
  }
  return `/nix/store/${hash}-nixos-system-${host}`;
};

export function fixtureHosts(count: number, release = 'r1', prefix = 'h'): FixtureHost[] {
  return Array.from({ length: count }, (_, i) => {
    const host = `${prefix}${i + 1}`;
    return { host, key: generateSigningKey(host), closure: closureOf(host, release) };
  });
}

export interface PlanSpec {
  id?: string;
  release?: string;
  waves: { name: string; hosts: FixtureHost[]; gate?: Partial<Gate> }[];
  createdAt?: number;
  expiresInMs?: number;
  policyVersion?: number;
  generation?: number;
}

export function makePlan(issuer: SigningKey, spec: PlanSpec): SignedPlan {
  const createdAt = spec.createdAt ?? Date.parse('2026-12-01T12:00:00.000Z');
  const plan: RolloutPlan = {
    kind: 'rollout-plan',
    id: spec.id ?? 'r1',
    release: spec.release ?? 'release-1',
    action: 'switch',
    issuer: issuer.name,
    issuerKey: issuer.publicKey,
    policyVersion: spec.policyVersion ?? 1,
    createdAt: new Date(createdAt).toISOString(),
    expiresAt: new Date(createdAt + (spec.expiresInMs ?? 60 * 86_400_000)).toISOString(),
    waves: spec.waves.map((wave) => ({
      name: wave.name,
      gate: { ...DEFAULT_GATE, ...wave.gate },
      hosts: wave.hosts.map((h) => ({
        host: h.host,
        key: h.key.publicKey,
        closure: h.closure,
        generation: spec.generation ?? 2,
      })),
    })),
  };
  const checked = rolloutPlanSchema.parse(plan);
  return { plan: checked, signature: signFast('rollout-plan', checked, issuer) };
}

// Signs like signPayload('result', …), with node:crypto: tests sign thousands of results, and
// tweetnacl takes milliseconds for each.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKeys = new WeakMap<SigningKey, KeyObject>();
export function signFast(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  let privateKey = privateKeys.get(key);
  if (!privateKey) {
    privateKey = createPrivateKey({
      key: Buffer.concat([PKCS8_PREFIX, Buffer.from(key.secretKey.subarray(0, 32))]),
      format: 'der',
      type: 'pkcs8',
    });
    privateKeys.set(key, privateKey);
  }
  const message = Buffer.concat([Buffer.from(`outpost-${kind}-v1\n`), canonicalBytes(payload)]);
  return { publicKey: key.publicKey, signature: toBase64(ed25519Sign(null, message, privateKey)) };
}

const planDigests = new WeakMap<SignedPlan, string>();

// The result a host signs after applying (or failing) its rollout target.
export function hostResult(
  signed: SignedPlan,
  host: FixtureHost,
  outcome: Result['outcome'],
  at: number,
  overrides: Partial<Result> = {},
  signer: SigningKey = host.key,
): SignedResult {
  let digest = planDigests.get(signed);
  if (!digest) {
    digest = planDigest(signed.plan);
    planDigests.set(signed, digest);
  }
  const entry = signed.plan.waves.flatMap((w) => w.hosts).find((h) => h.host === host.host);
  const result: Result = {
    kind: 'result',
    host: host.host,
    seq: 1,
    at: new Date(at).toISOString(),
    outcome,
    generation: entry?.generation ?? 2,
    closure: entry?.closure ?? host.closure,
    action: signed.plan.action,
    intentDigest: expectedResultDigest(signed, digest, host.host) ?? '0'.repeat(64),
    reason: outcome === 'applied' ? 'switch; confirmed' : 'switch-to-configuration exited 3',
    outputTail: '',
    ...overrides,
  };
  return { result, signature: signFast('result', result, signer) };
}

export function entriesOf(
  plans: SignedPlan[],
  extra: Partial<Omit<RolloutEntries, 'plans' | 'malformed'>> = {},
): RolloutEntries {
  return {
    plans,
    cosignatures: extra.cosignatures ?? [],
    actions: extra.actions ?? [],
    evidence: extra.evidence ?? [],
    malformed: [],
  };
}

// A coordinator with --org-root given the base policy and both hosts enrolled (through `url`), and
// a plan of one wave per host signed by alice, created a minute ago; the caller submits it.
export async function twoWaveRollout(
  url: string,
  org: TestOrg,
  [first, second]: [FixtureHost, FixtureHost],
  id: string,
): Promise<SignedPlan> {
  const pushed = await pushPolicy(url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const host of [first, second]) {
    const approved = await postJson(
      url,
      '/api/enroll/approve',
      signEnrollment(org.alice, { host: host.host, hostKey: host.key.publicKey, policyVersion: 1 }, new Date()),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
  return makePlan(org.alice, {
    id,
    createdAt: Date.now() - 60_000,
    waves: [
      { name: 'first', hosts: [first] },
      { name: 'second', hosts: [second] },
    ],
  });
}

// Submits the plan until the coordinator at `url` stores it: one on a shared log learns the policy
// and enrollments from the stream, and refuses the plan until then.
export async function submitPlanOnceKnown(url: string, plan: SignedPlan, what: string): Promise<void> {
  await waitFor(what, async () => (await postJson(url, '/api/rollouts', { plan })).status === 200, 30_000, 500);
}
