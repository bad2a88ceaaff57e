import type { IncomingMessage, ServerResponse } from 'node:http';
import type * as Y from 'yjs';
import type { z } from 'zod';
import { canonicalJson } from '../shared/crypto/canonical.js';
import {
  appendEnrollment,
  appendEnrollRequest,
  appendPolicy,
  ENROLLMENT_DOC,
  enrollRequestsArray,
  POLICY_DOC,
  readEnrollments,
  readPolicies,
} from '../shared/documents/fleet.js';
import type { Logger } from '../shared/log.js';
import { RequestBodyError, readJsonBody } from '../shared/node/http-body.js';
import {
  type Policy,
  type SignedEnrollment,
  type SignedEnrollRequest,
  signedEnrollClearSchema,
  signedEnrollmentSchema,
  signedEnrollRequestSchema,
  signedPolicySchema,
} from '../shared/schemas/policy.js';
import {
  provesHostKey,
  tokenUsableAt,
  verifyEnrollClear,
  verifyEnrollment,
  verifyEnrollRequest,
} from '../shared/trust/enrollment.js';
import { walkPolicyChain } from '../shared/trust/policy-chain.js';
import {
  DEFAULT_ENROLLMENT_LIMITS,
  type EnrollmentLimits,
  pendingId,
  planRequests,
  type RequestPlan,
  SourceLimiter,
  sourceOf,
} from './enrollment-limits.js';
import { decideFleetWrite, type FleetChange, writeFleetDocument } from './fleet-writes.js';
import { type DocumentHost, withPinned } from './hosted-documents.js';
import { respondJson } from './http-guard.js';
import type { TrustState } from './trust-state.js';

const MAX_BODY = 256 * 1024;
// An `outpost enroll clear` order counts only this close to the coordinator's clock.
const CLEAR_ORDER_MAX_AGE_MS = 10 * 60_000;

const readBody = <S extends z.ZodType>(req: IncomingMessage, schema: S): Promise<z.infer<S>> =>
  readJsonBody(req, schema, MAX_BODY);

// How many clients' worth of requests one relay's site may make together.
export const RELAY_SITE_FACTOR = 16;

// Per-coordinator state of the enrollment endpoints: the limits, the per-source buckets and what
// the last look at fleet/enrollment found (for /healthz and for refusing at the cap cheaply).
export interface EnrollmentGate {
  limits: EnrollmentLimits;
  limiter: SourceLimiter;
  // Per relay, for requests it passed on naming their clients (RELAY_SITE_FACTOR clients' worth).
  relayLimiter: SourceLimiter;
  health(): Record<string, unknown>;
  notePlan(plan: RequestPlan): void;
  // Null until fleet/enrollment was first looked at.
  snapshot(): { pending: number; pendingSince: ReadonlyMap<string, number>; nextExpiryAt: number } | null;
}

export function createEnrollmentGate(overrides: Partial<EnrollmentLimits> = {}): EnrollmentGate {
  const limits = { ...DEFAULT_ENROLLMENT_LIMITS, ...overrides };
  const limiter = new SourceLimiter(limits.perSourceBurst, limits.perSourceRefillMs, limits.maxSources);
  const relayLimiter = new SourceLimiter(
    limits.perSourceBurst * RELAY_SITE_FACTOR,
    limits.perSourceRefillMs / RELAY_SITE_FACTOR,
    limits.maxSources,
  );
  let last: ReturnType<EnrollmentGate['snapshot']> = null;
  return {
    limits,
    limiter,
    relayLimiter,
    notePlan(plan) {
      const oldest = Math.min(...plan.pendingSince.values());
      last = { pending: plan.pending, pendingSince: plan.pendingSince, nextExpiryAt: oldest + limits.pendingTtlMs };
    },
    snapshot: () => last,
    health: () => ({
      pendingRequests: last?.pending ?? null,
      maxPendingRequests: limits.maxPending,
      pendingTtlSeconds: limits.pendingTtlMs / 1000,
      perSourceBurst: limits.perSourceBurst,
      perSourceRefillSeconds: limits.perSourceRefillMs / 1000,
      sourcesTracked: limiter.sources(),
      refusedForRate: limiter.refused,
      refusedForRelayRate: relayLimiter.refused,
    }),
  };
}

