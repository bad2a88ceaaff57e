import type { PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { verifyPayloadSignature } from '../../../shared/crypto/signatures.js';
import { appendAction } from '../../../shared/documents/desired.js';
import {
  ACTION_CAPABILITY,
  type ActionKind,
  type ActionRequest,
  actionRequestSchema,
  type SignedAction,
} from '../../../shared/schemas/action.js';
import { adminForKey, capabilitiesFor } from '../../../shared/trust/capabilities.js';
import { verifyAction } from '../../../shared/trust/verify-action.js';
import type { FleetSync } from './fleet-sync.js';

// Remote actions from the host page (docs/access.md, "Remote actions"): checked against the
// policy before anything is signed, signed over the CLI's canonical bytes, checked again as the
// agent will check it, then appended to the host's desired document (stored in this browser and
// delivered now, or when the link returns). The host's signed answer shows in the host view.
export type RemoteActionOutcome = { ok: true; request: ActionRequest; live: boolean } | { ok: false; reason: string };

export interface RemoteActionRequest {
  host: string;
  action: ActionKind;
  force?: boolean;
  reason?: string;
  validForMs: number;
}

function randomId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
}

export async function requestAction(
  request: RemoteActionRequest,
  sync: FleetSync,
  signer: PayloadSigner,
): Promise<RemoteActionOutcome> {
  const doc = sync.desiredDoc(request.host);
  if (!doc) return { ok: false, reason: `${request.host} is not a host this page knows` };
  const chain = sync.authority()?.chain ?? [];
  const current = chain.at(-1);
  const capability = ACTION_CAPABILITY[request.action];
  if (sync.orgRootKeys.length) {
    if (!current) return { ok: false, reason: 'no fleet policy signed by the pinned org root is known yet' };
    const admin = adminForKey(current, signer.publicKey);
    if (!admin || !capabilitiesFor(current, admin, request.host).has(capability))
      return {
        ok: false,
        reason: `your key has no '${capability}' on ${request.host} under policy version ${current.version}; nothing was signed`,
      };
  }
  const now = Date.now();
  const parsed = actionRequestSchema.safeParse({
    kind: 'action',
    action: request.action,
    host: request.host,
    id: randomId(),
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + request.validForMs).toISOString(),
    issuer: signer.name,
    ...(request.force ? { force: true } : {}),
    ...(request.reason?.trim() ? { reason: request.reason.trim().slice(0, 500) } : {}),
    ...(current ? { policyVersion: current.version } : {}),
  });
  if (!parsed.success) return { ok: false, reason: parsed.error.issues[0]?.message ?? 'invalid request' };
  const signature = await signer.sign('action', parsed.data);
  if (!verifyPayloadSignature('action', parsed.data, signature))
    return { ok: false, reason: `the ${signer.engine} signature does not verify; nothing was stored` };
  const signed: SignedAction = { request: parsed.data, signatures: [signature] };
  if (current) {
    const verdict = verifyAction(signed, { host: request.host, now, chain, mode: 'policy' });
    if (!verdict.ok)
      return {
        ok: false,
        reason: `the agent would refuse it (${verdict.code}: ${verdict.reason}); nothing was stored`,
      };
  }
  appendAction(doc, signed);
  return { ok: true, request: parsed.data, live: sync.desiredLive(request.host) };
}
