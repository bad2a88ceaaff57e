import { z } from 'zod';
import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { signatureSchema, verifyPayloadSignature } from '../../../shared/crypto/signatures.js';
import { type Policy, policySchema, type SignedPolicy, unknownPolicyFields } from '../../../shared/schemas/policy.js';
import { maySignPolicyDraft } from '../../../shared/views/policy-draft.js';
import { nextVersion } from '../../../shared/views/policy-edit.js';
import { idbGet, idbPut } from '../storage/idb.js';
import { type AdminOutcome, postToServer } from './admin-actions.js';
import type { FleetSync } from './fleet-sync.js';

// Policy drafts in the page: the next version, edited with the CLI's edits
// (shared/views/policy-edit.ts), kept in this browser's IndexedDB, signed here with a root key
// exactly as `outpost policy sign` signs (the 'policy' payload, canonical JSON), and pushed to
// /api/policy as `outpost policy push` does once enough root keys signed. The draft file is the
// CLI's format, so root holders can pass it between the page and `outpost policy sign`.

// The CLI's policy file (admin/policy-file.ts): signatures may be missing while it is a draft.
export const draftFileSchema = z.object({ policy: policySchema, signatures: z.array(signatureSchema).max(32) });
export type DraftFile = z.infer<typeof draftFileSchema>;

const MAX_DRAFT_CHARS = 4 * 1024 * 1024;
const storeKey = (sync: FleetSync): string => `policy-draft ${sync.serverUrl}`;

export function startDraft(current: Policy, now: Date): DraftFile {
  return { policy: nextVersion(current, now, false), signatures: [] };
}

export async function loadDraft(sync: FleetSync): Promise<DraftFile | null> {
  const parsed = draftFileSchema.safeParse(await idbGet('settings', storeKey(sync)));
  return parsed.success ? parsed.data : null;
}

export async function saveDraft(sync: FleetSync, draft: DraftFile | null): Promise<void> {
  await idbPut('settings', storeKey(sync), draft);
}

// A draft file another root holder signed (pasted or picked), read as `outpost policy sign` reads it.
export function readDraftText(text: string): { ok: true; draft: DraftFile } | { ok: false; reason: string } {
  if (text.length > MAX_DRAFT_CHARS) return { ok: false, reason: 'the draft file is larger than 4 MiB' };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, reason: `the draft file is not JSON (${(error as Error).message})` };
  }
  const parsed = draftFileSchema.safeParse(json);
  if (!parsed.success)
    return {
      ok: false,
      reason: `not a policy file: ${parsed.error.issues
        .slice(0, 4)
        .map((i) => `${i.path.join('.')}: ${i.message}`)
        .join('; ')}`,
    };
  const unknown = unknownPolicyFields(parsed.data.policy);
  if (unknown.length)
    return { ok: false, reason: `the draft has fields this outpost does not know: ${unknown.join(', ')}` };
  return { ok: true, draft: parsed.data };
}

// Adds this key's signature after checking it would count (a root key of the version in force or
// of the draft); then checks it verifies over the CLI's bytes.
export async function signDraft(
  sync: FleetSync,
  signer: PayloadSigner,
  draft: DraftFile,
): Promise<{ ok: true; draft: DraftFile } | { ok: false; reason: string }> {
  const current = sync.authority()?.chain.at(-1);
  if (!current) return { ok: false, reason: 'no policy signed by the pinned org root is known; nothing was signed' };
  const allowed = maySignPolicyDraft(current, draft, signer.publicKey);
  if (!allowed.ok) return allowed;
  const signature = await signer.sign('policy', draft.policy);
  if (!verifyPayloadSignature('policy', draft.policy, signature))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was kept` };
  return { ok: true, draft: { policy: draft.policy, signatures: [...draft.signatures, signature] } };
}

export function pushDraft(sync: FleetSync, draft: DraftFile): Promise<AdminOutcome> {
  const signed: SignedPolicy = draft;
  return postToServer(sync, '/api/policy', signed, `policy version ${draft.policy.version}`);
}
