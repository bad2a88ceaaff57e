import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { probeSyncPeer } from '../../../agent/peer-probe.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { desiredDocName } from '../../../shared/documents/names.js';
import { type FaultProxy, startFaultProxy } from '../../harness/fault-proxy.js';
import { type HostilePeer, startHostilePeer } from '../../harness/hostile-peer.js';

// The health confirmation's fresh sync (agent/peer-probe.ts) against a real peer over a real
// websocket, counted by a TCP proxy between them: a desired document whose peer keeps a long
// deleted history (as every coordinator does, for audits) must not be sent whole to the probe.
const key = generateSigningKey('agent');
const name = desiredDocName('h1');
const KiB = 1024;
let peer: HostilePeer;
let proxy: FaultProxy;

test.before(async () => {
  peer = await startHostilePeer();
  proxy = await startFaultProxy(Number(new URL(peer.url).port));
});

test.after(async () => {
  await proxy.close();
  await peer.close();
});

// An intent-sized entry (~1.8 KiB, like the fuzzer's).
const entry = (seq: number) => ({ seq, payload: 'x'.repeat(1800) });

test('a peer holding a long deleted history answers the probe with the difference only', async () => {
  const held = peer.doc(name);
  const intents = held.getArray<unknown>('intents');
  // 2,000 entries written and deleted, 24 kept: ~3.5 MiB of history.
  for (let seq = 0; seq < 2024; seq++) {
    intents.push([entry(seq)]);
    if (intents.length > 24) intents.delete(0, 1);
  }
  assert.ok(Y.encodeStateAsUpdate(held).length > 3 * KiB * KiB);
  // The agent's copy collects garbage: what it holds is the live entries.
  const agentCopy = new Y.Doc({ gc: true });
  Y.applyUpdate(agentCopy, Y.encodeStateAsUpdate(held));
  // One intent written since the agent's last sync.
  intents.push([entry(9999)]);

  proxy.resetCounters();
  const problem = await probeSyncPeer([proxy.url()], name, agentCopy, 15_000, key);
  assert.is(problem, null);
  const { down } = proxy.bytes();
  // The key proof's HTTP answer, the upgrade, the peer's step 1 and a step 2 holding one entry
  // and the delete set; without the agent's state vector: the whole history, ~3.5 MiB.
  assert.ok(down < 32 * KiB, `the probe received ${down} bytes`);
  // The probe wrote nothing into the peer's copy.
  assert.is(intents.length, 25);
});

test.run();
