import { isIPv4, isIPv6 } from 'node:net';
import { ENTRY_LIMITS } from '../shared/documents/entries.js';
import { parseStoredEntry } from '../shared/documents/fleet.js';
import { type Policy, type SignedEnrollment, signedEnrollRequestSchema } from '../shared/schemas/policy.js';
import { type EnrollmentState, enrollmentState } from '../shared/trust/enrollment.js';

// Bounds on what strangers can make the coordinator store through POST /api/enroll: anyone can
// sign a request with a key of their own, so without these fleet/enrollment grows for ever
// (5,366 permanent entries in 11 minutes, issue 11).
export interface EnrollmentLimits {
  // Fleet POSTs one source (IPv4 address or IPv6 /64) may make: a burst, then one per refill.
  perSourceBurst: number;
  perSourceRefillMs: number;
  // Sources remembered at once; the least recently seen is forgotten first.
  maxSources: number;
  // Requests without a token whose key is not bound, kept at once; more are refused (429).
  maxPending: number;
  // A pending request (or a token conflict) is dropped this long after it was made.
  pendingTtlMs: number;
  // Extra uses of one token (conflicts) kept, so one copied token file cannot fill the document.
  maxTokenRepeats: number;
  // How far a request's signed time may be from the coordinator's clock.
  clockSkewMs: number;
}

export const DEFAULT_ENROLLMENT_LIMITS: EnrollmentLimits = {
  perSourceBurst: 30,
  perSourceRefillMs: 2_000,
  maxSources: 10_000,
  maxPending: 1_000,
  pendingTtlMs: 7 * 24 * 3_600_000,
  maxTokenRepeats: 4,
  clockSkewMs: 24 * 3_600_000,
};

// IPv4 addresses count one by one; an IPv6 holder usually has a whole /64, so that is one source.
export function sourceOf(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (isIPv4(address)) return address;
  if (!isIPv6(address)) return address;
  const [head = '', tail = ''] = address.split('::');
  const headParts = head ? head.split(':') : [];
  const tailParts = tail ? tail.split(':') : [];
  const missing = address.includes('::') ? 8 - headParts.length - tailParts.length : 0;
  const groups = [...headParts, ...Array<string>(Math.max(0, missing)).fill('0'), ...tailParts];
  return `${groups
    .slice(0, 4)
    .map((g) => (Number.parseInt(g, 16) || 0).toString(16))
    .join(':')}::/64`;
}

// Token buckets per source, in a map of bounded size (Map order = least recently used first).
export class SourceLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  refused = 0;

  constructor(
    private readonly burst: number,
    private readonly refillMs: number,
    private readonly maxSources: number,
  ) {}

  take(source: string, now: number): { ok: true } | { ok: false; retryAfterMs: number } {
    const known = this.buckets.get(source);
    const bucket = known
      ? { tokens: Math.min(this.burst, known.tokens + (now - known.at) / this.refillMs), at: now }
      : { tokens: this.burst, at: now };
    this.buckets.delete(source);
    if (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value!);
    if (bucket.tokens < 1) {
      this.buckets.set(source, bucket);
      this.refused += 1;
      return { ok: false, retryAfterMs: Math.ceil((1 - bucket.tokens) * this.refillMs) };
    }
    bucket.tokens -= 1;
    this.buckets.set(source, bucket);
    return { ok: true };
  }

  sources(): number {
    return this.buckets.size;
  }
}

export interface RequestPlan {
  // Positions in the stored `requests` array to delete (highest first is the caller's job).
  drop: number[];
  // Requests without a token, not bound, kept after the drop.
  pending: number;
  // Kept pending requests by "host key" (to spot a repeat of one already pending) → requestedAt.
  pendingSince: Map<string, number>;
  // Kept extra uses per token nonce.
  repeatsByNonce: Map<string, number>;
  // Kept extra uses by "nonce key" (to spot a repeat of one already recorded).
  repeatKeys: Set<string>;
  // Kept entries an admin may clear (pending requests and extra token uses; never a binding).
  clearable: { index: number; host: string; hostKey: string }[];
  state: EnrollmentState;
}

export const pendingId = (host: string, hostKey: string): string => `${host} ${hostKey}`;

// What to drop from fleet/enrollment's request list now: entries that do not parse; pending
// requests older than the TTL, bound since (by approval) or repeated by a newer one; extra token
// uses older than the TTL or by the key the token already bound. Requests that bind by token
// are never dropped: they are the binding.
export function planRequests(
  policy: Policy | null,
  enrollments: SignedEnrollment[],
  raw: unknown[],
  now: number,
  ttlMs: number,
): RequestPlan {
  const drop: number[] = [];
  const parsed = raw.map((entry) => parseStoredEntry(signedEnrollRequestSchema, entry, ENTRY_LIMITS.enrollment));
  const valid = parsed.flatMap((signed, index) => (signed ? [{ signed, index }] : []));
  for (const [index, signed] of parsed.entries()) if (!signed) drop.push(index);
  const state = enrollmentState(
    policy,
    enrollments,
    valid.map((v) => v.signed),
  );
  const expired = (requestedAt: string): boolean => !(Date.parse(requestedAt) + ttlMs > now);
  const pendingSince = new Map<string, number>();
  const repeatsByNonce = new Map<string, number>();
  const repeatKeys = new Set<string>();
  const clearable: RequestPlan['clearable'] = [];
  // Newest first, so a repeated pending request keeps its newest copy.
  for (let position = valid.length - 1; position >= 0; position--) {
    const { signed, index } = valid[position]!;
    const { request } = signed;
    const bound = state.bindings.get(request.host);
    if (!request.token) {
      const id = pendingId(request.host, request.hostKey);
      if (expired(request.requestedAt) || bound?.hostKey === request.hostKey || pendingSince.has(id)) drop.push(index);
      else {
        pendingSince.set(id, Date.parse(request.requestedAt));
        clearable.push({ index, host: request.host, hostKey: request.hostKey });
      }
      continue;
    }
    if (state.tokenBindings.has(position)) continue;
    const repeatKey = `${request.token.token.nonce} ${request.hostKey}`;
    if (expired(request.requestedAt) || bound?.hostKey === request.hostKey || repeatKeys.has(repeatKey)) {
      drop.push(index);
      continue;
    }
    repeatKeys.add(repeatKey);
    clearable.push({ index, host: request.host, hostKey: request.hostKey });
    const nonce = request.token.token.nonce;
    repeatsByNonce.set(nonce, (repeatsByNonce.get(nonce) ?? 0) + 1);
  }
  return {
    drop: drop.sort((a, b) => b - a),
    pending: pendingSince.size,
    pendingSince,
    repeatsByNonce,
    repeatKeys,
    clearable,
    state,
  };
}
