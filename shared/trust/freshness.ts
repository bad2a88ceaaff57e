import { verifyPayloadSignature } from '../crypto/signatures.js';
import type { Policy, SignedTimestamp } from '../schemas/policy.js';

// Freshness of a reader's view of fleet trust, as pure decisions over what the reader persisted.
//
// A signed timestamp proves two things: that time has reached `at`, and — since the coordinator
// signs the version of the policy it holds — which policy version is current. A relay or
// coordinator that withholds a new policy version (one that revokes a key, say) while forwarding
// genuine fresh timestamps would otherwise keep the reader on the old version with a clean bill
// of health. So a timestamp that names a newer version than the reader has walked makes the
// reader wait for that version: it counts as frozen, says which version it waits for, and
// installs nothing until the version arrives.

export interface PolicyNamed {
  version: number;
  // The timestamp key that named it: the claim ends when a later policy no longer trusts that
  // key (a compromised timestamp key naming version 999 freezes readers only until the root
  // replaces it).
  key: string;
}

export interface Freshness {
  enforced: boolean;
  lastTimestampAt: string | null;
  frozen: boolean;
  // When, without a fresh timestamp, the reader will count as frozen (ms; null: never).
  freezesAt: number | null;
  // A newer policy version a signed timestamp names, which the reader has not received.
  waitingForPolicyVersion: number | null;
  reason: string;
}

export type TimestampVerdict =
  | { accepted: false; reason: string }
  | { accepted: true; namesNewerPolicy: PolicyNamed | null };

// A timestamp counts when signed by a timestamp key of the policy in force and newer than the
// last one accepted. One that names a newer policy version than `policy` is accepted (its time
// is genuine) and reported, so the reader waits for that version.
export function judgeTimestamp(
  signed: SignedTimestamp,
  policy: Policy | undefined,
  last: SignedTimestamp | null,
): TimestampVerdict {
  if (!policy) return { accepted: false, reason: 'no policy trusted yet to check timestamp keys against' };
  if (!policy.timestampKeys.includes(signed.signature.publicKey))
    return { accepted: false, reason: `not signed by a timestamp key of policy version ${policy.version}` };
  if (!verifyPayloadSignature('timestamp', signed.timestamp, signed.signature))
    return { accepted: false, reason: 'signature does not verify' };
  const newer =
    !last ||
    signed.timestamp.seq > last.timestamp.seq ||
    Date.parse(signed.timestamp.at) > Date.parse(last.timestamp.at);
  if (!newer) return { accepted: false, reason: 'not newer than the last timestamp accepted' };
  return {
    accepted: true,
    namesNewerPolicy:
      signed.timestamp.policyVersion > policy.version
        ? { version: signed.timestamp.policyVersion, key: signed.signature.publicKey }
        : null,
  };
}

export function acceptTimestamp(
  signed: SignedTimestamp,
  policy: Policy | undefined,
  last: SignedTimestamp | null,
): boolean {
  return judgeTimestamp(signed, policy, last).accepted;
}

// The newer of two claims; a claim the policy in force no longer backs (its key is no longer a
// timestamp key) or already satisfied (the reader has that version) is dropped.
export function policyStillNamed(named: PolicyNamed | null, policy: Policy | undefined): PolicyNamed | null {
  if (!named || !policy) return named;
  if (named.version <= policy.version) return null;
  if (!policy.timestampKeys.includes(named.key)) return null;
  return named;
}

export function mergeNamed(a: PolicyNamed | null, b: PolicyNamed | null): PolicyNamed | null {
  if (!a) return b;
  if (!b) return a;
  return b.version > a.version ? b : a;
}

export interface FreshnessInput {
  policy: Policy | undefined;
  lastTimestamp: SignedTimestamp | null;
  policyNamed: PolicyNamed | null;
  // When the reader started looking (a reader that never saw a timestamp counts from then).
  openedAt: number;
  now: number;
  freezeAfterMs: number;
}

export function evaluateFreshness(input: FreshnessInput): Freshness {
  const { policy } = input;
  if (!policy || policy.timestampKeys.length === 0)
    return {
      enforced: false,
      lastTimestampAt: null,
      frozen: false,
      freezesAt: null,
      waitingForPolicyVersion: null,
      reason: 'the policy names no timestamp keys',
    };
  const at = input.lastTimestamp?.timestamp.at ?? null;
  const freezesAt = (at ? Date.parse(at) : input.openedAt) + input.freezeAfterMs;
  const stale = input.now > freezesAt;
  const named = policyStillNamed(input.policyNamed, policy);
  const reasons: string[] = [];
  if (named)
    reasons.push(
      `a signed timestamp names policy version ${named.version}, this reader has version ${policy.version}: waiting for that version (a relay or coordinator may be withholding it)`,
    );
  if (stale)
    reasons.push(
      `no fresh signed timestamp since ${at ?? 'ever'} (limit ${Math.round(input.freezeAfterMs / 1000)} s): updates may be withheld`,
    );
  return {
    enforced: true,
    lastTimestampAt: at,
    frozen: stale || named !== null,
    freezesAt,
    waitingForPolicyVersion: named?.version ?? null,
    reason: reasons.length > 0 ? reasons.join('; ') : 'fresh',
  };
}
