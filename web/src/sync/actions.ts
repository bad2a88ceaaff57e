import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { verifyPayloadSignature } from '../../../shared/crypto/signatures.js';
import { intentSchema, type SignedIntent } from '../../../shared/schemas/intent.js';
import { type ActivationAction, storePathSchema } from '../../../shared/schemas/primitives.js';
import { verifyIntentUnderPolicy } from '../../../shared/trust/policy-intent.js';
import type { HostView } from '../../../shared/views/host-view.js';
import { draftIntent, highestGeneration, mayIssueIntent } from '../../../shared/views/intent-draft.js';
import { chooseRollbackTarget } from '../../../shared/views/rollback-target.js';
import type { FleetSync } from './fleet-sync.js';
import type { Outbox, OutboxEntry } from './outbox.js';

// Deploy and rollback from the page: checked against the policy before anything is signed, signed
// over the CLI's canonical bytes, checked again as an agent will check it, then kept in the outbox
// and appended to the host's document (delivered now, or when the link returns).
export type ActionOutcome = { ok: true; entry: OutboxEntry } | { ok: false; reason: string };

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
  outbox: Outbox,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  const doc = sync.desiredDoc(request.host);
  if (!doc) return { ok: false, reason: `${request.host} is not a host this page knows` };
  const authority = sync.authority();
  if (sync.orgRootKeys.length) {
    const allowed = mayIssueIntent(authority?.chain ?? [], signer.publicKey, request.host, 'deploy');
    if (!allowed.ok) return allowed;
  }
  const intent = intentSchema.parse(
    draftIntent({
      host: request.host,
      closure: request.closure,
      action: request.action,
      generation: highestGeneration(doc, request.host) + 1,
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
    if (!verdict.ok)
      return { ok: false, reason: `agents would refuse this intent (${verdict.reason}); nothing was stored` };
  }
  return { ok: true, entry: await outbox.add(kind, signed) };
}

export function deploy(
  request: DeployRequest,
  sync: FleetSync,
  outbox: Outbox,
  signer: PayloadSigner,
): Promise<ActionOutcome> {
  const closure = storePathSchema.safeParse(request.closure.trim());
  if (!closure.success) return Promise.resolve({ ok: false, reason: `closure: ${closure.error.issues[0]?.message}` });
  return signAndQueue('deploy', { ...request, closure: closure.data }, sync, outbox, signer);
}

// The closure comes from the host's own results, counted only when signed by its enrolled key: so
// without a pinned org root the page does not choose one (a relay could pick what is signed).
export function rollback(
  view: HostView,
  options: { action: ActivationAction; validForMs: number },
  sync: FleetSync,
  outbox: Outbox,
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
    outbox,
    signer,
  );
}
