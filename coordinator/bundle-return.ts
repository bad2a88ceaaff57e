import type { IncomingMessage, ServerResponse } from 'node:http';
import { MAX_RETURN_BUNDLE_BYTES, RETURN_BUNDLE_PATH, returnBundleSigner } from '../shared/bundle/format.js';
import { itemsFirst } from '../shared/documents/history-forward.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { readBundleStream } from '../shared/node/bundle-file.js';
import { AUTH_HEADERS, verifyAuthProof } from '../shared/sync/auth-proof.js';
import { adminForKey, capabilitiesFor } from '../shared/trust/capabilities.js';
import type { ChallengeStore } from './challenges.js';
import { type DocumentHost, withPinned } from './hosted-documents.js';
import { headerOf, proofFromHeaders, respondJson } from './http-guard.js';
import type { Refusals, WriteLimits } from './limits.js';
import type { Principal, TrustState } from './trust-state.js';
import { isServedDocument } from './wire.js';

// POST /api/bundle/return (issue 16, docs/sneakernet.md): a site's return bundle applied into this
// running coordinator. Nothing in it is trusted beyond what readers verify anyway, and it writes
// nowhere its maker may not write over the relay link:
// - the caller proves an admin key (the challenge headers, signed for this path); the admin must
//   hold `deploy` on each host whose status it brings (the courier of a site's results is one who
//   may act on those hosts; `read` alone writes nothing);
// - the manifest (which names every entry's SHA-256) is signed by a relay key of the policy in
//   force, checked before any entry is read;
// - only hosts/<id>/status documents in that relay's scope, each through the same write checks as
//   the relay link (value shape, update size, the relay's per-document quota, document size);
// - the whole body is read and every hash checked before anything is applied (bounded:
//   MAX_RETURN_BUNDLE_BYTES, one bundle at a time).
// Applying is idempotent: what the document holds already is "had".

export { RETURN_BUNDLE_PATH };
// The capability an admin needs on each host whose status a return bundle brings.
export const RETURN_BUNDLE_CAPABILITY = 'deploy';

export type ReturnOutcome = { name: string; outcome: 'changed' | 'had' | 'refused'; reason?: string };

export interface ReturnBundleContext {
  host: DocumentHost;
  trust: TrustState;
  challenges: ChallengeStore;
  writeLimits: WriteLimits;
  refusals: Refusals;
  logger: Logger;
}

type Refusal = { status: number; error: string };

