import { z } from 'zod';
import {
  ROLLOUT_DOC_PREFIX,
  type RolloutEntries,
  readRolloutEntries,
  rolloutDocName,
} from '../../../shared/rollout/document.js';
import { withPendingEntries } from '../../../shared/views/rollout-actions.js';
import { idbGet, idbPut } from '../storage/idb.js';
import type { ApiOutbox } from './api-outbox.js';
import type { FleetSync } from './fleet-sync.js';
import { hasLink } from './rollout-create.js';

const documentsSchema = z.object({ documents: z.array(z.string()).max(100_000) });
const idListSchema = z.array(z.string()).max(1_000);
// Rollouts shown (and documents followed) at most; the newest ids sort last.
export const MAX_ROLLOUTS = 200;

// The rollout ids the server lists, remembered in IndexedDB so the list is there offline; the
// stored list with no link; null when neither is known.
export async function listRolloutIds(sync: FleetSync): Promise<string[] | null> {
  const storeKey = `rollouts ${sync.serverUrl}`;
  const listed = await sync.getJson('/api/documents', documentsSchema);
  if (listed) {
    const fresh = listed.documents
      .filter((d) => d.startsWith(ROLLOUT_DOC_PREFIX))
      .map((d) => d.slice(ROLLOUT_DOC_PREFIX.length))
      .sort()
      .slice(-MAX_ROLLOUTS);
    await idbPut('settings', storeKey, fresh);
    return fresh;
  }
  const saved = idListSchema.safeParse(await idbGet('settings', storeKey));
  return saved.success ? saved.data : null;
}

export type RolloutsRead =
  | { ok: true; rollouts: { id: string; entries: RolloutEntries }[] }
  | { ok: false; reason: string };

const LIVE_WAIT_MS = 5000;

// Every rollout this page can know of, for a deploy's generation (shared/views/deploy-generation.ts):
// the server's, each read live when there is a link (a later wave's generation is in its document
// only), with the actions and plans this page signed that wait in the API outbox (an abort not
// delivered yet counts: the rollout writes no more).
export async function readRolloutsForDeploy(sync: FleetSync, apiOutbox: ApiOutbox): Promise<RolloutsRead> {
  const ids = (await listRolloutIds(sync)) ?? [];
  const waitingPlans = apiOutbox.rolloutPlans().filter((p) => !ids.includes(p.signed.plan.id));
  if (hasLink(sync)) {
    const deadline = Date.now() + LIVE_WAIT_MS;
    const unread = (): string[] => ids.filter((id) => !sync.fleetDocumentLive(rolloutDocName(id)));
    for (const id of ids) sync.fleetDocument(rolloutDocName(id));
    while (unread().length && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
    const left = unread();
    if (left.length)
      return {
        ok: false,
        reason: `rollout ${left[0]}${left.length > 1 ? ` and ${left.length - 1} more` : ''} not read from the server yet (the generations it holds for its hosts count); try again in a moment (nothing was signed)`,
      };
  }
  const pending = (id: string) => ({
    actions: apiOutbox.rolloutActions(id).map((p) => p.signed),
    cosignatures: apiOutbox.rolloutCosignatures(id).map((p) => p.signed),
  });
  return {
    ok: true,
    rollouts: [
      ...ids.map((id) => ({
        id,
        entries: withPendingEntries(readRolloutEntries(sync.fleetDocument(rolloutDocName(id))), pending(id)),
      })),
      ...waitingPlans.map((p) => ({
        id: p.signed.plan.id,
        entries: withPendingEntries(
          { plans: [p.signed], cosignatures: [], actions: [], evidence: [], malformed: [] },
          pending(p.signed.plan.id),
        ),
      })),
    ],
  };
}
