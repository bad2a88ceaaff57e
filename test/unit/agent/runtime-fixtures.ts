import { join } from 'node:path';
import * as Y from 'yjs';
import { resolveAgentConfig } from '../../../agent/config.js';
import { type IntentTrust, openIntentTrust } from '../../../agent/intent-trust.js';
import { initialAgentState } from '../../../agent/pipeline/state.js';
import { createAgentRuntime } from '../../../agent/run-agent.js';
import type { AgentRuntime } from '../../../agent/runtime.js';
import { generateSigningKey, type SigningKey } from '../../../shared/crypto/keys.js';
import { appendIntent } from '../../../shared/documents/desired.js';
import { readResults } from '../../../shared/documents/status.js';
import type { DocumentConnection } from '../../../shared/node/connect.js';
import { createMemoryLogger } from '../../../shared/node/log.js';
import { parseWindow } from '../../../shared/schedule/windows.js';
import type { Intent } from '../../../shared/schemas/intent.js';
import type { Freshness } from '../../../shared/trust/fleet-trust.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// An agent runtime record (createAgentRuntime) with stand-in connections and a trust whose
// freshness the test sets, shared by the unit tests of the agent's modules.

// A Wednesday, 12:00 UTC; the maintenance window (Mondays) is closed, so a chosen target waits
// for it and the pipeline goes no further: nothing is downloaded or installed here.
export const NOW = Date.parse('2025-01-08T12:00:00Z');
export const closure = (n: number): string => `/nix/store/${String(n).padStart(32, 'a')}-system`;
export const admin = generateSigningKey('alice');
export const stranger = generateSigningKey('mallory');
export const hostKey = generateSigningKey('h1');

export interface Harness {
  agent: AgentRuntime;
  events: Record<string, unknown>[];
  freeze(reason: string | null): void;
  revoke(key: SigningKey): void;
  dir: string;
}

const dirs: string[] = [];
// Each test file registers this with test.after.each: the directories its harnesses made.
export function removeHarnessDirectories(): void {
  for (const dir of dirs.splice(0)) removeDirectory(dir);
}

export async function harness(): Promise<Harness> {
  const dir = temporaryDirectory('agent-runtime');
  dirs.push(dir);
  const memory = createMemoryLogger('agent');
  const base = await openIntentTrust({
    host: 'h1',
    endpoints: ['ws://127.0.0.1:9'],
    identity: hostKey,
    stateDir: dir,
    orgRootKeys: [],
    adminKeys: [admin.publicKey],
    freezeAfterMs: 60_000,
    logger: memory.logger,
  });
  let frozen: string | null = null;
  const revoked = new Set<string>();
  const trust: IntentTrust = {
    ...base,
    verify: (signed) =>
      signed.signatures.some((s) => revoked.has(s.publicKey))
        ? { ok: false, code: 'unknown-signer', reason: 'revoked' }
        : base.verify(signed),
    freshness: (): Freshness =>
      frozen === null
        ? base.freshness()
        : { ...base.freshness(), enforced: true, frozen: true, reason: frozen, lastTimestampAt: null },
  };
  const config = resolveAgentConfig({
    host: 'h1',
    key: hostKey,
    coordinators: ['ws://127.0.0.1:9'],
    trust,
    substituters: [],
    trustedCacheKeys: [],
    profile: join(dir, 'profile'),
    stateDir: dir,
    fetchTimeoutMs: 60_000,
    activationTimeoutMs: 60_000,
    logger: memory.logger,
    maintenanceWindows: [parseWindow('Mon 03:00-04:00')],
    timeZone: 'UTC',
    now: () => NOW,
  });
  const agent = createAgentRuntime(config, { ...initialAgentState(), floorUnverified: false }, new Y.Doc({ gc: true }));
  return {
    agent,
    events: memory.events,
    freeze: (reason) => {
      frozen = reason;
    },
    revoke: (key) => void revoked.add(key.publicKey),
    dir,
  };
}

export function deploy(agent: AgentRuntime, generation: number, key: SigningKey = admin): string {
  const intent: Intent = {
    kind: 'intent',
    host: 'h1',
    generation,
    closure: closure(generation),
    action: 'switch',
    // Intents are checked against the trust's clock (the real one), windows against config.now.
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: key.name,
  };
  const signed = signIntent(intent, key);
  appendIntent(agent.desiredDoc, signed);
  return intentDigest(signed);
}

export const results = (agent: AgentRuntime) => readResults(agent.statusDoc).results.map((r) => r.result);
export const logged = (events: Record<string, unknown>[], event: string) => events.filter((e) => e.event === event);

export function fakeConnection(): DocumentConnection & { provider: { synced: boolean } } {
  return { provider: { synced: false } } as unknown as DocumentConnection & { provider: { synced: boolean } };
}
