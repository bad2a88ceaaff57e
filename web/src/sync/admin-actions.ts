import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { verifyPayloadSignature } from '../../../shared/crypto/signatures.js';
import { readEnrollRequests } from '../../../shared/documents/fleet.js';
import { type RolloutEntries, readRolloutEntries, rolloutDocName } from '../../../shared/rollout/document.js';
import { findPlan } from '../../../shared/rollout/judge.js';
import { planDigest } from '../../../shared/rollout/plan.js';
import type { ActionVerb, PlanCosignature, RolloutPlan, SignedRolloutAction } from '../../../shared/rollout/schemas.js';
import { actionAuthority, planSignersForHost, verifiedPlanKeys } from '../../../shared/rollout/verify.js';
import type { Policy, SignedEnrollment } from '../../../shared/schemas/policy.js';
import { adminForKey } from '../../../shared/trust/capabilities.js';
import { verifyEnrollment } from '../../../shared/trust/enrollment.js';
import { draftEnrollment, mayEnroll } from '../../../shared/views/enrollment-view.js';
import {
  actionHosts,
  draftRolloutAction,
  judgedPauseAndAbort,
  mayActOnRollout,
  pauseResumeOutcome,
} from '../../../shared/views/rollout-actions.js';
import { type ApiOutbox, type NewApiOutboxEntry, postSigned } from './api-outbox.js';
import type { FleetSync } from './fleet-sync.js';

// Rollout actions, plan co-signatures and enrollment approvals from the page: checked against the
// policy walked from the pinned root before anything is signed, signed over the CLI's bytes in the
// browser, checked again as readers will, then handed to the server the way the CLI hands them
// (POST /api/rollouts, /api/enroll/approve; the server checks them once more before storing).
// Rollout actions, plan co-signatures and enrollment approvals go through the outbox
// (api-outbox.ts): signed with no link they wait in this browser, marked not yet delivered, and
// are sent when it returns.
export type AdminOutcome = { ok: true; message: string } | { ok: false; reason: string };

export async function postToServer(sync: FleetSync, path: string, body: unknown, what: string): Promise<AdminOutcome> {
  if (!navigator.onLine)
    return { ok: false, reason: `offline: ${what} goes to the server's API and needs the link; nothing was sent` };
  const outcome = await postSigned(sync.serverUrl, path, body);
  if (outcome.kind === 'stored') return { ok: true, message: `${what}: stored by the server` };
  return outcome.kind === 'refused'
    ? { ok: false, reason: `the server refused ${what}: ${outcome.reason}` }
    : { ok: false, reason: `${outcome.reason}; ${what} was not sent` };
}

// Kept in the outbox, then one delivery attempt: stored now, refused, or waiting for the link.
export async function sendThroughOutbox(outbox: ApiOutbox, entry: NewApiOutboxEntry): Promise<AdminOutcome> {
  const kept = await outbox.add(entry);
  if (kept.refused !== null) return { ok: false, reason: `the server refused ${entry.what}: ${kept.refused}` };
  if (kept.deliveredAt !== null) return { ok: true, message: `${entry.what}: stored by the server` };
  return {
    ok: true,
    message: `${entry.what}: signed — not yet delivered (no link): it waits in this browser and is sent when the link returns`,
  };
}

function policyOrRefusal(sync: FleetSync) {
  const chain = sync.authority()?.chain ?? [];
  const policy = chain.at(-1);
  return policy
    ? { ok: true as const, chain, policy }
    : {
        ok: false as const,
        reason: 'no fleet policy signed by the pinned org root is known: pin the org root and connect once',
      };
}

// approve (a wave's start), pause, resume or abort: `outpost rollout <verb>`'s signed action.
export async function rolloutAction(
  sync: FleetSync,
  signer: PayloadSigner,
  plan: RolloutPlan,
  entries: RolloutEntries,
  verb: ActionVerb,
  outbox: ApiOutbox,
  extra: { wave?: number; reason?: string } = {},
): Promise<AdminOutcome> {
  const known = policyOrRefusal(sync);
  if (!known.ok) return known;
  const allowed = mayActOnRollout(known.policy, signer.publicKey, plan, verb, extra.wave);
  if (!allowed.ok) return allowed;
  const action = draftRolloutAction(plan, entries, verb, allowed.admin, Date.now(), extra);
  const signed = { action, signature: await signer.sign('rollout-action', action) };
  const verdict = actionAuthority(known.chain, () => actionHosts(plan, verb, extra.wave))(signed);
  if (!verdict.ok) return { ok: false, reason: `agents would not count it (${verdict.reason}); nothing was sent` };
  const what = verb === 'approve' ? `the approval of wave ${extra.wave} of ${plan.id}` : `the ${verb} of ${plan.id}`;
  const sent = await sendThroughOutbox(outbox, { kind: 'rollout-action', signed, what });
  const delivered = outbox
    .rolloutActions(plan.id)
    .some((p) => p.signed.signature.signature === signed.signature.signature && p.deliveredAt !== null);
  if (!sent.ok || (verb !== 'pause' && verb !== 'resume') || !delivered) return sent;
  return readBack(sync, plan, signed, verb, known.chain, what);
}

