import { sha256Hex } from '../crypto/encoding.js';
import { signedBytes } from '../crypto/signatures.js';
import type { SignedIntent } from '../schemas/intent.js';
import { intentDigest } from '../trust/verify-intent.js';
import type { PlanHost, RolloutPlan, SignedPlan } from './schemas.js';

// The digest that names one plan (what co-signatures, actions and rollout intents refer to): the
// SHA-256 of the bytes its signatures cover. Plans are immutable values: each object is encoded
// and hashed once (a 1,000-host plan is ~250 KB of JSON), and the same bytes serve its signature
// checks (shared/rollout/verify.ts).
const encodedPlans = new WeakMap<RolloutPlan, { bytes: Uint8Array; digest: string }>();
export function encodedPlan(plan: RolloutPlan): { bytes: Uint8Array; digest: string } {
  let encoded = encodedPlans.get(plan);
  if (encoded === undefined) {
    const bytes = signedBytes('rollout-plan', plan);
    encoded = { bytes, digest: sha256Hex(bytes) };
    encodedPlans.set(plan, encoded);
  }
  return encoded;
}

export function planDigest(plan: RolloutPlan): string {
  return encodedPlan(plan).digest;
}

// The hosts of the wave before `host`'s: whose evidence its gate needs (none for the first wave).
export function previousWaveHosts(plan: RolloutPlan, host: string): Set<string> {
  const placed = placeHosts(plan).get(host);
  if (!placed || placed.wave === 0) return new Set();
  return new Set(plan.waves[placed.wave - 1]!.hosts.map((h) => h.host));
}

export interface PlacedHost {
  entry: PlanHost;
  // 0-based wave index.
  wave: number;
}

// Where each host of a plan is. Computed once per plan object (plans are immutable values).
const placements = new WeakMap<RolloutPlan, Map<string, PlacedHost>>();

export function placeHosts(plan: RolloutPlan): Map<string, PlacedHost> {
  let placed = placements.get(plan);
  if (!placed) {
    placed = new Map();
    plan.waves.forEach((wave, index) => {
      for (const entry of wave.hosts) placed!.set(entry.host, { entry, wave: index });
    });
    placements.set(plan, placed);
  }
  return placed;
}

export function planHostCount(plan: RolloutPlan): number {
  return plan.waves.reduce((sum, wave) => sum + wave.hosts.length, 0);
}

// The intent a host derives from a plan for itself. Every field comes from the plan; the
// envelope carries the creator's signature (over the plan, not this intent) so that one plan
// gives one envelope, and so one digest, on every host, coordinator and CLI: results name it.
export function deriveRolloutIntent(signed: SignedPlan, digest: string, placed: PlacedHost): SignedIntent {
  const { plan } = signed;
  return {
    intent: {
      kind: 'intent',
      host: placed.entry.host,
      generation: placed.entry.generation,
      closure: placed.entry.closure,
      action: plan.action,
      issuedAt: plan.createdAt,
      expiresAt: plan.expiresAt,
      issuer: plan.issuer,
      policyVersion: plan.policyVersion,
      rollout: { id: plan.id, plan: digest, wave: placed.wave + 1 },
    },
    signatures: [signed.signature],
  };
}

// The digest each host's result must name to count as evidence for this plan, per host.
const expectedDigests = new WeakMap<SignedPlan, Map<string, string>>();

export function expectedResultDigest(signed: SignedPlan, digest: string, host: string): string | null {
  let byHost = expectedDigests.get(signed);
  if (!byHost) {
    byHost = new Map();
    expectedDigests.set(signed, byHost);
  }
  const known = byHost.get(host);
  if (known !== undefined) return known;
  const placed = placeHosts(signed.plan).get(host);
  if (!placed) return null;
  const value = intentDigest(deriveRolloutIntent(signed, digest, placed));
  byHost.set(host, value);
  return value;
}
