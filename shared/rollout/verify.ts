import type { Signature } from '../crypto/signatures.js';
import {
  forgetVerifiedSignatures as forgetVerifiedOnce,
  verifyPayloadSignatureOnce,
  verifySignedBytesOnce,
} from '../crypto/verified-once.js';
import type { Capability, Policy } from '../schemas/policy.js';
import type { SignedResult } from '../schemas/report.js';
import { adminForKey, capabilitiesFor, signatureThreshold } from '../trust/capabilities.js';
import { tallyAdminSigners } from '../trust/co-signatures.js';
import { encodedPlan, expectedResultDigest, placeHosts } from './plan.js';
import type { PlanCosignature, RolloutPlan, SignedPlan, SignedRolloutAction } from './schemas.js';

// Signature checks for rollouts. Signatures in a rollout document never change, and an agent
// judges its gate again at every change of the document, so each signature is verified once per
// process (verified-once.ts). The plan's signed bytes and their digest are computed here from the
// plan itself (once per object, encodedPlan), never taken from a caller: the verdict is keyed by it.
function verifiedPlanSignature(plan: RolloutPlan, signature: Signature): boolean {
  const { bytes, digest } = encodedPlan(plan);
  return verifySignedBytesOnce('rollout-plan', bytes, digest, signature);
}

// Evidence entries are the same objects at every read of a loaded document: each is judged once.
let resultSignatures = new WeakMap<SignedResult, boolean>();

// For benchmarks that time a reader's first check.
export function forgetVerifiedSignatures(): void {
  forgetVerifiedOnce();
  resultSignatures = new WeakMap();
}

function resultSignatureValid(signed: SignedResult): boolean {
  let valid = resultSignatures.get(signed);
  if (valid === undefined) {
    // Through verified-once: the web editor fills its verdicts ahead with WebCrypto.
    valid = verifyPayloadSignatureOnce('result', signed.result, signed.signature);
    resultSignatures.set(signed, valid);
  }
  return valid;
}

// The keys whose signatures over the plan verify: its own (by issuerKey) and the co-signatures
// naming its digest. Each key once.
export function verifiedPlanKeys(signed: SignedPlan, digest: string, cosignatures: PlanCosignature[]): string[] {
  const keys = new Set<string>();
  if (verifiedPlanSignature(signed.plan, signed.signature)) keys.add(signed.signature.publicKey);
  for (const cosignature of cosignatures) {
    if (cosignature.plan !== digest || keys.has(cosignature.signature.publicKey)) continue;
    if (verifiedPlanSignature(signed.plan, cosignature.signature)) keys.add(cosignature.signature.publicKey);
  }
  return [...keys];
}

// Is the plan's own signature valid? (A plan entry whose issuer signature fails is no plan.)
export function planSignatureValid(signed: SignedPlan): boolean {
  return verifiedPlanSignature(signed.plan, signed.signature);
}

export type SignerVerdict =
  | { ok: true; admins: string[] }
  | { ok: false; admins: string[]; needed: number; reason: string };

// The rule intents follow (shared/trust/policy-intent.ts, the same tally: co-signatures.ts), over
// the plan: distinct admins with `deploy` for `host` under the policy version the plan names *and*
// the one in force, meeting the strictest threshold of the host's groups. `keys` are those whose
// signatures over the plan verified (verifiedPlanKeys): the tally does not verify them again.
export function planSignersForHost(plan: RolloutPlan, keys: string[], chain: Policy[], host: string): SignerVerdict {
  const current = chain.at(-1);
  const named = chain.find((p) => p.version === plan.policyVersion);
  if (!current || !named)
    return {
      ok: false,
      admins: [],
      needed: 1,
      reason: !current
        ? 'no fleet policy is trusted yet'
        : `the plan names policy version ${plan.policyVersion}, not known here (have ${chain[0]?.version}..${current.version})`,
    };
  const tally = tallyAdminSigners(
    keys.map((publicKey) => ({ publicKey })),
    {
      policies: named === current ? [named] : [named, current],
      mayAct: (policy, admin) => capabilitiesFor(policy, admin, host).has('deploy'),
      lacking: `'deploy' for host ${host}`,
    },
    () => true,
  );
  const needed = Math.max(signatureThreshold(named, host), signatureThreshold(current, host));
  if (tally.admins.length >= needed) return { ok: true, admins: tally.admins };
  return {
    ok: false,
    admins: tally.admins,
    needed,
    reason: `${tally.admins.length} of ${needed} required admin signatures for ${host}${tally.problems.length ? `: ${tally.problems.join('; ')}` : ''}`,
  };
}

// Who may act for a host: under the policy in force, an admin (not revoked) with `capability`.
export type ActionAuthority = (
  action: SignedRolloutAction,
) => { ok: true; admin: string } | { ok: false; reason: string };

