import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { verifyPayloadSignature } from '../../../shared/crypto/signatures.js';
import { readIntentEntries } from '../../../shared/documents/desired.js';
import { intentSchema, type SignedIntent } from '../../../shared/schemas/intent.js';
import { type ActivationAction, storePathSchema } from '../../../shared/schemas/primitives.js';
import { intentCoSigning, verifyIntentUnderPolicy } from '../../../shared/trust/policy-intent.js';
import { alreadySigned, coSignedIntent, findProposal, mayApprove } from '../../../shared/views/co-sign.js';
import { chooseDeployGeneration, pendingPlacements } from '../../../shared/views/deploy-generation.js';
import type { HostView } from '../../../shared/views/host-view.js';
import { draftIntent, highestGeneration, mayIssueIntent } from '../../../shared/views/intent-draft.js';
import { chooseRollbackTarget } from '../../../shared/views/rollback-target.js';
import type { ApiOutbox } from './api-outbox.js';
import type { FleetSync } from './fleet-sync.js';
import type { Outbox, OutboxEntry } from './outbox.js';
import { readRolloutsForDeploy } from './rollout-ids.js';

// Deploy and rollback from the page: checked against the policy before anything is signed, signed
// over the CLI's canonical bytes, checked again as an agent will check it, then kept in the outbox
// and appended to the host's document (delivered now, or when the link returns).
export type ActionOutcome = { ok: true; entry: OutboxEntry } | { ok: false; reason: string };

// Intents go out through the outbox; rollout actions this page signed that wait in the API outbox
// count when the generation is chosen.
export interface Outboxes {
  outbox: Outbox;
  apiOutbox: ApiOutbox;
}

export interface DeployRequest {
  host: string;
  closure: string;
  action: ActivationAction;
  validForMs: number;
}

async function signAndQueue(
  kind: OutboxEntry['action'],
  request: DeployRequest,
  sync: FleetSync,
  { outbox, apiOutbox }: Outboxes,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  const doc = sync.desiredDoc(request.host);
  if (!doc) return { ok: false, reason: `${request.host} is not a host this page knows` };
  const authority = sync.authority();
  let threshold = 1;
  if (sync.orgRootKeys.length) {
    const allowed = mayIssueIntent(authority?.chain ?? [], signer.publicKey, request.host, 'deploy');
    if (!allowed.ok) return allowed;
    threshold = allowed.threshold;
  }
  // The CLI's choice (shared/views/deploy-generation.ts): never a generation a rollout still holds.
  const read = await readRolloutsForDeploy(sync, apiOutbox);
  if (!read.ok) return read;
  const desiredHighest = highestGeneration(doc, request.host);
  const choice = chooseDeployGeneration({
    host: request.host,
    desiredHighest,
    pending: pendingPlacements(request.host, desiredHighest, read.rollouts, authority?.chain ?? [], Date.now()),
    canNameGeneration: false,
  });
  if (!choice.ok) return choice;
  const intent = intentSchema.parse(
    draftIntent({
      host: request.host,
      closure: request.closure,
      action: request.action,
      generation: choice.generation,
      validForMs: request.validForMs,
      issuer: signer.name,
      policyVersion: authority?.chain.at(-1)?.version,
      now: Date.now(),
    }),
  );
  const signature = await signer.sign('intent', intent);
  const signed: SignedIntent = { intent, signatures: [signature] };
  if (!verifyPayloadSignature('intent', intent, signature))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was stored` };
  if (authority) {
    const verdict = verifyIntentUnderPolicy(signed, { host: request.host, chain: authority.chain, now: Date.now() });
    // A host that needs k admins: this signature must count as the first of them; the rest of
    // the check is the agents' (binding, time) and the intent waits for co-signers.
    const waitsForCoSigners = !verdict.ok && verdict.code === 'below-threshold' && threshold > 1;
    if (!verdict.ok && !waitsForCoSigners)
      return { ok: false, reason: `agents would refuse this intent (${verdict.reason}); nothing was stored` };
  }
  return { ok: true, entry: await outbox.add(kind, signed) };
}

// Co-signs the newest intent of a host whose group needs several admins, as `outpost approve`
// does (shared/views/co-sign.ts): the same content, judged under the walked policy first, a
// signature only if it would count, and the envelope checked again before it is stored.
export async function approve(
  host: string,
  generation: number,
  sync: FleetSync,
  outbox: Outbox,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  const doc = sync.desiredDoc(host);
  const chain = sync.authority()?.chain ?? [];
  const current = chain.at(-1);
  if (!doc) return { ok: false, reason: `${host} is not a host this page knows` };
  if (!current)
    return {
      ok: false,
      reason:
        'no fleet policy signed by the pinned org root is known: who signed cannot be checked, so nothing is approved',
    };
  const found = findProposal(readIntentEntries(doc).entries, host, chain, { generation, now: Date.now() });
  if (!found.ok) return found;
  const allowed = mayApprove(current, signer.publicKey, host);
  if (!allowed.ok) return { ok: false, reason: `${allowed.reason}; nothing was signed` };
  if (alreadySigned(found, signer.publicKey)) return { ok: false, reason: 'you have already signed it; nothing to do' };
  const signed = coSignedIntent(found, await signer.sign('intent', found.intent));
  const after = intentCoSigning(found.intent, signed.signatures, chain);
  if ('error' in after || !after.tally.counted.some((s) => s.publicKey === signer.publicKey))
    return {
      ok: false,
      reason: `your signature does not count after all (${'error' in after ? after.error : after.tally.problems.join('; ')}); nothing was stored`,
    };
  return { ok: true, entry: await outbox.add('approve', signed) };
}

export function deploy(
  request: DeployRequest,
  sync: FleetSync,
  outboxes: Outboxes,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  const closure = storePathSchema.safeParse(request.closure.trim());
  if (!closure.success) return Promise.resolve({ ok: false, reason: `closure: ${closure.error.issues[0]?.message}` });
  return signAndQueue('deploy', { ...request, closure: closure.data }, sync, outboxes, signer);
}

// The closure comes from the host's own results, counted only when signed by its enrolled key: so
// without a pinned org root the page does not choose one (a relay could pick what is signed).
export function rollback(
  view: HostView,
  options: { action: ActivationAction; validForMs: number },
  sync: FleetSync,
  outboxes: Outboxes,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  if (view.hostKeys !== 'enrollment')
    return Promise.resolve({
      ok: false,
      reason: `pin the org root key first: only results signed by ${view.host}'s enrolled key may choose the closure you sign`,
    });
  const target = chooseRollbackTarget(view);
  if (!target.ok) return Promise.resolve(target);
  return signAndQueue(
    'rollback',
    { host: view.host, closure: target.closure, action: options.action, validForMs: options.validForMs },
    sync,
    outboxes,
    signer,
  );
}

// A rollout aborted with rollback: an intent back to the closure `abortRollbackTargets` chose from
// the host's own signed results (shared/views/rollout-actions.ts, the CLI's choice), signed and
// queued like any rollback (offline too).
export function rollbackTo(
  host: string,
  closure: string,
  options: { action: ActivationAction; validForMs: number },
  sync: FleetSync,
  outboxes: Outboxes,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  if (!sync.orgRootKeys.length)
    return Promise.resolve({
      ok: false,
      reason: `pin the org root key first: only results signed by ${host}'s enrolled key may choose the closure you sign`,
    });
  return signAndQueue('rollback', { host, closure, ...options }, sync, outboxes, signer);
}
