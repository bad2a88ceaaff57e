import * as Y from 'yjs';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { connectDocument, type DocumentConnection } from '../shared/node/connect.js';
import { rolloutDocName } from '../shared/rollout/document.js';
import { decideFromDocument, type HostDecision } from '../shared/rollout/judge.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import type { ReconnectOptions } from '../shared/sync/connect.js';
import { backoffDelay } from '../shared/sync/reconnect.js';
import {
  checkIntentBindingAndTime,
  type IntentRank,
  type IntentVerifier,
  intentDigest,
} from '../shared/trust/verify-intent.js';
import type { IntentTrust } from './intent-trust.js';
import type { InstallGate } from './pipeline/pipeline.js';

// The agent's side of rollouts (docs/rollouts.md, "Agent check"). A rollout intent in the desired
// document is only a pointer to fleet/rollout-<id>: the agent follows that document, derives its
// own intent from the signed plan, and lets it into the usual selection only when its wave's gate
// is open by its own check of the evidence; until then the intent is left out (never refused, so
// it is taken the moment the gate opens). Right before the system is first touched the decision
// is made again: paused holds, aborted refuses. A placement at or below the host's anti-rollback
// floor (raised meanwhile by a deploy, a bundle, or another coordinator) is refused once, so its
// wave's gate counts the host as failed instead of waiting for it for ever.

// Rollout documents followed at once (the newest rollouts naming this host).
const MAX_FOLLOWED = 8;
// What peers may make the agent hold of one rollout document (a 10,000-host plan is ~2.5 MiB,
// its evidence ~5 MiB): past it the copy is dropped and followed afresh after a backoff.
export const MAX_ROLLOUT_DOCUMENT_BYTES = 64 * 2 ** 20;
const MAX_REPORTS = 100;

export interface RolloutTracker {
  // The intents to select from: rollout intents replaced by the ones this host derives itself
  // from the plans, and only those whose decision is go (or a refusal to report); the others wait.
  admit(intents: SignedIntent[], context: AdmitContext): SignedIntent[];
  // The selection's verifier: rollout intents by the decision `admit` made, others by `verify`.
  verifier(verify: IntentVerifier): IntentVerifier;
  // For a rollout target right before the system is touched: decided again now. Null for others.
  installGate(signed: SignedIntent): InstallGate | null;
  onChange(listener: () => void): void;
  close(): void;
}

export interface AdmitContext {
  // The host's anti-rollback floor: placements at or below it are refused.
  floor: IntentRank;
  current: SignedIntent | null;
  // Digests of intents this host has answered (refused, taken on) or runs: a rollout intent at or
  // below the floor with one of these digests needs nothing more, so its document is not followed.
  answered: ReadonlySet<string>;
  // The digest of what runs: installed from its placement, so never refused as below the floor.
  applied: string | null;
}

interface Followed {
  id: string;
  connection: DocumentConnection | null;
  doc: Y.Doc;
  bytes: number;
  drops: number;
  reopen: NodeJS.Timeout | null;
}

// The agent's copy of a rollout document collects garbage: it reads only the entries present (the
// plans, actions and evidence arrays as they are now, shared/rollout/judge.ts), never an earlier
// state, so an entry a peer deleted needs no room in its memory. The servers keep the history for
// audits; a copy that kept it too grew with every entry a writer wrote and deleted, without end.
function newRolloutDoc(): Y.Doc {
  return new Y.Doc({ gc: true });
}

