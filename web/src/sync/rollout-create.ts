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
import { type AdminOutcome, postToServer, sendThroughOutbox } from './admin-actions.js';
import type { ApiOutbox } from './api-outbox.js';
import type { FleetSync } from './fleet-sync.js';

// `outpost rollout create` from the page: the same manifest, wave and gate specs, refusals and
// plan (shared/views/rollout-draft.ts), previewed before it is signed, signed in the browser over
// the CLI's bytes, checked again, then POSTed to /api/rollouts as the CLI does.
//
// With no link the plan is made from the documents this browser stored (the policy walked from
// the pinned root, fleet/enrollment, each host's desired document, the rollouts it followed) and
// waits in the API outbox, NOT YET DELIVERED, until the link returns. What a stale view can get
// wrong is re-checked where the live documents are: the plan fixes each host's next generation,
// and a deploy or rollout made meanwhile may have taken it (the host would refuse both intents
// as an equivocation), so the coordinator refuses a new plan naming a generation its documents
// already hold (coordinator/rollouts.ts, takenGenerations); hosts enrolled since are simply not
// in the plan; a policy that moved is judged by the coordinator as for any plan. With a link,
// only live copies are used, as before: a plan is never made from a stale view while a fresh one
// is a moment away.
const NOT_READ_YET =
  "not read from the server yet (the link is up, and the plan's generations must come from the server's current documents); try again in a moment (nothing was signed)";

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
  // Planned with no link, from this browser's stored documents: when they were last live (null:
  // never while this browser watched).
  offline: { asOf: number | null } | null;
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

// Whether the page has a link to the server at all (some document live). Without one, plans are
// made from stored copies; with one, only from live copies.
export function hasLink(sync: FleetSync): boolean {
  return navigator.onLine && sync.connections().live > 0;
}

// The highest generation issued to the host: in its desired document (live, or stored when there
// is no link: checked by the caller), in every rollout this page follows (a later wave's intents
// are not delivered yet) and in plans signed here that wait for the link.
function highestIssued(
  sync: FleetSync,
  rolloutIds: readonly string[],
  waitingPlans: readonly RolloutPlan[],
): (host: string) => number {
  const inRollouts = new Map<string, number>();
  const plans = [
    ...rolloutIds.flatMap((id) => readRolloutEntries(sync.fleetDocument(rolloutDocName(id))).plans.map((p) => p.plan)),
    ...waitingPlans,
  ];
  for (const plan of plans)
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
  waitingPlans: readonly RolloutPlan[] = [],
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
  // The generations come from the hosts' documents as this page holds them: with a link only a
  // live copy says which generation is next; with none, the stored copy is the best this browser
  // has (the coordinator refuses the plan if one was taken since).
  const offline = !hasLink(sync);
  const list = (names: string[]): string =>
    `${names.slice(0, 5).join(', ')}${names.length > 5 ? ` and ${names.length - 5} more` : ''}`;
  if (offline) {
    const unstored = hosts.filter((h) => !sync.desiredLoaded(h));
    if (unstored.length)
      return {
        ok: false,
        reason: `${list(unstored)}: this browser holds no copy of the host's documents, so its next generation is unknown with no link; plan it once connected (nothing was signed)`,
      };
  } else {
    const stale = hosts.filter((h) => !sync.desiredLive(h));
    if (stale.length) return { ok: false, reason: `${list(stale)}: ${NOT_READ_YET}` };
    // A later wave's intents are in its rollout document only: each must be read in full first.
    const unread = rolloutIds.filter((id) => !sync.fleetDocumentLive(rolloutDocName(id)));
    if (unread.length)
      return {
        ok: false,
        reason: `rollout ${unread[0]}${unread.length > 1 ? ` and ${unread.length - 1} more` : ''} not read from the server yet (their generations count); try again in a moment (nothing was signed)`,
      };
  }
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
    highest: highestIssued(sync, rolloutIds, waitingPlans),
  });
  return {
    ok: true,
    preview: {
      plan,
      planned: planned.value,
      needs: planSignatureNeeds(plan, [publicKey], authority.chain),
      offline: offline ? { asOf: sync.lastLiveAt } : null,
    },
  };
}

// Signs exactly the previewed plan, after checking again that this key may (the policy may have
// moved since the preview), and hands it to the server: at once with a link, else through the API
// outbox (kept in IndexedDB, NOT YET DELIVERED, POSTed when the link returns).
export async function createRollout(
  sync: FleetSync,
  signer: PayloadSigner,
  outbox: ApiOutbox,
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
  const link = hasLink(sync);
  // Planned from stored copies, but the live ones are there now: plan again from them.
  if (preview.offline && link)
    return {
      ok: false,
      reason: 'the link is back: show the plan again, so that it is made from the live documents (nothing was signed)',
    };
  const signed: SignedPlan = signedPlanSchema.parse({ plan, signature: await signer.sign('rollout-plan', plan) });
  if (!planSignatureValid(signed))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was sent` };
  const what = `rollout ${plan.id}`;
  const outcome = link
    ? await postToServer(sync, '/api/rollouts', { plan: signed }, what)
    : await sendThroughOutbox(outbox, {
        kind: 'rollout-plan',
        signed,
        plannedFrom: preview.offline?.asOf ?? sync.lastLiveAt,
        what,
      });
  if (!outcome.ok) return outcome;
  return {
    ok: true,
    message: `${outcome.message} (plan ${planDigest(plan).slice(0, 12)}…)${preview.needs.length ? `; ${preview.needs.length} hosts need more signatures: another admin co-signs the plan` : ''}`,
  };
}
