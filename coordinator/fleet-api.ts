import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import { canonicalJson } from '../shared/crypto/canonical.js';
import {
  appendEnrollment,
  appendEnrollRequest,
  appendPolicy,
  ENROLLMENT_DOC,
  POLICY_DOC,
  readEnrollments,
  readEnrollRequests,
  readPolicies,
} from '../shared/documents/fleet.js';
import type { Logger } from '../shared/log.js';
import { signedEnrollmentSchema, signedEnrollRequestSchema, signedPolicySchema } from '../shared/schemas/policy.js';
import { verifyEnrollment, verifyEnrollRequest } from '../shared/trust/enrollment.js';
import { walkPolicyChain } from '../shared/trust/policy-chain.js';
import { writeFleetDocument } from './fleet-writes.js';
import type { DocumentHost } from './hosted-documents.js';
import type { TrustState } from './trust-state.js';

const MAX_BODY = 256 * 1024;
const MAX_PENDING_REQUESTS = 10_000;

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

async function readBody<S extends z.ZodType>(req: IncomingMessage, schema: S): Promise<z.infer<S>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new Error(`request body over ${MAX_BODY} bytes`);
    chunks.push(chunk as Buffer);
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new Error('request body is not JSON');
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '));
  return parsed.data;
}

// POST endpoints for self-authenticating fleet entries. The coordinator checks each entry the way
// every reader will, and appends only what passes: it adds no trust of its own.
export async function handleFleetPost(
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  host: DocumentHost,
  trust: TrustState,
  pinnedRoot: ReadonlySet<string>,
  logger: Logger,
): Promise<boolean> {
  if (!['/api/policy', '/api/enroll', '/api/enroll/approve'].includes(path)) return false;
  if (!trust.enforced) {
    sendJson(res, 409, {
      error: 'this coordinator runs without --org-root: there is no policy to check fleet entries against',
    });
    return true;
  }
  try {
    if (path === '/api/policy') {
      const signed = await readBody(req, signedPolicySchema);
      const policyDoc = await host.pin(POLICY_DOC);
      const existing = readPolicies(policyDoc.doc);
      const walk = walkPolicyChain(trust.chain(), pinnedRoot, [...existing, signed]);
      const accepted = walk.chain.some((p) => canonicalJson(p) === canonicalJson(signed.policy));
      if (!accepted) {
        const reasons = walk.refused.filter((r) => r.version === signed.policy.version).map((r) => r.reason);
        logger.warn(
          { event: 'policy-refused', document: POLICY_DOC, version: signed.policy.version, reasons },
          'refusing policy',
        );
        sendJson(res, 400, {
          error: `policy version ${signed.policy.version} refused: ${reasons.join('; ') || `it does not follow version ${trust.policy()?.version ?? 'none'}`}`,
        });
        return true;
      }
      if (!existing.some((p) => canonicalJson(p.policy) === canonicalJson(signed.policy))) {
        await writeFleetDocument(host, POLICY_DOC, `policy:v${signed.policy.version}`, (doc) =>
          appendPolicy(doc, signed),
        );
      }
      sendJson(res, 200, { ok: true, version: signed.policy.version });
      return true;
    }
    const policy = trust.policy();
    if (path === '/api/enroll') {
      const signed = await readBody(req, signedEnrollRequestSchema);
      const verdict = verifyEnrollRequest(signed, policy, Date.now());
      if (!verdict.ok) {
        logger.warn(
          { event: 'enrollment-refused', host: signed.request.host, reason: verdict.reason },
          'refusing enrollment request',
        );
        sendJson(res, 400, { error: verdict.reason });
        return true;
      }
      const doc = (await host.pin(ENROLLMENT_DOC)).doc;
      const requests = readEnrollRequests(doc);
      const duplicate = requests.some(
        (r) =>
          r.request.host === signed.request.host &&
          r.request.hostKey === signed.request.hostKey &&
          canonicalJson(r.request.token ?? null) === canonicalJson(signed.request.token ?? null),
      );
      if (!duplicate) {
        if (requests.length >= MAX_PENDING_REQUESTS) {
          sendJson(res, 429, {
            error: 'too many enrollment requests recorded; approve or clean up pending ones first',
          });
          return true;
        }
        await writeFleetDocument(host, ENROLLMENT_DOC, `host-key:${signed.request.hostKey}`, (d) =>
          appendEnrollRequest(d, signed),
        );
      }
      const bound = trust.bindings().get(signed.request.host)?.hostKey === signed.request.hostKey;
      logger.info(
        { event: 'enrollment-requested', host: signed.request.host, viaToken: verdict.viaToken ?? false, bound },
        'enrollment request recorded',
      );
      sendJson(res, 200, { ok: true, enrolled: bound, pending: !bound });
      return true;
    }
    const signed = await readBody(req, signedEnrollmentSchema);
    if (!policy) {
      sendJson(res, 409, { error: 'no policy in force yet; push one with outpost policy push' });
      return true;
    }
    const verdict = verifyEnrollment(signed, policy);
    if (!verdict.ok) {
      logger.warn(
        { event: 'enrollment-refused', host: signed.enrollment.host, reason: verdict.reason },
        'refusing enrollment approval',
      );
      sendJson(res, 400, { error: verdict.reason });
      return true;
    }
    const doc = (await host.pin(ENROLLMENT_DOC)).doc;
    if (!readEnrollments(doc).some((e) => canonicalJson(e) === canonicalJson(signed))) {
      await writeFleetDocument(host, ENROLLMENT_DOC, `enrollment:${signed.enrollment.host}`, (d) =>
        appendEnrollment(d, signed),
      );
    }
    logger.info({ event: 'host-enrolled', host: signed.enrollment.host }, 'enrollment approved');
    sendJson(res, 200, { ok: true });
    return true;
  } catch (error) {
    sendJson(res, 400, { error: (error as Error).message });
    return true;
  }
}