const FLEET_POSTS = ['/api/policy', '/api/enroll', '/api/enroll/approve', '/api/enroll/clear'];

interface FleetContext {
  req: IncomingMessage;
  res: ServerResponse;
  host: DocumentHost;
  trust: TrustState;
  logger: Logger;
  gate: EnrollmentGate;
}

const hours = (ms: number): string => `${Math.round(ms / 360_000) / 10} h`;

// Deletes the stored requests at these positions (highest first, so the others keep theirs).
function applyDrops(doc: Y.Doc, drop: number[]): void {
  const requests = enrollRequestsArray(doc);
  for (const index of drop) requests.delete(index, 1);
}

function planFor(
  live: Y.Doc,
  policy: Policy | null,
  now: number,
  limits: EnrollmentLimits,
  enrollments: SignedEnrollment[] = readEnrollments(live),
): RequestPlan {
  return planRequests(policy, enrollments, enrollRequestsArray(live).toArray(), now, limits.pendingTtlMs);
}

// Looks at fleet/enrollment again after a write, so /healthz and the cheap refusal at the cap see it.
async function refreshGate(host: DocumentHost, policy: Policy | null, gate: EnrollmentGate): Promise<void> {
  gate.notePlan(
    await withPinned(host, ENROLLMENT_DOC, (enrollment) => planFor(enrollment.doc, policy, Date.now(), gate.limits)),
  );
}

const fullMessage = (pending: number, limits: EnrollmentLimits): string =>
  `fleet/enrollment holds ${pending} pending requests, the limit: an admin reviews them with 'outpost enroll list' and drops them with 'outpost enroll clear' (they also expire ${hours(limits.pendingTtlMs)} after they were made); ask again later`;

type EnrollOutcome =
  | { kind: 'bound' }
  | { kind: 'pending' }
  | { kind: 'full'; pending: number }
  | { kind: 'conflict'; boundKey: string | null; via: string | null; recorded: boolean };