const READ_BACK_MS = 10_000;

// Like `outpost rollout pause|resume`: once the server stored the action, the page waits until its
// copy of the rollout document holds it and says what the document decides (another admin's
// action signed at the same moment may), not what this page meant.
async function readBack(
  sync: FleetSync,
  plan: RolloutPlan,
  signed: SignedRolloutAction,
  verb: 'pause' | 'resume',
  chain: Policy[],
  what: string,
): Promise<AdminOutcome> {
  const doc = sync.fleetDocument(rolloutDocName(plan.id));
  const held = (): SignedRolloutAction[] | null => {
    const { actions } = readRolloutEntries(doc, { arrays: new Set(['actions']) });
    return actions.some((a) => a.signature.signature === signed.signature.signature) ? actions : null;
  };
  const deadline = Date.now() + READ_BACK_MS;
  let actions = held();
  while (!actions && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    actions = held();
  }
  if (!actions)
    return {
      ok: true,
      message: `${what}: stored by the server; not in this page's copy of the rollout yet, so whether it decides is not known: watch the state above`,
    };
  const outcome = pauseResumeOutcome(
    plan.id,
    verb,
    judgedPauseAndAbort(plan, actions, chain),
    `${verb === 'pause' ? 'Pause' : 'Resume'} again`,
  );
  return outcome.decided
    ? {
        ok: true,
        message: `${what}: stored by the server; the rollout is ${verb === 'pause' ? 'paused' : 'running again'}`,
      }
    : { ok: false, reason: outcome.reason };
}

// `outpost rollout approve ID` without --wave: this admin's signature on the plan itself, for
// hosts whose groups need several admins.
export async function cosignRolloutPlan(
  sync: FleetSync,
  signer: PayloadSigner,
  plan: RolloutPlan,
  entries: RolloutEntries,
  outbox: ApiOutbox,
): Promise<AdminOutcome> {
  const known = policyOrRefusal(sync);
  if (!known.ok) return known;
  const admin = adminForKey(known.policy, signer.publicKey);
  if (!admin) return { ok: false, reason: `this key is not an admin key under policy ${known.policy.version}` };
  const digest = planDigest(plan);
  const signedPlan = findPlan(entries, digest);
  if (!signedPlan) return { ok: false, reason: `rollout ${plan.id}: no plan signed by its issuer here` };
  const before = verifiedPlanKeys(signedPlan, digest, entries.cosignatures);
  if (before.includes(signer.publicKey)) return { ok: false, reason: 'you have already signed this plan' };
  const cosignature: PlanCosignature = { plan: digest, signature: await signer.sign('rollout-plan', plan) };
  if (!verifyPayloadSignature('rollout-plan', plan, cosignature.signature))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was sent` };
  const keys = [...before, signer.publicKey];
  const stillShort = plan.waves
    .flatMap((w) => w.hosts)
    .filter((h) => !planSignersForHost(plan, keys, known.chain, h.host).ok).length;
  const outcome = await sendThroughOutbox(outbox, {
    kind: 'rollout-cosignature',
    rollout: plan.id,
    signed: cosignature,
    what: `your signature on ${plan.id}`,
  });
  return outcome.ok && stillShort
    ? { ok: true, message: `${outcome.message}; ${stillShort} hosts still need more signatures` }
    : outcome;
}

// `outpost enroll approve`: binds `host` to the key its pending request proved.
export async function approveEnrollment(
  sync: FleetSync,
  signer: PayloadSigner,
  outbox: ApiOutbox,
  request: { host: string; hostKey: string },
): Promise<AdminOutcome> {
  const known = policyOrRefusal(sync);
  if (!known.ok) return known;
  const allowed = mayEnroll(known.policy, signer.publicKey, request.host);
  if (!allowed.ok) return allowed;
  // What is approved must be a request the page holds and checked, not a key typed elsewhere.
  const proven = readEnrollRequests(sync.fleetDocument('fleet/enrollment')).some(
    (r) =>
      r.request.host === request.host &&
      r.request.hostKey === request.hostKey &&
      r.signature.publicKey === r.request.hostKey &&
      verifyPayloadSignature('enroll-request', r.request, r.signature),
  );
  if (!proven)
    return { ok: false, reason: `no request from ${request.host} proving key ${request.hostKey} is held here` };
  const enrollment = draftEnrollment(
    { host: request.host, hostKey: request.hostKey, policyVersion: known.policy.version },
    new Date(),
  );
  const signed: SignedEnrollment = { enrollment, signatures: [await signer.sign('enrollment', enrollment)] };
  const verdict = verifyEnrollment(signed, known.policy);
  if (!verdict.ok) return { ok: false, reason: `${verdict.reason}; nothing was sent` };
  return sendThroughOutbox(outbox, { kind: 'enrollment', signed, what: `the enrollment of ${request.host}` });
}