export function openRolloutTracker(options: {
  endpoints: string[];
  host: string;
  // The host key every connection proves (coordinators and relays with --org-root require it).
  identity: SigningKey;
  trust: IntentTrust;
  logger: Logger;
  reconnect?: ReconnectOptions;
  // How a rollout document is followed (unit tests give a stand-in for the websocket).
  connect?: typeof connectDocument;
}): RolloutTracker {
  const { host, trust, logger } = options;
  const followed = new Map<string, Followed>();
  const listeners: (() => void)[] = [];
  // Decisions of the last admit(), by the derived intent's digest.
  let decisions = new Map<string, HostDecision>();
  const reported = new Set<string>();
  let retryTimer: NodeJS.Timeout | null = null;
  let retryAt = Number.POSITIVE_INFINITY;
  let closed = false;
  const changed = (): void => {
    for (const listener of listeners) listener();
  };

  function attach(entry: Followed): void {
    const doc = newRolloutDoc();
    entry.doc = doc;
    entry.bytes = 0;
    doc.on('update', (update: Uint8Array) => {
      if (entry.doc !== doc) return;
      entry.bytes += update.length;
      if (entry.bytes > MAX_ROLLOUT_DOCUMENT_BYTES) return drop(entry);
      changed();
    });
    entry.connection = (options.connect ?? connectDocument)(options.endpoints, rolloutDocName(entry.id), {
      doc,
      identity: options.identity,
      ...options.reconnect,
    });
  }

  function drop(entry: Followed): void {
    const connection = entry.connection;
    entry.connection = null;
    entry.drops += 1;
    const backoff = options.reconnect ?? { baseBackoffMs: 1000, maxBackoffMs: 300_000 };
    const delayMs = backoffDelay(entry.drops, backoff.baseBackoffMs, backoff.maxBackoffMs);
    logger.error(
      {
        event: 'document-too-large',
        document: rolloutDocName(entry.id),
        bytes: entry.bytes,
        limit: MAX_ROLLOUT_DOCUMENT_BYTES,
        retryInMs: Math.round(delayMs),
      },
      `peers sent more than ${MAX_ROLLOUT_DOCUMENT_BYTES} bytes for ${rolloutDocName(entry.id)}: dropped it, following it afresh in ${Math.round(delayMs / 1000)} s (a relay or coordinator may be flooding it)`,
    );
    setImmediate(() => connection?.close());
    entry.doc = newRolloutDoc();
    entry.reopen = setTimeout(() => {
      entry.reopen = null;
      if (!closed && followed.get(entry.id) === entry) attach(entry);
    }, delayMs);
    changed();
  }

  function follow(ids: string[]): void {
    const wanted = new Set(ids.slice(0, MAX_FOLLOWED));
    for (const [id, entry] of followed) {
      if (wanted.has(id)) continue;
      if (entry.reopen) clearTimeout(entry.reopen);
      entry.connection?.close();
      followed.delete(id);
    }
    for (const id of wanted) {
      if (followed.has(id)) continue;
      const entry: Followed = { id, connection: null, doc: newRolloutDoc(), bytes: 0, drops: 0, reopen: null };
      followed.set(id, entry);
      attach(entry);
    }
  }

  function report(key: string, level: 'info' | 'warn', fields: Record<string, unknown>, message: string): void {
    if (reported.has(key) || reported.size >= MAX_REPORTS * 10) return;
    reported.add(key);
    logger[level](fields, message);
  }

  function decide(id: string, plan: string, floor?: IntentRank): HostDecision | null {
    const entry = followed.get(id);
    if (!entry) return null;
    return decideFromDocument(entry.doc, plan, {
      host,
      chain: trust.chain(),
      now: trust.now(),
      ...(floor ? { floor } : {}),
    });
  }

  // Wakes the agent when a soak ends (the only change that comes by time alone).
  function wakeAt(at: number): void {
    if (at >= retryAt && retryTimer) return;
    if (retryTimer) clearTimeout(retryTimer);
    retryAt = at;
    retryTimer = setTimeout(
      () => {
        retryTimer = null;
        retryAt = Number.POSITIVE_INFINITY;
        changed();
      },
      Math.max(50, Math.min(2 ** 31 - 1, at - trust.now() + 50)),
    );
    retryTimer.unref();
  }

  return {
    admit(intents, context) {
      const plain: SignedIntent[] = [];
      type Pointer = { id: string; plan: string; generation: number; digest: string; current: boolean };
      const pointers = new Map<string, Pointer>();
      for (const signed of intents) {
        const rollout = signed.intent.rollout;
        if (!rollout) {
          plain.push(signed);
          continue;
        }
        if (signed.intent.host !== host) continue;
        pointers.set(`${rollout.id} ${rollout.plan}`, {
          id: rollout.id,
          plan: rollout.plan,
          generation: signed.intent.generation,
          digest: intentDigest(signed),
          current: false,
        });
      }
      const currentRollout = context.current?.intent.rollout;
      if (currentRollout)
        pointers.set(`${currentRollout.id} ${currentRollout.plan}`, {
          id: currentRollout.id,
          plan: currentRollout.plan,
          generation: Number.MAX_SAFE_INTEGER,
          digest: intentDigest(context.current!),
          current: true,
        });
      if (trust.mode !== 'policy') {
        if (pointers.size)
          report(
            'admin-keys',
            'warn',
            { event: 'rollout-ignored', reason: 'admin-keys' },
            'the desired document holds rollout intents; rollouts need the fleet policy (--org-root): ignoring them',
          );
        decisions = new Map();
        return plain;
      }
      // Rollouts that may still be installed here are followed, the newest first; then those at or
      // below the floor not answered yet, to be refused once. (The coordinator's pointer is the
      // intent the host derives, so its digest is the one answered; a pointer that differs is
      // followed while it is in the desired document, and its refusal is still given once:
      // handledDigests keeps the derived digest while the pointer is there, agent/select.ts.)
      const newestFirst = (a: Pointer, b: Pointer): number => b.generation - a.generation;
      const above = [...pointers.values()].filter((p) => p.generation > context.floor.generation).sort(newestFirst);
      const stale = [...pointers.values()]
        .filter((p) => p.generation <= context.floor.generation && !context.answered.has(p.digest))
        .sort(newestFirst);
      const live = [...above, ...stale];
      follow([...new Set(live.map((p) => p.id))]);
      const next = new Map<string, HostDecision>();
      const admitted: SignedIntent[] = [];
      for (const pointer of live) {
        // The target being installed is the floor itself: it is not measured against it.
        const decision = decide(pointer.id, pointer.plan, pointer.current ? undefined : context.floor);
        if (!decision) continue;
        // What runs here was installed from this very placement: nothing to answer.
        if (
          decision.decision === 'refuse' &&
          decision.code === 'rollback' &&
          intentDigest(decision.intent) === context.applied
        )
          continue;
        const document = rolloutDocName(pointer.id);
        if (decision.decision === 'wait') {
          report(
            `${pointer.plan} ${decision.reason.replace(/\d+ s left/, '')}`,
            'info',
            { event: 'rollout-waiting', document, wave: decision.wave, reason: decision.reason },
            decision.reason,
          );
          if (decision.retryAt !== undefined) wakeAt(decision.retryAt);
          continue;
        }
        const digest = intentDigest(decision.intent);
        next.set(digest, decision);
        admitted.push(decision.intent);
        if (decision.decision === 'go')
          report(
            `go ${digest}`,
            'info',
            {
              event: 'rollout-gate-open',
              document,
              wave: decision.wave,
              generation: decision.intent.intent.generation,
            },
            `rollout ${pointer.id}: this host's wave ${decision.wave} may start (its own check of the plan and evidence)`,
          );
      }
      decisions = next;
      return [...plain, ...admitted];
    },

    verifier(verify) {
      return (signed) => {
        const rollout = signed.intent.rollout;
        if (!rollout) return verify(signed);
        const digest = intentDigest(signed);
        let decision = decisions.get(digest);
        if (!decision) {
          // Not in the last admit (asked before one ran): decided now, for exactly this intent.
          const fresh = decide(rollout.id, rollout.plan);
          if (fresh && fresh.decision !== 'wait' && intentDigest(fresh.intent) === digest) decision = fresh;
        }
        if (decision?.decision === 'go') return checkIntentBindingAndTime(signed, host, trust.now());
        if (decision?.decision === 'refuse') return { ok: false, code: decision.code, reason: decision.reason };
        return {
          ok: false,
          code: 'bad-signature',
          reason: 'a rollout intent counts only as this agent derives it from the signed plan',
        };
      };
    },

    installGate(signed) {
      const rollout = signed.intent.rollout;
      if (!rollout) return null;
      const decision = decide(rollout.id, rollout.plan);
      if (!decision || decision.decision === 'wait') {
        const reason = decision?.reason ?? `${rolloutDocName(rollout.id)} not received yet`;
        report(
          `hold ${reason}`,
          'warn',
          { event: 'install-held', document: rolloutDocName(rollout.id), generation: signed.intent.generation, reason },
          `holding the rollout target before touching the system: ${reason}`,
        );
        return { decision: 'hold', reason };
      }
      if (decision.decision === 'refuse') return { decision: 'refuse', reason: `${decision.code}: ${decision.reason}` };
      if (intentDigest(decision.intent) !== intentDigest(signed))
        return {
          decision: 'refuse',
          reason: 'bad-signature: the target is not the intent this host derives from the plan',
        };
      return { decision: 'go' };
    },

    onChange(listener) {
      listeners.push(listener);
    },

    close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      for (const entry of followed.values()) {
        if (entry.reopen) clearTimeout(entry.reopen);
        entry.connection?.close();
      }
      followed.clear();
    },
  };
}
