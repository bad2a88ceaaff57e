import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { resolveAgentConfig } from '../../../agent/config.js';
import { type IntentTrust, openIntentTrust } from '../../../agent/intent-trust.js';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { initialAgentState } from '../../../agent/pipeline/state.js';
import {
  type AgentRuntime,
  checkStatusDocument,
  createAgentRuntime,
  evaluate,
  installGate,
  sleepMs,
  statusContent,
  verifyFloor,
} from '../../../agent/run-agent.js';
import { generateSigningKey, type SigningKey } from '../../../shared/crypto/keys.js';
import { appendIntent } from '../../../shared/documents/desired.js';
import { readCurrentStatus, readResults } from '../../../shared/documents/status.js';
import type { DocumentConnection } from '../../../shared/node/connect.js';
import { createMemoryLogger } from '../../../shared/node/log.js';
import { parseWindow } from '../../../shared/schedule/windows.js';
import type { Intent } from '../../../shared/schemas/intent.js';
import { sleep } from '../../../shared/time/sleep.js';
import type { Freshness } from '../../../shared/trust/fleet-trust.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The agent's decisions on an explicit runtime record, with stand-in connections and a trust
// whose freshness the test sets: the wait for a sync peer before the floor is rebuilt, which
// intent becomes the target (refusals reported once, superseded ones skipped, a newer one
// replacing a target not yet installed), and what a freeze holds back.

// A Wednesday, 12:00 UTC; the maintenance window (Mondays) is closed, so a chosen target waits
// for it and the pipeline goes no further: nothing is downloaded or installed here.
const NOW = Date.parse('2025-01-08T12:00:00Z');
const closure = (n: number): string => `/nix/store/${String(n).padStart(32, 'a')}-system`;
const admin = generateSigningKey('alice');
const stranger = generateSigningKey('mallory');
const hostKey = generateSigningKey('h1');

interface Harness {
  agent: AgentRuntime;
  events: Record<string, unknown>[];
  freeze(reason: string | null): void;
  revoke(key: SigningKey): void;
  dir: string;
}

const dirs: string[] = [];
test.after.each(() => {
  for (const dir of dirs.splice(0)) removeDirectory(dir);
});

async function harness(): Promise<Harness> {
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

function deploy(agent: AgentRuntime, generation: number, key: SigningKey = admin): string {
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

const results = (agent: AgentRuntime) => readResults(agent.statusDoc).results.map((r) => r.result);
const logged = (events: Record<string, unknown>[], event: string) => events.filter((e) => e.event === event);

function fakeConnection(): DocumentConnection & { provider: { synced: boolean } } {
  return { provider: { synced: false } } as unknown as DocumentConnection & { provider: { synced: boolean } };
}

test('with no agent state, the floor waits for both documents to sync, then comes from own signed results', async () => {
  const { agent, events } = await harness();
  agent.state = { ...agent.state, floorUnverified: true };
  const desired = fakeConnection();
  const status = fakeConnection();
  agent.desired = desired;
  agent.status = status;
  let done = false;
  const waiting = verifyFloor(agent).then(() => {
    done = true;
  });
  const digest = deploy(agent, 7);
  const result = {
    kind: 'result' as const,
    host: 'h1',
    seq: 1,
    at: new Date(NOW).toISOString(),
    outcome: 'failed' as const,
    generation: 7,
    closure: closure(7),
    action: 'switch' as const,
    intentDigest: digest,
    reason: 'x',
    outputTail: '',
  };
  appendSignedResult(agent.statusDoc, result, hostKey);
  // A peer's result with a huge generation: not this host's key, so it moves nothing.
  appendSignedResult(agent.statusDoc, { ...result, seq: 2, generation: 999_999 }, stranger);
  desired.provider.synced = true;
  await sleep(450);
  assert.not.ok(done, 'one document synced is not enough');
  assert.is(logged(events, 'floor-rebuild-waiting').length, 1);
  status.provider.synced = true;
  await waiting;
  assert.is(agent.state.floorUnverified, false);
  assert.is(agent.state.floorGeneration, 7, "from this host's own attempt, not the peer's entry");
  assert.is(logged(events, 'floor-rebuilt').length, 1);

  // Stopping ends the wait without deciding anything.
  const other = (await harness()).agent;
  other.state = { ...other.state, floorUnverified: true };
  const stopped = verifyFloor(other);
  other.stopped = true;
  await stopped;
  assert.is(other.state.floorUnverified, true);
});

test('target choice: the newest valid intent, refusals reported once, older ones skipped, newer ones replace it', async () => {
  const { agent, events } = await harness();
  const first = deploy(agent, 1);
  const second = deploy(agent, 2);
  const forged = deploy(agent, 3, stranger);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, second);
  assert.is(agent.state.phase, 'waiting-for-window', 'the maintenance window is closed');
  assert.is(agent.state.floorGeneration, 2, 'the floor rose before anything was done');
  assert.equal(
    results(agent).map((r) => [r.generation, r.outcome, r.reason.split(':')[0]]),
    [[3, 'refused', 'unknown-signer']],
  );
  assert.ok(agent.state.handledDigests.includes(first) && agent.state.handledDigests.includes(forged));
  const published = readCurrentStatus(agent.statusDoc)?.status;
  assert.equal(published?.target, { generation: 2, closure: closure(2) });
  assert.is(published?.window?.waitingFor, 'download');
  assert.is(published?.window?.nextStart, '2025-01-13T03:00:00.000Z');
  assert.is(sleepMs(agent), 60_000, 'the window is days away: wake at the regular interval');

  await evaluate(agent);
  assert.is(results(agent).length, 1, 'nothing reported twice');
  assert.is(agent.state.target?.digest, second);

  const newer = deploy(agent, 4);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, newer, 'not yet installed: a newer intent replaces it');
  assert.is(agent.state.floorGeneration, 4);
  assert.is(logged(events, 'superseded').filter((e) => e.by === 4).length, 1);
});

