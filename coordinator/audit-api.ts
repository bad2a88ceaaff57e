import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { z } from 'zod';
import {
  AUDIT_CHECKPOINTS_PATH,
  AUDIT_CHECKPOINTS_PROOF,
  AUDIT_HEADS_PATH,
  AUDIT_LOG_PATH,
  auditProofDocument,
  documentNameSchema,
  toWireEntry,
  type WireEntry,
} from '../shared/audit/bundle.js';
import type { CheckpointHeads } from '../shared/audit/checkpoint.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { isoTimeSchema } from '../shared/schemas/primitives.js';
import { AUTH_HEADERS, verifyAuthProof } from '../shared/sync/auth-proof.js';
import { adminForKey, mayAuditEveryHost, mayAuditHost } from '../shared/trust/capabilities.js';
import type { ChallengeStore } from './challenges.js';
import { proofFromHeaders, requestQuery, respondJson } from './http-guard.js';
import type { Principal, TrustState } from './trust-state.js';
import type { LogEntry, UpdateLog } from './update-log.js';

// Read-only audit endpoints: a document's raw log entries (NDJSON, one wire entry a line, in
// order) and the heads of the documents the caller may audit. With --org-root the caller proves an
// admin key with a single-use challenge signed for "audit:<document>" (or "audit:heads"), sent in
// the same headers as the other read-only APIs. A host's history needs `audit` on that host or
// live read access to it (any other capability there); the fleet documents' history is open to
// every admin, as the documents are live. What is served is evidence the auditor checks, never
// something to trust: see docs/audit.md.

function mayAudit(trust: TrustState, principal: Principal, document: string): boolean {
  if (!trust.enforced) return true;
  const policy = trust.policy();
  if (principal.kind !== 'admin' || !policy) return false;
  const admin = adminForKey(policy, principal.key);
  if (!admin) return false;
  if (document.startsWith('fleet/')) return true;
  const parsed = parseDocName(document);
  return parsed !== null && mayAuditHost(policy, admin, parsed.host);
}

// Who may ask for heads at all: an admin of the policy (each head is then filtered by mayAudit).
function mayListHeads(trust: TrustState, principal: Principal): boolean {
  if (!trust.enforced) return true;
  const policy = trust.policy();
  return principal.kind === 'admin' && policy !== null && adminForKey(policy, principal.key) !== null;
}

// The caller a key proof (bound to `proofFor`) shows; null when refused (answered 401 already).
async function provenCaller(
  req: IncomingMessage,
  res: ServerResponse,
  trust: TrustState,
  challenges: ChallengeStore,
  proofFor: string,
): Promise<Principal | null> {
  if (!trust.enforced) return { kind: 'anonymous', label: `anonymous@${req.socket.remoteAddress ?? 'unknown'}` };
  const proof = proofFromHeaders(req);
  if (!proof.success) {
    respondJson(res, 401, {
      error: `no key proof: GET /auth/challenge, sign it for "${proofFor}" and send ${Object.values(AUTH_HEADERS).join(', ')} (outpost audit --key KEYFILE does this)`,
    });
    return null;
  }
  if (!challenges.consume(proof.data.challenge) || !verifyAuthProof(proof.data, proofFor)) {
    respondJson(res, 401, { error: 'key proof refused: unknown, used or expired challenge, or a bad signature' });
    return null;
  }
  return trust.principalForKey(proof.data.principal);
}

// `?from=TIME`: only the checkpoints signed at or after it (an ISO 8601 UTC time), for a reader
// that holds the older ones. Each checkpoint stores only the heads that moved since the one
// before, so the heads *at* a checkpoint need every earlier one too (headsAtCheckpoint).
export const checkpointsQuerySchema = z.object({
  from: z
    .string()
    .max(64)
    .pipe(isoTimeSchema)
    .transform((t) => Date.parse(t))
    // Whatever the pattern lets through must still be a time.
    .refine((ms) => !Number.isNaN(ms))
    .optional(),
});

// The query's `from` in ms, or the message of a 400 naming the parameter and the fix.
export function checkpointsFrom(
  query: URLSearchParams,
): { ok: true; from: number | null } | { ok: false; error: string } {
  const parsed = checkpointsQuerySchema.safeParse({ from: query.get('from') ?? undefined });
  if (!parsed.success)
    return {
      ok: false,
      error: `from=${JSON.stringify((query.get('from') ?? '').slice(0, 64))} is not a time: give ?from= an ISO 8601 UTC time such as 2026-06-01T12:00:00Z (or leave it out for every checkpoint)`,
    };
  return { ok: true, from: parsed.data.from ?? null };
}

