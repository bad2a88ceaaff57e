import type * as Y from 'yjs';
import { readIntentEntries } from '../documents/desired.js';
import type { Intent } from '../schemas/intent.js';
import type { Capability, Policy } from '../schemas/policy.js';
import type { ActivationAction } from '../schemas/primitives.js';
import { adminForKey, capabilitiesFor, signatureThreshold } from '../trust/capabilities.js';

// The admin's side of a new intent, shared by `outpost deploy` and the web editor: which
// generation comes next, and whether this key may sign it at all under the policy in force.

export function highestGeneration(doc: Y.Doc, host: string): number {
  return readIntentEntries(doc)
    .entries.filter((e) => e.signed.intent.host === host)
    .reduce((max, e) => Math.max(max, e.signed.intent.generation), 0);
}

export type IssueVerdict = { ok: true; threshold: number } | { ok: false; reason: string };

// Checked before anything is signed, against the same policy agents check the intent against
// (verifyIntentUnderPolicy): an admin without the capability is told so instead of producing an
// intent agents refuse.
export function mayIssueIntent(
  chain: readonly Policy[],
  publicKey: string,
  host: string,
  capability: Capability = 'deploy',
): IssueVerdict {
  const policy = chain.at(-1);
  if (!policy)
    return {
      ok: false,
      reason: 'no fleet policy signed by the pinned org root is known yet: connect once, or check the pinned root key',
    };
  if (policy.revokedKeys.includes(publicKey))
    return { ok: false, reason: `this key is revoked under policy ${policy.version}; ask for a new one` };
  const admin = adminForKey(policy, publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `this key is not an admin key under policy ${policy.version}; ask a policy admin to add it ('outpost policy admin add')`,
    };
  if (!capabilitiesFor(policy, admin, host).has(capability))
    return {
      ok: false,
      reason: `admin ${admin.name} lacks '${capability}' for host ${host} under policy ${policy.version}: agents would refuse the intent, so nothing was signed; ask a policy admin for a role with '${capability}' on ${host}`,
    };
  // Where the host's group needs k admins, this signature is the first of them: the intent waits
  // until others co-sign it (`outpost approve`, or the web editor's host view).
  return { ok: true, threshold: signatureThreshold(policy, host) };
}

export interface IntentDraft {
  host: string;
  closure: string;
  action: ActivationAction;
  generation: number;
  validForMs: number;
  issuer: string;
  policyVersion?: number;
  now: number;
}

export function draftIntent(draft: IntentDraft): Intent {
  return {
    kind: 'intent',
    host: draft.host,
    generation: draft.generation,
    closure: draft.closure,
    action: draft.action,
    issuedAt: new Date(draft.now).toISOString(),
    expiresAt: new Date(draft.now + draft.validForMs).toISOString(),
    issuer: draft.issuer,
    ...(draft.policyVersion === undefined ? {} : { policyVersion: draft.policyVersion }),
  };
}