test('frozen trust: nothing new is taken on or refused, the target is held, and the status says why', async () => {
  const { agent, events, freeze } = await harness();
  const target = deploy(agent, 1);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, target);

  freeze('no fresh signed timestamp for 3 s');
  deploy(agent, 2);
  deploy(agent, 3, stranger);
  await evaluate(agent);
  assert.is(agent.state.target?.digest, target, 'no newer intent taken on while frozen');
  assert.is(results(agent).length, 0, 'no refusal decided under a possibly stale policy');
  assert.equal(installGate(agent, agent.state.target!), {
    decision: 'hold',
    reason: 'no fresh signed timestamp for 3 s',
  });
  assert.is(logged(events, 'install-held').length, 1, 'logged once per reason');
  const trust = statusContent(agent).trust;
  assert.is(trust?.frozen, true);
  assert.is(trust?.reason, 'no fresh signed timestamp for 3 s');
  assert.is(logged(events, 'trust-frozen').length, 1);

  // Without a target, a frozen agent starts nothing either.
  const idle = await harness();
  idle.freeze('withheld');
  deploy(idle.agent, 1);
  await evaluate(idle.agent);
  assert.is(idle.agent.state.target, null);
  assert.equal(results(idle.agent), []);

  freeze(null);
  await evaluate(agent);
  assert.is(agent.state.target?.signed.intent.generation, 2, 'fresh again: the newer intent wins');
  assert.is(statusContent(agent).trust?.frozen, false);
});

test('a target whose signer lost its power before installing is dropped with a signed refusal', async () => {
  const { agent, revoke } = await harness();
  deploy(agent, 1);
  await evaluate(agent);
  assert.is(agent.state.target?.signed.intent.generation, 1);
  revoke(admin);
  await evaluate(agent);
  assert.is(agent.state.target, null);
  assert.is(agent.state.phase, 'idle');
  const [refusal] = results(agent);
  assert.is(refusal?.outcome, 'refused');
  assert.match(refusal?.reason ?? '', /checked again before installing/);
});

test('entries in the status document this host did not sign are reported once and never counted', async () => {
  const { agent, events } = await harness();
  appendSignedResult(
    agent.statusDoc,
    {
      kind: 'result',
      host: 'h1',
      seq: 9,
      at: new Date(NOW).toISOString(),
      outcome: 'applied',
      generation: 50,
      closure: closure(50),
      action: 'switch',
      intentDigest: 'ab'.repeat(32),
      reason: '',
      outputTail: '',
    },
    stranger,
  );
  agent.statusDoc.getArray('results').push([{ not: 'a result' }]);
  checkStatusDocument(agent);
  checkStatusDocument(agent);
  const anomalies = logged(events, 'status-document-anomaly');
  assert.is(anomalies.length, 2, 'one each, once');
  assert.equal(anomalies.map((a) => a.problem).sort(), ['foreign-key', 'malformed'].sort());
  assert.is(agent.dirty, true, 'no own current status: asks to write it again');
  assert.is(agent.state.resultSeq, 0);
});

test.run();
