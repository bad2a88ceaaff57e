import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { openFleetTrustOnNode } from '../shared/node/fleet-trust.js';
import { groupWindowsFor } from '../shared/schedule/group-windows.js';
import { NO_WINDOWS, type WindowSet } from '../shared/schedule/window-rules.js';
import type { SignedAction } from '../shared/schemas/action.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import type { Policy } from '../shared/schemas/policy.js';
import type { ReconnectOptions } from '../shared/sync/connect.js';
import type { Freshness } from '../shared/trust/fleet-trust.js';
import { type ActionVerdict, verifyAction } from '../shared/trust/verify-action.js';
import { type IntentVerifier, verifyIntent } from '../shared/trust/verify-intent.js';

// What an agent needs to decide about intents, whichever trust model the host runs:
// the fleet policy (pinned --org-root) or, in development, a static --admin-key list.
export interface IntentTrust {
  mode: 'policy' | 'admin-keys';
  verify: IntentVerifier;
  // Whether a remote action request may run here (shared/trust/verify-action.ts).
  verifyAction: (signed: SignedAction) => ActionVerdict;
  epochOf: (signed: SignedIntent) => number;
  now: () => number;
  freshness: () => Freshness;
  policyVersion: () => number | null;
  // Every policy version walked, ascending (none with static admin keys): rollouts are judged under it.
  chain: () => Policy[];
  // The maintenance and reboot windows the policy in force gives `host` through its groups (none
  // with static admin keys). Read again after onChange: a new version may change them.
  windowsFor: (host: string) => WindowSet;
  onChange: (listener: () => void) => void;
  close: () => Promise<void>;
}

export interface IntentTrustOptions {
  host: string;
  endpoints: string[];
  // The host key, proved on the policy and timestamp connections.
  identity: SigningKey;
  stateDir: string;
  orgRootKeys: string[];
  adminKeys: string[];
  freezeAfterMs: number;
  deliveryWindowMs?: number;
  logger: Logger;
  backoff?: ReconnectOptions;
}

export async function openIntentTrust(options: IntentTrustOptions): Promise<IntentTrust> {
  if (options.orgRootKeys.length > 0) {
    const fleet = await openFleetTrustOnNode({
      endpoints: options.endpoints,
      identity: options.identity,
      orgRootKeys: options.orgRootKeys,
      stateDir: options.stateDir,
      freezeAfterMs: options.freezeAfterMs,
      ...(options.deliveryWindowMs === undefined ? {} : { deliveryWindowMs: options.deliveryWindowMs }),
      logger: options.logger,
      ...(options.backoff ? { backoff: options.backoff } : {}),
    });
    const verify = fleet.verifier(options.host);
    // Asked on every loop turn and status write; parsed again only when the version changes.
    let windows: { policy: Policy | undefined; host: string; set: WindowSet } | null = null;
    const windowsFor = (host: string): WindowSet => {
      const policy = fleet.chain().at(-1);
      if (!windows || windows.policy !== policy || windows.host !== host)
        windows = { policy, host, set: groupWindowsFor(policy, host) };
      return windows.set;
    };
    return {
      mode: 'policy',
      verify,
      verifyAction: (signed) =>
        verifyAction(signed, { host: options.host, mode: 'policy', chain: fleet.chain(), now: fleet.now() }),
      epochOf: (signed) => fleet.epochOf(signed),
      now: () => fleet.now(),
      freshness: () => fleet.freshness(),
      policyVersion: () => fleet.chain().at(-1)?.version ?? null,
      chain: () => fleet.chain(),
      windowsFor,
      onChange: (listener) => fleet.onChange(listener),
      close: () => fleet.close(),
    };
  }
  const trustedAdminKeys = new Set(options.adminKeys);
  return {
    mode: 'admin-keys',
    verify: (signed) => verifyIntent(signed, { host: options.host, trustedAdminKeys, now: Date.now() }),
    verifyAction: (signed) =>
      verifyAction(signed, { host: options.host, mode: 'admin-keys', chain: [], trustedAdminKeys, now: Date.now() }),
    epochOf: () => 0,
    now: () => Date.now(),
    freshness: () => ({
      enforced: false,
      lastTimestampAt: null,
      frozen: false,
      freezesAt: null,
      waitingForPolicyVersion: null,
      reason: 'static admin keys: no freshness timestamps',
    }),
    policyVersion: () => null,
    chain: () => [],
    windowsFor: () => NO_WINDOWS,
    onChange: () => undefined,
    close: async () => undefined,
  };
}
