import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { readRolloutEntries, rolloutDocName } from '../../../shared/rollout/document.js';
import { planDigest } from '../../../shared/rollout/plan.js';
import {
  type RolloutPlan,
  rolloutIdSchema,
  type SignedPlan,
  signedPlanSchema,
} from '../../../shared/rollout/schemas.js';
import { planSignatureValid } from '../../../shared/rollout/verify.js';
import type { ActivationAction } from '../../../shared/schemas/primitives.js';
import { highestGeneration } from '../../../shared/views/intent-draft.js';
import {
  buildRolloutPlan,
  mayCreateRollout,
  type PlannedRollout,
  parseReleaseManifest,
  planRollout,
  planSignatureNeeds,
  rolloutSlug,
} from '../../../shared/views/rollout-draft.js';
import { type AdminOutcome, postToServer } from './admin-actions.js';
import type { FleetSync } from './fleet-sync.js';

// `outpost rollout create` from the page: the same manifest, wave and gate specs, refusals and
// plan (shared/views/rollout-draft.ts), previewed before it is signed, signed in the browser over
// the CLI's bytes, checked again, then POSTed to /api/rollouts as the CLI does. The coordinator
// drives a rollout (it delivers each wave's intents when its gate opens), so creating one needs
// the link: offline the page says so and signs nothing.
//
// Why it must refuse rather than wait in the outbox like a pause: the page does hold the policy
// and an IndexedDB copy of fleet/enrollment it can verify, so the hosts' keys are known offline;
// but the plan fixes each host's next generation, and only the server's current documents say
// which generations are free. A deploy another admin made meanwhile would take the same number,
// the host would refuse both intents of that generation as an equivocation (selectIntent), and
// a signed plan cannot be amended: it would have to be signed again. So the page plans only from live copies.
const NEEDS_LINK =
  "the page has no live copy of the host's documents, and the plan fixes each host's next generation: only the server's current documents say which is free (a deploy another admin made meanwhile would take the same number, and the host would refuse both). Creating a rollout needs the link: fill in the form now, and show and sign the plan once connected (nothing was signed)";

export interface RolloutForm {
  manifestText: string;
  channel: string;
  // One `NAME=HOST,HOST,@GROUP` a line, one gate spec a line (the CLI's --wave and --gate).
  waves: string;
  gates: string;
  id: string;
  action: ActivationAction;
  expiresDays: number;
}

export interface RolloutPreview {
  plan: RolloutPlan;
  planned: PlannedRollout;
  // Hosts whose groups need more admins than this key: who else must co-sign the plan.
  needs: { host: string; reason: string }[];
}

export type PreviewOutcome = { ok: true; preview: RolloutPreview } | { ok: false; reason: string };

const lines = (text: string): string[] =>
  text
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);

function randomSuffix(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(3));
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

// The highest generation issued to the host: in its desired document (live: checked by the
// caller) and in every rollout this page follows (a later wave's intents are not delivered yet).
function highestIssued(sync: FleetSync, rolloutIds: readonly string[]): (host: string) => number {
  const inRollouts = new Map<string, number>();
  for (const id of rolloutIds)
    for (const { plan } of readRolloutEntries(sync.fleetDocument(rolloutDocName(id))).plans)
      for (const wave of plan.waves)
        for (const entry of wave.hosts)
          inRollouts.set(entry.host, Math.max(inRollouts.get(entry.host) ?? 0, entry.generation));
  return (host) => {
    const doc = sync.desiredDoc(host);
    return Math.max(inRollouts.get(host) ?? 0, doc ? highestGeneration(doc, host) : 0);
  };
}

