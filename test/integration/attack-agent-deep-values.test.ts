import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { intentsArray } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC, writeTimestamp } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readResults } from '../../shared/documents/status.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Timestamp } from '../../shared/schemas/policy.js';
import type { Result } from '../../shared/schemas/report.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy, switchIntent } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Finding 10 of the fuzzer (docs/fuzzing.md): lib0 decodes Yjs values recursively, so an entry
// nested a few thousand levels deep, written into an agent's desired document by a compromised
// coordinator, overflowed the agent's stack while the update was applied; y-protocols caught the
// RangeError and printed it, the update was lost, and every later update from that writer waited
// for it for ever: the agent silently stopped seeing new intents. The attacker here is a real
// websocket server speaking the real protocol (test/harness/hostile-peer.ts) to a real agent
// process, and the genuine intent after the poisoned entry is a real Nix closure.
const org = makeTestOrg();
const dir = temporaryDirectory('attack-deep-values');
const signedV1 = signPolicy(basePolicy(org), org.root);

let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
const closures: string[] = [];
const agents: DaemonProcess[] = [];
const peers: HostilePeer[] = [];
const stops: (() => void)[] = [];

test.before(async () => {
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'attack-deep-values-cache-1');
  for (const name of ['a', 'b']) {
    const closure = await buildSystemClosure({ name: `nixos-system-deep-values-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
});

test.after(async () => {
  for (const stop of stops) stop();
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await Promise.all(peers.map((p) => p.close()));
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

// A compromised coordinator that still passes the fleet's genuine policy and timestamps on.
async function hostilePeer(): Promise<HostilePeer> {
  const peer = await startHostilePeer();
  peers.push(peer);
  appendPolicy(peer.doc(POLICY_DOC), signedV1);
  let seq = 0;
  const stamp = (): void => {
    seq += 1;
    const timestamp: Timestamp = { kind: 'timestamp', at: new Date().toISOString(), seq, policyVersion: 1 };
    writeTimestamp(peer.doc(TIMESTAMP_DOC), {
      timestamp,
      signature: signPayload('timestamp', timestamp, org.timestamp),
    });
  };
  stamp();
  const timer = setInterval(stamp, 500);
  stops.push(() => clearInterval(timer));
  return peer;
}

function intent(host: string, generation: number, closure: string): Intent {
  return switchIntent(host, generation, closure, 'alice', 1);
}

function resultFor(peer: HostilePeer, host: SimulatedHost, generation: number, timeoutMs: number): Promise<Result> {
  return waitFor(
    `${host.host}'s signed result for generation ${generation}`,
    () =>
      readResults(peer.doc(statusDocName(host.host)))
        .results.filter(
          (r) => r.signature.publicKey === host.publicKey && verifyPayloadSignature('result', r.result, r.signature),
        )
        .map((r) => r.result)
        .find((r) => r.generation === generation),
    timeoutMs,
    200,
  );
}

// A value nested `depth` levels deep, built without recursion.
function nested(depth: number): unknown {
  let value: unknown = 'bottom';
  for (let i = 0; i < depth; i++) value = { x: value };
  return value;
}

test('finding 10: an entry nested 4,500 levels deep, written by a compromised coordinator into the desired document of a running agent, is defused and logged; the genuine intent written after it is applied', async () => {
  const peer = await hostilePeer();
  const host = await prepareHost(dir, 'h1');
  const desired = peer.doc(desiredDocName('h1'));
  intentsArray(desired).push([signIntent(intent('h1', 1, closures[0]!), org.alice)]);
  const agent = startAgentProcess(host, {
    coordinators: [peer.url],
    adminKeys: [],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  agents.push(agent);
  const first = await resultFor(peer, host, 1, 120_000);
  assert.is(first.outcome, 'applied', first.reason);

  // While the agent is connected: an intent-like entry 4,500 levels deep, sent as an update
  // message (decoded deep in the websocket handler's stack), then the admin's next intent, which
  // Yjs integrates only after the entry before it from the same writer.
  const genuine = signIntent(intent('h1', 2, closures[1]!), org.alice);
  intentsArray(desired).push([{ ...genuine, intent: { ...genuine.intent, generation: 3, extra: nested(4_500) } }]);
  intentsArray(desired).push([genuine]);
  const second = await resultFor(peer, host, 2, 90_000);
  assert.is(second.outcome, 'applied', second.reason);
  assert.equal(await activations(host), [`switch ${closures[0]}`, `switch ${closures[1]}`]);

  const defused = logEvents(agent, 'value-too-deep');
  assert.ok(defused.length >= 1, 'the agent says what it replaced');
  assert.is(defused[0]?.document, desiredDocName('h1'));
  assert.equal(defused[0]?.writers, [desired.clientID], "the writer's Yjs client id");
  assert.ok(
    ((defused[0]?.values ?? []) as { depth: number }[]).some((value) => value.depth > 4_500),
    JSON.stringify(defused[0]),
  );
  assert.not.match(agent.logs(), /Caught error while handling a Yjs update/);
  assert.is(agent.child.exitCode, null, 'the agent is still running');
});

test.run();
