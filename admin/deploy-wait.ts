import type { SigningKey } from '../shared/crypto/keys.js';
import { sleep } from '../shared/time/sleep.js';
import { type HostKeyAuthority, type HostView, readHostView } from './fleet-view.js';

// `outpost deploy --wait` (and whatever else waits for one host, such as a rollout's CI step):
// follows the host's signed results until one answers the generation, for a CI job's exit code.
// Results count only as fleet-view counts them: with the pinned org root, signed by the key
// enrollment binds to the host; a relay or coordinator can delay the answer, not forge it.
export type WaitOutcome = 'applied' | 'refused' | 'failed' | 'rolled-back' | 'superseded' | 'timeout';

export interface WaitResult {
  outcome: WaitOutcome;
  reason: string;
  // The host's signed result that decided it (none for superseded by status, or timeout).
  seq: number | null;
  // Whether the host key was checked against enrollment (--org-root) or not.
  hostKeys: HostView['hostKeys'];
}

export interface WaitOptions {
  host: string;
  generation: number;
  closure: string;
  timeoutMs: number;
  // Per status read.
  readTimeoutMs: number;
  authority: HostKeyAuthority | null;
  identity: SigningKey | null;
  // Results up to this sequence number were there before the intent was submitted: they answer
  // earlier intents (hostResultBaseline).
  afterSeq: number;
  pollMs?: number;
  // What the host is doing, whenever it changes (phase, waiting for signatures or a window…).
  onProgress?: (line: string) => void;
}

function progressLine(view: HostView, generation: number): string {
  if (view.awaitingSignatures?.generation === generation)
    return `waiting for more admins to co-sign generation ${generation}: ${view.awaitingSignatures.reason} (outpost approve)`;
  if (view.desired?.coSigning && view.desired.coSigning.missing > 0 && view.desired.generation === generation)
    return `generation ${generation} needs ${view.desired.coSigning.missing} more admin signature(s): outpost approve --host ${view.host} --generation ${generation}`;
  if (!view.phase)
    return view.online ? 'the host is online, no status yet' : 'the host has not reported yet (offline?)';
  const frozen = view.trust?.frozen ? ` (FROZEN: ${view.trust.reason ?? 'no fresh timestamp'})` : '';
  const window =
    view.phase === 'waiting-for-window' && view.window
      ? ` (${view.window.waitingFor}; next window ${view.window.nextStart ?? 'none within a week'})`
      : '';
  const target = view.target ? ` generation ${view.target.generation}` : '';
  return `${view.phase}${target}${window}${frozen}`;
}

// The host's newest counted result number now, before an intent is submitted (0: none).
export async function hostResultBaseline(
  serverUrl: string,
  host: string,
  options: { timeoutMs: number; authority: HostKeyAuthority | null; identity: SigningKey | null },
): Promise<number> {
  const view = await readHostView(serverUrl, host, options);
  return view.results.filter((r) => r.signatureValid).reduce((max, r) => Math.max(max, r.result.seq), 0);
}

export async function waitForHostOutcome(serverUrl: string, options: WaitOptions): Promise<WaitResult> {
  const deadline = Date.now() + options.timeoutMs;
  let lastLine = '';
  let hostKeys: HostView['hostKeys'] = options.authority ? 'enrollment' : 'unverified';
  let lastError: string | null = null;
  for (;;) {
    let view: HostView | null = null;
    try {
      view = await readHostView(serverUrl, options.host, {
        timeoutMs: Math.max(1000, Math.min(options.readTimeoutMs, deadline - Date.now())),
        authority: options.authority,
        identity: options.identity,
      });
      lastError = null;
    } catch (error) {
      // A coordinator restarting or a link down: keep waiting, say so once.
      const message = (error as Error).message;
      if (message !== lastError) options.onProgress?.(`cannot read ${options.host}'s status (${message}); retrying`);
      lastError = message;
    }
    if (view) {
      hostKeys = view.hostKeys;
      const counted = view.results
        .filter((r) => r.signatureValid && r.result.seq > options.afterSeq)
        .map((r) => r.result);
      const answer = counted
        .filter((r) => r.generation === options.generation && r.closure === options.closure)
        .sort((a, b) => b.seq - a.seq)[0];
      if (answer) return { outcome: answer.outcome, reason: answer.reason, seq: answer.seq, hostKeys };
      const newer = counted.find((r) => r.generation > options.generation && r.outcome === 'applied');
      if (newer)
        return {
          outcome: 'superseded',
          reason: `the host applied generation ${newer.generation} (${newer.closure}) instead: a newer intent replaced this one before it was installed`,
          seq: newer.seq,
          hostKeys,
        };
      const line = progressLine(view, options.generation);
      if (line !== lastLine) options.onProgress?.(line);
      lastLine = line;
    }
    if (Date.now() >= deadline)
      return {
        outcome: 'timeout',
        reason: `no result from ${options.host} for generation ${options.generation} within ${Math.round(options.timeoutMs / 1000)} s (last seen: ${lastLine || lastError || 'nothing'}); the intent stays deployed: follow it with 'outpost status --host ${options.host}'`,
        seq: null,
        hostKeys,
      };
    await sleep(Math.min(options.pollMs ?? 1000, Math.max(0, deadline - Date.now())));
  }
}