export function createReturnBundleEndpoint(context: ReturnBundleContext) {
  const { host, trust, challenges, writeLimits, refusals, logger } = context;
  let busy = false;

  // The admin behind the request (null in open mode, where everyone may write everything).
  function caller(req: IncomingMessage): { admin: Principal | null } | Refusal {
    if (!trust.enforced) return { admin: null };
    const parsed = proofFromHeaders(req);
    const fix = `GET /auth/challenge, sign it for ${RETURN_BUNDLE_PATH} and send ${Object.values(AUTH_HEADERS).join(', ')} (outpost bundle apply --key KEYFILE does this)`;
    if (!parsed.success) return { status: 401, error: `${RETURN_BUNDLE_PATH} needs an admin key proof: ${fix}` };
    if (!challenges.consume(parsed.data.challenge))
      return { status: 401, error: `unknown, used or expired challenge: ${fix}` };
    if (!verifyAuthProof(parsed.data, RETURN_BUNDLE_PATH))
      return { status: 401, error: `key proof signature does not verify for ${RETURN_BUNDLE_PATH}: ${fix}` };
    const principal = trust.principalForKey(parsed.data.principal);
    if (principal.kind !== 'admin')
      return { status: 403, error: `${principal.label} may not apply return bundles: only admins of the policy may` };
    return { admin: principal };
  }

  // The relay that signed the manifest, judged before any entry is read.
  function signerProblem(manifest: Parameters<typeof returnBundleSigner>[0]): { relay: Principal } | Refusal {
    const signer = returnBundleSigner(manifest);
    if (!signer.ok) {
      // Open mode has no policy to name relays: an unsigned return bundle is taken as any write is.
      if (!trust.enforced && manifest.direction === 'return' && !manifest.signature)
        return { relay: { kind: 'anonymous', label: 'unsigned' } };
      return { status: 400, error: `refused: ${signer.reason}` };
    }
    const principal = trust.principalForKey(signer.signature.publicKey);
    if (trust.enforced && principal.kind !== 'relay')
      return {
        status: 403,
        error: `refused: the bundle is signed by ${principal.label}, which is not a relay of policy version ${trust.policy()?.version ?? 'none'}; only a site relay's key makes return bundles`,
      };
    return { relay: principal };
  }

  // Why this document may not be written from this bundle, or null.
  function documentProblem(name: string, relay: Principal, admin: Principal | null): string | null {
    const parsed = parseDocName(name);
    if (!isServedDocument(name) || parsed?.role !== 'status')
      return 'a return bundle carries only hosts/<id>/status documents';
    if (!trust.enforced) return null;
    if (trust.access(relay, name) !== 'write')
      return `${name} is outside the scope of ${relay.label} under policy version ${trust.policy()?.version}`;
    const policy = trust.policy();
    const adminEntry = admin?.kind === 'admin' && policy ? adminForKey(policy, admin.key) : null;
    if (!policy || !adminEntry || !capabilitiesFor(policy, adminEntry, parsed.host).has(RETURN_BUNDLE_CAPABILITY))
      return `${admin?.label ?? 'the caller'} has no role granting ${RETURN_BUNDLE_CAPABILITY} on ${parsed.host}; an admin who may deploy to ${parsed.host} applies its return bundle`;
    return null;
  }

  async function applyOne(name: string, update: Uint8Array, relay: Principal, admin: Principal | null) {
    return withPinned(host, name, (document) =>
      document.run(async (): Promise<ReturnOutcome> => {
        // The relay link's writer: the relay and the document (a relay carries many hosts' writes).
        const writer = `${relay.label} ${name}`;
        const refusal = writeLimits.check(document, update, writer);
        if (refusal) {
          writeLimits.report(refusal, { document: name, principal: relay.label, writer });
          return { name, outcome: 'refused', reason: refusal.reason };
        }
        const principal = `bundle:${relay.label}${admin ? ` via ${admin.label}` : ''}`;
        // Items first, then deletions: results the site's agents pruned after the site relay
        // logged them keep their content in this log (shared/documents/history-forward.ts).
        let added = 0;
        for (const part of itemsFirst(update)) {
          let delta: Uint8Array | null;
          try {
            delta = await host.acceptUpdate(document, part, principal, null);
          } catch (error) {
            if (document.broken) throw error;
            return { name, outcome: 'refused', reason: `malformed update: ${(error as Error).message}` };
          }
          added += delta?.length ?? 0;
        }
        if (!added) return { name, outcome: 'had' };
        writeLimits.charge(writer, added);
        return { name, outcome: 'changed' };
      }),
    );
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const who = caller(req);
    if ('error' in who) {
      refusals.apiUnauthenticated += 1;
      req.resume();
      respondJson(res, who.status, { error: who.error });
      return;
    }
    const declared = Number(headerOf(req, 'content-length') ?? 0);
    if (declared > MAX_RETURN_BUNDLE_BYTES) {
      req.resume();
      respondJson(res, 413, {
        error: `the body is ${declared} bytes, over the ${MAX_RETURN_BUNDLE_BYTES}-byte limit of a return bundle; make one per relay`,
      });
      return;
    }
    if (busy) {
      req.resume();
      res.setHeader('retry-after', '5');
      respondJson(res, 429, { error: 'another return bundle is being applied; try again in a few seconds' });
      return;
    }
    busy = true;
    try {
      // Set while the manifest is judged (before any entry is read).
      const judged: { relay: Principal | null; refusal: Refusal | null } = { relay: null, refusal: null };
      const updates = new Map<string, Uint8Array>();
      const read = await readBundleStream(
        req,
        {
          maxBytes: MAX_RETURN_BUNDLE_BYTES,
          onManifest: (manifest) => {
            const file = manifest.entries.find((e) => e.type === 'cache');
            if (file?.type === 'cache') {
              judged.refusal = {
                status: 400,
                error: `refused: it carries the cache file ${file.path}; a return bundle carries status documents only`,
              };
              return judged.refusal.error;
            }
            const signer = signerProblem(manifest);
            if ('error' in signer) {
              judged.refusal = signer;
              return signer.error;
            }
            judged.relay = signer.relay;
            return null;
          },
        },
        (entry) => {
          const chunks: Buffer[] = [];
          return {
            write: (chunk) => void chunks.push(Buffer.from(chunk)),
            end: () => void (entry.type === 'document' && updates.set(entry.name, Buffer.concat(chunks))),
          };
        },
      );
      const relay = judged.relay;
      if (!read.ok || relay === null) {
        const failed = judged.refusal;
        const status = failed?.status ?? (read.ok ? 400 : read.tooLarge ? 413 : 400);
        const error = failed?.error ?? `refused: ${read.ok ? 'no signer' : read.reason}`;
        logger.warn({ event: 'return-bundle-refused', reason: error }, 'refusing a return bundle');
        req.resume();
        respondJson(res, status, { error });
        return;
      }
      const signer: Principal = relay;
      const admin = who.admin;
      const documents: ReturnOutcome[] = [];
      for (const [name, update] of updates) {
        const problem = documentProblem(name, signer, admin);
        documents.push(
          problem ? { name, outcome: 'refused', reason: problem } : await applyOne(name, update, signer, admin),
        );
      }
      logger.info(
        {
          event: 'return-bundle-applied',
          relay: signer.label,
          admin: admin?.label ?? null,
          changed: documents.filter((d) => d.outcome === 'changed').length,
          had: documents.filter((d) => d.outcome === 'had').length,
          refused: documents.filter((d) => d.outcome === 'refused').map((d) => `${d.name}: ${d.reason}`),
        },
        'return bundle applied',
      );
      respondJson(res, 200, { ok: true, relay: signer.label, documents });
    } finally {
      busy = false;
    }
  }

  return {
    handle(req: IncomingMessage, res: ServerResponse): void {
      handle(req, res).catch((error: Error) => {
        logger.error({ event: 'return-bundle-failed', err: error }, 'applying a return bundle failed');
        respondJson(res, 500, {
          error: `the coordinator failed to apply the bundle (${error.message}); try again, and check its log`,
        });
      });
    },
  };
}