async function* checkpointsSince(
  checkpoints: AsyncIterable<CheckpointHeads>,
  from: number | null,
): AsyncGenerator<CheckpointHeads> {
  // Every stored checkpoint is looked at, not only a suffix: the coordinator's clock may have
  // stepped back, so signing times need not grow with the checkpoint number.
  for await (const checkpoint of checkpoints) if (from === null || Date.parse(checkpoint.at) >= from) yield checkpoint;
}

// The heads behind every signed checkpoint (or those since `?from=`), as NDJSON in checkpoint
// order. They name every document, so only a caller who may audit every host gets them.
async function handleCheckpoints(
  req: IncomingMessage,
  res: ServerResponse,
  log: UpdateLog,
  trust: TrustState,
  challenges: ChallengeStore,
  logger: Logger,
  query: URLSearchParams,
): Promise<void> {
  // Checked before the key proof, so a bad query does not use up the caller's challenge.
  const from = checkpointsFrom(query);
  if (!from.ok) {
    respondJson(res, 400, { error: from.error });
    return;
  }
  const principal = await provenCaller(req, res, trust, challenges, AUDIT_CHECKPOINTS_PROOF);
  if (!principal) return;
  const policy = trust.policy();
  const admin = principal.kind === 'admin' && policy ? adminForKey(policy, principal.key) : null;
  if (trust.enforced && !(policy && admin && mayAuditEveryHost(policy, admin))) {
    logger.warn({ event: 'audit-refused', principal: principal.label, document: 'checkpoints' }, 'refusing audit read');
    respondJson(res, 403, {
      error: `${principal.label} may not read the checkpoints: they name every document, so they need 'audit' or 'read' on every host ('*') in the policy`,
    });
    return;
  }
  logger.info({ event: 'audit-read', principal: principal.label, document: 'checkpoints' }, 'audit read');
  await streamLines(res, checkpointsSince(log.checkpoints(), from.from));
}

async function streamLines(res: ServerResponse, items: AsyncIterable<unknown>): Promise<void> {
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  let closed = false;
  res.on('close', () => {
    closed = true;
  });
  for await (const item of items) {
    if (closed) return;
    if (!res.write(`${JSON.stringify(item)}\n`)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
  }
  res.end();
}

export async function handleAuditGet(
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  log: UpdateLog,
  trust: TrustState,
  challenges: ChallengeStore,
  logger: Logger,
): Promise<void> {
  const query = requestQuery(req.url);
  if (path === AUDIT_CHECKPOINTS_PATH) {
    await handleCheckpoints(req, res, log, trust, challenges, logger, query);
    return;
  }
  let document: string | null = null;
  if (path === AUDIT_LOG_PATH) {
    const parsed = documentNameSchema.safeParse(query.get('doc'));
    if (!parsed.success) {
      respondJson(res, 400, { error: 'give ?doc=hosts/<id>/desired, hosts/<id>/status or fleet/<name>' });
      return;
    }
    document = parsed.data;
  } else if (path !== AUDIT_HEADS_PATH) {
    respondJson(res, 404, {
      error: `no such endpoint ${path}; try ${AUDIT_LOG_PATH}?doc=…, ${AUDIT_HEADS_PATH} or ${AUDIT_CHECKPOINTS_PATH}`,
    });
    return;
  }
  const principal = await provenCaller(req, res, trust, challenges, auditProofDocument(document));
  if (!principal) return;
  if (document === null ? !mayListHeads(trust, principal) : !mayAudit(trust, principal, document)) {
    logger.warn({ event: 'audit-refused', principal: principal.label, document }, 'refusing audit read');
    respondJson(res, 403, {
      error: document
        ? `${principal.label} may not read the audit log of ${document}: it needs 'audit' or 'read' on ${parseDocName(document)?.host ?? 'that host'} in the policy`
        : `${principal.label} may not read audit heads: only admins of the policy may`,
    });
    return;
  }
  logger.info({ event: 'audit-read', principal: principal.label, document }, 'audit read');
  if (document === null) {
    // Only the documents this caller may audit: names and heads of other hosts stay unseen.
    const heads = [];
    for (const name of await log.documents()) {
      if (!mayAudit(trust, principal, name)) continue;
      const head = await log.head(name);
      if (head) heads.push(head);
    }
    respondJson(res, 200, { heads });
    return;
  }
  await streamLines(res, wireEntries(log.iterate(document)));
}

async function* wireEntries(entries: AsyncIterable<LogEntry>): AsyncGenerator<WireEntry> {
  for await (const entry of entries) yield toWireEntry(entry);
}