// The plan this admin would sign, or why not; nothing is signed here.
export function previewRollout(
  sync: FleetSync,
  publicKey: string,
  form: RolloutForm,
  rolloutIds: readonly string[],
  now: number,
): PreviewOutcome {
  const authority = sync.authority();
  const policy = authority?.chain.at(-1);
  if (!authority || !policy)
    return {
      ok: false,
      reason: 'no fleet policy signed by the pinned org root is known: pin the org root and connect once',
    };
  const manifest = parseReleaseManifest(form.manifestText, 'the release manifest');
  if (!manifest.ok) return manifest;
  const id = form.id.trim() || `${rolloutSlug(manifest.value.release)}-${randomSuffix()}`;
  const checkedId = rolloutIdSchema.safeParse(id);
  if (!checkedId.success)
    return { ok: false, reason: `rollout id ${JSON.stringify(id)}: ${checkedId.error.issues[0]?.message}` };
  if (!Number.isFinite(form.expiresDays) || form.expiresDays <= 0 || form.expiresDays > 365)
    return { ok: false, reason: 'valid for: 1 to 365 days' };
  const planned = planRollout(policy, {
    manifest: manifest.value,
    ...(form.channel ? { channel: form.channel } : {}),
    waves: lines(form.waves),
    gates: lines(form.gates),
  });
  if (!planned.ok) return planned;
  const hosts = planned.value.waves.flatMap((w) => w.hosts);
  const enrolled = (host: string): string | undefined => authority.bindings.get(host)?.hostKey;
  const allowed = mayCreateRollout(policy, publicKey, hosts, enrolled);
  if (!allowed.ok) return { ok: false, reason: `${allowed.reason}; nothing was signed` };
  // The generations come from the hosts' documents as this page holds them: only a live copy
  // says which generation is next.
  const stale = hosts.filter((h) => !sync.desiredLive(h));
  if (stale.length)
    return {
      ok: false,
      reason: `${stale.slice(0, 5).join(', ')}${stale.length > 5 ? ` and ${stale.length - 5} more` : ''}: ${NEEDS_LINK}`,
    };
  // A later wave's intents are in its rollout document only: each must be read in full first.
  const unread = rolloutIds.filter((id) => !sync.fleetDocumentLive(rolloutDocName(id)));
  if (unread.length)
    return {
      ok: false,
      reason: `rollout ${unread[0]}${unread.length > 1 ? ` and ${unread.length - 1} more` : ''} not read from the server yet (their generations count); try again in a moment (nothing was signed)`,
    };
  const plan = buildRolloutPlan({
    id: checkedId.data,
    manifest: manifest.value,
    ...(form.channel ? { channel: form.channel } : {}),
    action: form.action,
    issuer: allowed.value.admin,
    issuerKey: publicKey,
    policyVersion: policy.version,
    now,
    expiresInSeconds: Math.round(form.expiresDays * 86_400),
    planned: planned.value,
    enrolled,
    highest: highestIssued(sync, rolloutIds),
  });
  return {
    ok: true,
    preview: { plan, planned: planned.value, needs: planSignatureNeeds(plan, [publicKey], authority.chain) },
  };
}

// Signs exactly the previewed plan, after checking again that this key may (the policy may have
// moved since the preview), and hands it to the server.
export async function createRollout(
  sync: FleetSync,
  signer: PayloadSigner,
  preview: RolloutPreview,
): Promise<AdminOutcome> {
  const { plan } = preview;
  const authority = sync.authority();
  const policy = authority?.chain.at(-1);
  if (!authority || !policy) return { ok: false, reason: 'no fleet policy is known; nothing was signed' };
  if (policy.version !== plan.policyVersion)
    return { ok: false, reason: `the policy moved to version ${policy.version}: preview the plan again` };
  const hosts = plan.waves.flatMap((w) => w.hosts.map((h) => h.host));
  const allowed = mayCreateRollout(policy, signer.publicKey, hosts, (h) => authority.bindings.get(h)?.hostKey);
  if (!allowed.ok) return { ok: false, reason: `${allowed.reason}; nothing was signed` };
  if (!navigator.onLine)
    return {
      ok: false,
      reason: `offline: ${NEEDS_LINK}`,
    };
  const signed: SignedPlan = signedPlanSchema.parse({ plan, signature: await signer.sign('rollout-plan', plan) });
  if (!planSignatureValid(signed))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was sent` };
  const outcome = await postToServer(sync, '/api/rollouts', { plan: signed }, `rollout ${plan.id}`);
  if (!outcome.ok) return outcome;
  return {
    ok: true,
    message: `${outcome.message} (plan ${planDigest(plan).slice(0, 12)}…)${preview.needs.length ? `; ${preview.needs.length} hosts need more signatures: another admin co-signs the plan` : ''}`,
  };
}
