import type { SigningKey } from '../crypto/keys.js';
import { authHeaders, challengeResponseSchema, signAuthProof } from './auth-proof.js';

// One reconnect loop for every long-lived link (agent and admin documents, the relay's upstream
// link): jittered exponential backoff with a cap, failover to the next endpoint after two failures
// in a row on one, and a fresh single-use proof per attempt (the caller's `attempt` fetches it).
// A link that worked (synced) but ended within HEALTHY_LINK_MS counts as a failure of its endpoint
// too: an endpoint that accepts and then drops every connection (a coordinator that cannot store,
// or a hostile one) would otherwise hold its peers for good while another endpoint works.
// Satellite sites use caps of minutes so a fleet coming back after an outage does not storm.

export interface BackoffPolicy {
  baseMs: number;
  capMs: number;
}

export interface ReconnectState {
  readonly urls: readonly string[];
  readonly policy: BackoffPolicy;
  endpoint: number;
  attempt: number;
  failuresHere: number;
  // When the current link started working (connectionSucceeded), while it lasts, by `now`.
  upSince: number | null;
  readonly now: () => number;
  timer: ReturnType<typeof setTimeout> | null;
  closed: boolean;
}

export interface ReconnectHooks {
  // Opens a connection to url; a rejection counts as a failed attempt.
  attempt(url: string): Promise<void>;
  onEndpoint?(url: string): void;
  onRetry?(url: string, delayMs: number, reason: string): void;
  random?: () => number;
}

const FAILURES_BEFORE_FAILOVER = 2;
export const HEALTHY_LINK_MS = 30_000;

export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)) * (0.5 + random() / 2);
}

export function createReconnectState(
  urls: readonly string[],
  policy: BackoffPolicy,
  now: () => number = Date.now,
): ReconnectState {
  if (urls.length === 0) throw new Error('no endpoint to connect to: give at least one ws:// or wss:// URL');
  return { urls, policy, endpoint: 0, attempt: 0, failuresHere: 0, upSince: null, now, timer: null, closed: false };
}

export function currentUrl(state: ReconnectState): string {
  return state.urls[state.endpoint]!;
}

export function connectNow(state: ReconnectState, hooks: ReconnectHooks): void {
  if (state.closed) return;
  hooks.attempt(currentUrl(state)).catch((error: Error) => connectionFailed(state, hooks, error.message));
}

// A connection ended or could not be made: count it, maybe fail over, schedule the next attempt.
export function connectionFailed(state: ReconnectState, hooks: ReconnectHooks, reason = 'closed'): void {
  if (state.closed || state.timer) return;
  if (state.upSince !== null && state.now() - state.upSince >= HEALTHY_LINK_MS) state.failuresHere = 0;
  state.upSince = null;
  state.attempt += 1;
  state.failuresHere += 1;
  if (state.urls.length > 1 && state.failuresHere >= FAILURES_BEFORE_FAILOVER) {
    state.endpoint = (state.endpoint + 1) % state.urls.length;
    state.failuresHere = 0;
    hooks.onEndpoint?.(currentUrl(state));
  }
  const delay = backoffDelay(state.attempt, state.policy.baseMs, state.policy.capMs, hooks.random);
  hooks.onRetry?.(currentUrl(state), delay, reason);
  state.timer = setTimeout(() => {
    state.timer = null;
    connectNow(state, hooks);
  }, delay);
}

// The link works (synced, or open): the next failure starts the backoff from the beginning, and
// counts towards failover only if the link ends within HEALTHY_LINK_MS.
export function connectionSucceeded(state: ReconnectState): void {
  state.attempt = 0;
  state.upSince ??= state.now();
}

export function stopReconnecting(state: ReconnectState): void {
  state.closed = true;
  if (state.timer) clearTimeout(state.timer);
  state.timer = null;
}

export function httpBaseFromWs(serverUrl: string): string {
  return serverUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '');
}

// A fresh single-use challenge from the endpoint.
export async function fetchChallenge(serverUrl: string, timeoutMs: number): Promise<string> {
  const url = `${httpBaseFromWs(serverUrl)}/auth/challenge`;
  let response: Response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    throw new Error(`cannot reach ${url}: ${(error as Error).message}`);
  }
  if (!response.ok) throw new Error(`challenge request to ${url} answered ${response.status}`);
  return challengeResponseSchema.parse(await response.json()).challenge;
}

// A fresh proof of `key` for one document (or the relay link), signed over the endpoint's
// single-use challenge: what the upgrade request carries as query parameters.
export async function fetchAuthProof(
  serverUrl: string,
  documentName: string,
  key: SigningKey,
  timeoutMs: number,
): Promise<Record<string, string>> {
  return { ...signAuthProof(key, await fetchChallenge(serverUrl, timeoutMs), documentName) };
}

// Headers proving `key` to a read-only HTTP API (/api/documents, /api/presence): a fresh
// challenge from the same server, signed for the URL's path.
export async function fetchAuthHeaders(
  url: string,
  key: SigningKey,
  timeoutMs: number,
): Promise<Record<string, string>> {
  const target = new URL(url);
  return authHeaders(signAuthProof(key, await fetchChallenge(target.origin, timeoutMs), target.pathname));
}
