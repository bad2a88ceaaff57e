import type { Signature } from '../crypto/signatures.js';
import type { IntentEntry } from '../documents/desired.js';
import type { Intent, SignedIntent } from '../schemas/intent.js';
import type { Policy } from '../schemas/policy.js';
import { adminForKey, capabilitiesFor } from '../trust/capabilities.js';
import { groupByContent, withOwnSignature } from '../trust/co-signatures.js';
import { type IntentCoSigning, intentCoSigning } from '../trust/policy-intent.js';
import { checkIntentBindingAndTime } from '../trust/verify-intent.js';

// The admin's side of co-signing an intent another admin deployed, shared by `outpost approve`
// and the web editor: which intent is there to approve (judged under the policy walked from the
// pinned org root, never on the coordinator's word), whether this key's signature would count,
// and the envelope that carries it. Each refusal says what to do instead.

export type Refusal = { ok: false; reason: string };

export interface Proposal {
  ok: true;
  generation: number;
  intent: Intent;
  // Who signed (every copy's signatures merged) and who is still needed.
  signing: IntentCoSigning;
}

export function findProposal(
  entries: readonly IntentEntry[],
  host: string,
  chain: Policy[],
  options: { generation?: number; closure?: string; now: number },
): Proposal | Refusal {
  const own = entries.filter((e) => e.signed.intent.host === host);
  if (own.length === 0)
    return { ok: false, reason: `${host} has no intent to approve; deploy one first with 'outpost deploy'` };
  const generation = options.generation ?? Math.max(...own.map((e) => e.signed.intent.generation));
  const groups = groupByContent(
    own.filter((e) => e.signed.intent.generation === generation).map((e) => e.signed),
    (signed) => ({ content: signed.intent, signatures: signed.signatures }),
  );
  if (groups.length === 0)
    return {
      ok: false,
      reason: `${host} has no intent for generation ${generation} (generations: ${[...new Set(own.map((e) => e.signed.intent.generation))].sort((a, b) => a - b).join(', ')})`,
    };
  // Only content some admin validly signed is worth approving: anything else was written by
  // someone without a key (a relay, the coordinator) and would only be an approval to trick out.
  const judged = groups.map((group) => {
    const intent = group.copies[0]!.intent;
    return { intent, signing: intentCoSigning(intent, group.signatures, chain) };
  });
  const proposals = judged.filter(
    (j): j is { intent: Intent; signing: IntentCoSigning } =>
      !('error' in j.signing) && j.signing.tally.admins.length > 0,
  );
  if (proposals.length > 1)
    return {
      ok: false,
      reason: `${proposals.length} different validly signed intents claim generation ${generation} for ${host} (an equivocation: agents refuse both): ${proposals.map((p) => p.intent.closure).join(', ')}. Deploy a new generation instead of approving either`,
    };
  const proposal = proposals[0];
  if (!proposal) {
    const reasons = judged.map((j) =>
      'error' in j.signing ? j.signing.error : j.signing.tally.problems.join('; ') || 'no signatures',
    );
    return {
      ok: false,
      reason: `no admin validly signed ${host}'s generation ${generation} under the policy walked from the pinned root (${reasons.join(' | ')}): nothing to approve`,
    };
  }
  const { intent } = proposal;
  if (options.closure !== undefined && options.closure !== intent.closure)
    return {
      ok: false,
      reason: `generation ${generation} of ${host} installs ${intent.closure}, not ${options.closure} that you gave with --closure: not approving`,
    };
  const binding = checkIntentBindingAndTime({ intent, signatures: [] }, host, options.now);
  if (!binding.ok)
    return { ok: false, reason: `${binding.reason}: agents will refuse it whatever is signed; deploy anew instead` };
  return { ok: true, generation, intent, signing: proposal.signing };
}

// Whether a signature by `publicKey` would count for `host` under the policy in force.
export function mayApprove(policy: Policy, publicKey: string, host: string): { ok: true } | Refusal {
  const admin = adminForKey(policy, publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `your key ${publicKey.slice(0, 12)}… is not an admin key under policy version ${policy.version}${policy.revokedKeys.includes(publicKey) ? ' (it is revoked)' : ''}: your signature would not count`,
    };
  if (!capabilitiesFor(policy, admin, host).has('deploy'))
    return {
      ok: false,
      reason: `admin ${admin.name} lacks 'deploy' for host ${host} under policy version ${policy.version}: your signature would not count`,
    };
  return { ok: true };
}

export const alreadySigned = (proposal: Proposal, publicKey: string): boolean =>
  proposal.signing.tally.counted.some((s) => s.publicKey === publicKey);

// The new envelope: the same content, with `own` first and only the signatures that counted
// (junk a peer added is not copied forward).
export function coSignedIntent(proposal: Proposal, own: Signature): SignedIntent {
  return { intent: proposal.intent, signatures: withOwnSignature(proposal.signing.tally.counted, own) };
}