// An action counts for every host in `hosts` (an agent: itself; the coordinator: all the hosts
// it concerns) when its signer is an admin with `capability` for each of them.
export function actionAuthority(
  chain: Policy[],
  hosts: () => Iterable<string>,
  capability: Capability = 'deploy',
): ActionAuthority {
  return (signed) => {
    const current = chain.at(-1);
    if (!current) return { ok: false, reason: 'no fleet policy is trusted yet' };
    const admin = adminForKey(current, signed.signature.publicKey);
    if (!admin)
      return {
        ok: false,
        reason: `key ${signed.signature.publicKey.slice(0, 12)}… is not an admin key under policy ${current.version}`,
      };
    for (const host of hosts())
      if (!capabilitiesFor(current, admin, host).has(capability))
        return { ok: false, reason: `admin ${admin.name} lacks '${capability}' for host ${host}` };
    if (!verifyPayloadSignatureOnce('rollout-action', signed.action, signed.signature))
      return { ok: false, reason: `signature by admin ${admin.name} does not verify` };
    return { ok: true, admin: admin.name };
  };
}

export interface HostProof {
  host: string;
  at: number;
  outcome: SignedResult['result']['outcome'];
  reason: string;
}

export interface WaveEvidence {
  successes: Map<string, HostProof>;
  failures: Map<string, HostProof>;
}

export interface RejectedEvidence {
  host: string;
  reason: string;
}

// Sorts a rollout's evidence into each wave's proven successes and failures. A result counts
// only when it is for a host of the plan, signed by the key the plan names for that host (not a
// revoked key), for exactly the intent that host derives from this plan (the digest binds rollout
// id, plan digest, host, closure, generation and action: results of other rollouts, releases or
// earlier attempts do not match), and its signature verifies. Each host counts once; a success
// outweighs a failure. `waves` limits the work to the waves asked for (an agent needs one).
export function collectEvidence(
  signed: SignedPlan,
  digest: string,
  evidence: SignedResult[],
  options: { waves?: ReadonlySet<number>; revokedKeys?: ReadonlySet<string> } = {},
): { waves: Map<number, WaveEvidence>; rejected: RejectedEvidence[] } {
  const tally = new EvidenceTally(signed, digest, options);
  for (const entry of evidence) tally.add(entry);
  return { waves: tally.waves, rejected: tally.rejected };
}

// collectEvidence one entry at a time, for a reader that judges the same growing evidence again
// and again (the coordinator, at every batch a wave's hosts report): `collect` takes only the
// entries after those it has seen, as long as those are the same objects in the same order (the
// parsed entries of an append-only array; anything else starts over), so judging a wave of n
// hosts costs O(n) in all rather than O(n) per batch. The result is the one collectEvidence gives
// for the same array (test/unit/shared/rollout/evidence-tally.test.ts); its maps are the tally's
// own and change at the next `collect`.
export class EvidenceTally {
  waves = new Map<number, WaveEvidence>();
  rejected: RejectedEvidence[] = [];
  private seen: SignedResult[] = [];

  constructor(
    readonly signed: SignedPlan,
    readonly digest: string,
    readonly options: { waves?: ReadonlySet<number>; revokedKeys?: ReadonlySet<string> } = {},
  ) {}

  collect(evidence: readonly SignedResult[]): { waves: Map<number, WaveEvidence>; rejected: RejectedEvidence[] } {
    let same = evidence.length >= this.seen.length;
    for (let i = 0; same && i < this.seen.length; i++) same = evidence[i] === this.seen[i];
    if (!same) {
      this.waves = new Map();
      this.rejected = [];
      this.seen = [];
    }
    for (let i = this.seen.length; i < evidence.length; i++) this.add(evidence[i]!);
    return { waves: this.waves, rejected: this.rejected };
  }

  add(entry: SignedResult): void {
    this.seen.push(entry);
    const { signed, digest, options } = this;
    const placed = placeHosts(signed.plan);
    const { result, signature } = entry;
    const where = placed.get(result.host);
    if (!where) {
      this.rejected.push({ host: result.host, reason: `${result.host} is not a host of this rollout` });
      return;
    }
    if (options.waves && !options.waves.has(where.wave)) return;
    let wave = this.waves.get(where.wave);
    if (!wave) {
      wave = { successes: new Map(), failures: new Map() };
      this.waves.set(where.wave, wave);
    }
    if (wave.successes.has(result.host)) return;
    const problem =
      signature.publicKey !== where.entry.key
        ? `signed by key ${signature.publicKey.slice(0, 12)}…, not the key the plan names for ${result.host} (${where.entry.key.slice(0, 12)}…)`
        : options.revokedKeys?.has(signature.publicKey)
          ? `signed by ${result.host}'s key, which the policy revokes`
          : result.intentDigest !== expectedResultDigest(signed, digest, result.host) ||
              result.closure !== where.entry.closure ||
              result.generation !== where.entry.generation
            ? `answers another intent (another rollout, release or attempt), not ${result.host}'s intent of this plan`
            : !resultSignatureValid(entry)
              ? 'its signature does not verify'
              : null;
    if (problem) {
      this.rejected.push({ host: result.host, reason: problem });
      return;
    }
    const proof: HostProof = {
      host: result.host,
      at: Date.parse(result.at),
      outcome: result.outcome,
      reason: result.reason,
    };
    if (result.outcome === 'applied') {
      wave.successes.set(result.host, proof);
      wave.failures.delete(result.host);
    } else if (!wave.failures.has(result.host)) wave.failures.set(result.host, proof);
  }
}
