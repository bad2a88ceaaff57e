import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { POLICY_DOC, TIMESTAMP_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readResults } from '../../shared/documents/status.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost } from '../harness/fleet.js';
import type { HostilePeer } from '../harness/hostile-peer.js';
import { startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy, startServingPeer, switchIntent } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// An endpoint that accepts every connection, syncs, and drops it a moment later (a coordinator
// that cannot store, or a hostile one) listed first in a real agent's --coordinator list, a working
// one second: the agent must end up on the working one (shared/sync/reconnect.ts counts a link
// that ended within HEALTHY_LINK_MS of its sync as a failure of its endpoint). Before, each sync
// reset the count, and the agent stayed on the first endpoint for good.
const org = makeTestOrg();
const dir = temporaryDirectory('agent-failover-flaky');
const signedV1 = signPolicy(basePolicy(org), org.root);

let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let closure = '';
const agents: DaemonProcess[] = [];
const stops: (() => Promise<void>)[] = [];
const timers: ReturnType<typeof setInterval>[] = [];

test.before(async () => {
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'failover-flaky-cache-1');
  closure = await buildSystemClosure({ name: 'nixos-system-failover-flaky' });
  await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
});

test.after(async () => {
  for (const timer of timers) clearInterval(timer);
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await Promise.all(stops.map((stop) => stop()));
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

async function servingPeer(): Promise<HostilePeer> {
  const { peer, stop } = await startServingPeer(org, [signedV1]);
  stops.push(stop);
  return peer;
}

test('an endpoint that syncs and then drops every connection is failed over from; the agent applies what the working one holds', async () => {
  const host = await prepareHost(dir, 'h1');
  const documents = [desiredDocName('h1'), statusDocName('h1'), POLICY_DOC, TIMESTAMP_DOC];
  const flaky = await servingPeer();
  const dropped = new Set<unknown>();
  timers.push(
    setInterval(() => {
      for (const name of documents)
        for (const ws of flaky.connections(name)) {
          // Each connection lives one tick (0.4-0.8 s): long enough to sync, far short of healthy.
          if (dropped.has(ws)) ws.terminate();
          else dropped.add(ws);
        }
    }, 400),
  );
  const working = await servingPeer();
  appendIntent(working.doc(desiredDocName('h1')), signIntent(switchIntent('h1', 1, closure, 'alice', 1), org.alice));
  const agent = startPolicyAgent(host, {
    coordinators: [flaky.url, working.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
  });
  agents.push(agent);
  await waitFor('the flaky endpoint to have synced and dropped the agent', () => dropped.size >= 2, 60_000, 200);
  const result = await waitFor(
    "the agent's signed result on the working endpoint",
    () =>
      readResults(working.doc(statusDocName('h1')))
        .results.filter(
          (r) => r.signature.publicKey === host.publicKey && verifyPayloadSignature('result', r.result, r.signature),
        )
        .map((r) => r.result)
        .find((r) => r.generation === 1),
    120_000,
    200,
  );
  assert.is(result.outcome, 'applied', result.reason);
  assert.equal(await activations(host), [`switch ${closure}`]);
  assert.ok(flaky.connectsTo(desiredDocName('h1')) >= 2, 'the agent did reach the flaky endpoint first');
});

test.run();