async function handleEnrollRequest({ req, res, host, trust, logger, gate }: FleetContext): Promise<void> {
  const signed = await readBody(req, signedEnrollRequestSchema);
  const { request } = signed;
  const { limits } = gate;
  const now = Date.now();
  const policy = trust.policy();
  const refuse = (status: number, reason: string): void => {
    logger.warn(
      { event: 'enrollment-refused', host: request.host, hostKey: request.hostKey, reason },
      'refusing enrollment request',
    );
    respondJson(res, status, { error: reason });
  };
  // Already bound (an agent asks at every start, with the token it was given): nothing to record,
  // whether or not that token has expired since.
  if (trust.bindings().get(request.host)?.hostKey === request.hostKey && provesHostKey(signed)) {
    respondJson(res, 200, { ok: true, enrolled: true, pending: false });
    return;
  }
  // Pending requests expire by their signed time: it must be about now.
  const skew = Date.parse(request.requestedAt) - now;
  if (Math.abs(skew) > limits.clockSkewMs)
    return refuse(
      400,
      `enrollment request for ${request.host} was made at ${request.requestedAt} by the host's clock, ${hours(Math.abs(skew))} ${skew > 0 ? 'ahead of' : 'behind'} the coordinator's (${new Date(now).toISOString()}); set the host's clock (NTP) and ask again`,
    );
  // At the cap a new pending request is refused before its signature is even checked.
  const seen = gate.snapshot();
  if (
    !request.token &&
    seen &&
    seen.pending >= limits.maxPending &&
    now < seen.nextExpiryAt &&
    !seen.pendingSince.has(pendingId(request.host, request.hostKey))
  )
    return refuse(429, fullMessage(seen.pending, limits));
  const verdict = verifyEnrollRequest(signed, policy);
  if (!verdict.ok) return refuse(400, verdict.reason);
  if (request.token) {
    const usable = tokenUsableAt(request.token, now);
    if (!usable.ok) return refuse(400, usable.reason);
  }
  const outcome = await decideFleetWrite(host, ENROLLMENT_DOC, `host-key:${request.hostKey}`, (live) =>
    decideRequest(live, signed, policy, now, gate),
  );
  await refreshGate(host, policy, gate);
  switch (outcome.kind) {
    case 'bound':
    case 'pending':
      logger.info(
        {
          event: 'enrollment-requested',
          host: request.host,
          hostKey: request.hostKey,
          viaToken: verdict.viaToken ?? false,
          bound: outcome.kind === 'bound',
        },
        'enrollment request recorded',
      );
      respondJson(res, 200, { ok: true, enrolled: outcome.kind === 'bound', pending: outcome.kind === 'pending' });
      return;
    case 'full':
      return refuse(429, fullMessage(outcome.pending, limits));
    case 'conflict': {
      const what = outcome.boundKey
        ? `${request.host} is already bound to key ${outcome.boundKey} (by ${outcome.via})`
        : `the token for ${request.host} was already used`;
      const conflict = `${what}; this request with key ${request.hostKey} is ${outcome.recorded ? 'recorded as a conflict for admins (outpost enroll list)' : 'not recorded: this token has too many conflicting uses already'}. If the token file was copied, that other key is not this host: an admin checks which key is ${request.host}'s and approves it with 'outpost enroll approve --host ${request.host} --host-key KEY'`;
      logger.warn(
        {
          event: 'enrollment-conflict',
          host: request.host,
          hostKey: request.hostKey,
          boundKey: outcome.boundKey,
          recorded: outcome.recorded,
        },
        conflict,
      );
      respondJson(res, 200, { ok: true, enrolled: false, pending: true, conflict });
      return;
    }
  }
}

// Inside the enrollment document's queue: drop what expired or was settled, and record the
// request if it adds something and fits the limits.
function decideRequest(
  live: Y.Doc,
  signed: SignedEnrollRequest,
  policy: Policy | null,
  now: number,
  gate: EnrollmentGate,
): FleetChange<EnrollOutcome> {
  const { request } = signed;
  const { limits } = gate;
  const plan = planFor(live, policy, now, limits);
  gate.notePlan(plan);
  const dropOnly = plan.drop.length ? (copy: Y.Doc) => applyDrops(copy, plan.drop) : undefined;
  const record = (copy: Y.Doc): void => {
    applyDrops(copy, plan.drop);
    appendEnrollRequest(copy, signed);
  };
  if (!request.token) {
    const since = plan.pendingSince.get(pendingId(request.host, request.hostKey));
    // A repeat of a pending request is recorded again only to keep it from expiring.
    if (since !== undefined && since > now - limits.pendingTtlMs / 2)
      return { outcome: { kind: 'pending' }, write: dropOnly };
    if (since === undefined && plan.pending >= limits.maxPending)
      return { outcome: { kind: 'full', pending: plan.pending }, write: dropOnly };
    return { outcome: { kind: 'pending' }, write: record };
  }
  const nonce = request.token.token.nonce;
  const current = plan.state.bindings.get(request.host) ?? null;
  const conflict = (recorded: boolean): EnrollOutcome => ({
    kind: 'conflict',
    boundKey: current?.hostKey ?? null,
    via: current?.via ?? null,
    recorded,
  });
  // A valid token use binds exactly when its host has no binding yet (the token names one host).
  if (!current) return { outcome: { kind: 'bound' }, write: record };
  if (plan.repeatKeys.has(`${nonce} ${request.hostKey}`)) return { outcome: conflict(true), write: dropOnly };
  if ((plan.repeatsByNonce.get(nonce) ?? 0) >= limits.maxTokenRepeats)
    return { outcome: conflict(false), write: dropOnly };
  return { outcome: conflict(true), write: record };
}

async function handleEnrollClear({ req, res, host, trust, logger, gate }: FleetContext): Promise<void> {
  const signed = await readBody(req, signedEnrollClearSchema);
  const policy = trust.policy();
  if (!policy) {
    respondJson(res, 409, { error: 'no policy in force yet; push one with outpost policy push' });
    return;
  }
  const now = Date.now();
  const verdict = verifyEnrollClear(signed, policy, now, CLEAR_ORDER_MAX_AGE_MS);
  if (!verdict.ok) {
    logger.warn({ event: 'enrollment-clear-refused', reason: verdict.reason }, 'refusing enrollment clear order');
    respondJson(res, 400, { error: verdict.reason });
    return;
  }
  const { host: onlyHost, hostKey: onlyKey } = signed.clear;
  const outcome = await decideFleetWrite(host, ENROLLMENT_DOC, `admin:${verdict.admin.name}`, (live) => {
    const plan = planFor(live, policy, now, gate.limits);
    const matching = plan.clearable.filter(
      (c) => (onlyHost === undefined || c.host === onlyHost) && (onlyKey === undefined || c.hostKey === onlyKey),
    );
    const cleared = matching.filter((c) => verdict.mayClear(c.host));
    const drop = [...plan.drop, ...cleared.map((c) => c.index)].sort((a, b) => b - a);
    return {
      outcome: { cleared: cleared.length, notPermitted: matching.length - cleared.length },
      write: drop.length ? (copy) => applyDrops(copy, drop) : undefined,
    };
  });
  await refreshGate(host, policy, gate);
  logger.info(
    { event: 'enrollment-cleared', admin: verdict.admin.name, host: onlyHost, hostKey: onlyKey, ...outcome },
    'pending enrollment requests cleared',
  );
  respondJson(res, 200, { ok: true, ...outcome });
}

async function handleEnrollApprove({ req, res, host, trust, logger, gate }: FleetContext): Promise<void> {
  const signed = await readBody(req, signedEnrollmentSchema);
  const policy = trust.policy();
  if (!policy) {
    respondJson(res, 409, { error: 'no policy in force yet; push one with outpost policy push' });
    return;
  }
  const verdict = verifyEnrollment(signed, policy);
  if (!verdict.ok) {
    logger.warn(
      { event: 'enrollment-refused', host: signed.enrollment.host, reason: verdict.reason },
      'refusing enrollment approval',
    );
    respondJson(res, 400, { error: verdict.reason });
    return;
  }
  const now = Date.now();
  await decideFleetWrite(host, ENROLLMENT_DOC, `enrollment:${signed.enrollment.host}`, (live) => {
    const enrollments = readEnrollments(live);
    const known = enrollments.some((e) => canonicalJson(e) === canonicalJson(signed));
    // The request this approval answers is settled by it.
    const plan = planFor(live, policy, now, gate.limits, known ? enrollments : [...enrollments, signed]);
    return {
      outcome: undefined,
      write:
        known && !plan.drop.length
          ? undefined
          : (copy) => {
              applyDrops(copy, plan.drop);
              if (!known) appendEnrollment(copy, signed);
            },
    };
  });
  await refreshGate(host, policy, gate);
  logger.info({ event: 'host-enrolled', host: signed.enrollment.host }, 'enrollment approved');
  respondJson(res, 200, { ok: true });
}

async function handlePolicy(
  { req, res, host, trust, logger }: FleetContext,
  pinnedRoot: ReadonlySet<string>,
): Promise<void> {
  const signed = await readBody(req, signedPolicySchema);
  const existing = await withPinned(host, POLICY_DOC, (policyDoc) => readPolicies(policyDoc.doc));
  const walk = walkPolicyChain(trust.chain(), pinnedRoot, [...existing, signed]);
  const accepted = walk.chain.some((p) => canonicalJson(p) === canonicalJson(signed.policy));
  if (!accepted) {
    const reasons = walk.refused.filter((r) => r.version === signed.policy.version).map((r) => r.reason);
    logger.warn(
      { event: 'policy-refused', document: POLICY_DOC, version: signed.policy.version, reasons },
      'refusing policy',
    );
    respondJson(res, 400, {
      error: `policy version ${signed.policy.version} refused: ${reasons.join('; ') || `it does not follow version ${trust.policy()?.version ?? 'none'}`}`,
    });
    return;
  }
  if (!existing.some((p) => canonicalJson(p.policy) === canonicalJson(signed.policy))) {
    await writeFleetDocument(host, POLICY_DOC, `policy:v${signed.policy.version}`, (copy) =>
      appendPolicy(copy, signed),
    );
  }
  respondJson(res, 200, { ok: true, version: signed.policy.version });
}

// A fleet POST a relay of the policy passed on, with the client source it proved it names.
export interface ForwardedBy {
  relay: string;
  source: string;
}

function refuseForRate(
  res: ServerResponse,
  logger: Logger,
  path: string,
  source: string,
  retryAfterMs: number,
  limit: { burst: number; refillMs: number },
): void {
  const seconds = Math.ceil(retryAfterMs / 1000);
  logger.warn({ event: 'fleet-post-rate-limited', source, path }, 'too many fleet requests from one source');
  res.setHeader('retry-after', String(seconds));
  respondJson(res, 429, {
    error: `too many requests from ${source}: ${limit.burst} at once, then one every ${limit.refillMs / 1000} s; try again in ${seconds} s`,
  });
}

// POST endpoints for self-authenticating fleet entries. The coordinator checks each entry the way
// every reader will, and appends only what passes: it adds no trust of its own. Every source is
// rate limited first, before any signature is checked.
export async function handleFleetPost(
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  host: DocumentHost,
  trust: TrustState,
  pinnedRoot: ReadonlySet<string>,
  logger: Logger,
  gate: EnrollmentGate,
  forwarded: ForwardedBy | null = null,
): Promise<boolean> {
  if (!FLEET_POSTS.includes(path)) return false;
  const now = Date.now();
  // A relay's site counts as many sources, one per client it names, and as a whole under a larger
  // budget: a compromised relay naming made-up sources gets that far and no further.
  if (forwarded) {
    const site = gate.relayLimiter.take(forwarded.relay, now);
    if (!site.ok) {
      refuseForRate(res, logger, path, forwarded.relay, site.retryAfterMs, {
        burst: gate.limits.perSourceBurst * RELAY_SITE_FACTOR,
        refillMs: gate.limits.perSourceRefillMs / RELAY_SITE_FACTOR,
      });
      return true;
    }
  }
  const source = forwarded ? `${forwarded.source} via ${forwarded.relay}` : sourceOf(req.socket.remoteAddress);
  const allowed = gate.limiter.take(source, now);
  if (!allowed.ok) {
    refuseForRate(res, logger, path, source, allowed.retryAfterMs, {
      burst: gate.limits.perSourceBurst,
      refillMs: gate.limits.perSourceRefillMs,
    });
    return true;
  }
  if (!trust.enforced) {
    respondJson(res, 409, {
      error: 'this coordinator runs without --org-root: there is no policy to check fleet entries against',
    });
    return true;
  }
  const context: FleetContext = { req, res, host, trust, logger, gate };
  try {
    if (path === '/api/policy') await handlePolicy(context, pinnedRoot);
    else if (path === '/api/enroll') await handleEnrollRequest(context);
    else if (path === '/api/enroll/clear') await handleEnrollClear(context);
    else await handleEnrollApprove(context);
  } catch (error) {
    // What the client sent is wrong (400, 413); any other failure is the coordinator's (500).
    const bad = error instanceof RequestBodyError ? error : null;
    if (!bad) logger.error({ event: 'fleet-post-failed', path, err: error }, 'fleet request failed');
    if (!res.headersSent)
      respondJson(res, bad ? bad.status : 500, {
        error: bad
          ? bad.message
          : `the coordinator failed to store this (${(error as Error).message}); try again, and check its log`,
      });
  }
  return true;
}
