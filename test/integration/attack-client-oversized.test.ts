import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { DEFAULT_LIMITS } from '../../coordinator/limits.js';
import { appendPolicy, POLICY_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { MAX_SERVER_MESSAGE_BYTES } from '../../shared/node/connect.js';
import { prepareHost, startAgentProcess } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// A compromised coordinator or relay sends a client one websocket message far larger than any
// document a server keeps. ws accepts 100 MiB by default, so every connection of every agent
// could be made to hold that much. The attacker's real position (test/harness/hostile-peer.ts):
// the server a real agent process connects to, speaking the real protocol. The agent must close
// that connection at the bound, log why, keep running and reconnect.
const org = makeTestOrg();
let dir = '';
let peer: HostilePeer;
let agent: DaemonProcess;

test.before(async () => {
  dir = temporaryDirectory('attack-client-oversized');
  peer = await startHostilePeer();
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(basePolicy(org), org.root));
  const host = await prepareHost(dir, 'h1');
  agent = startAgentProcess(host, {
    coordinators: [peer.url],
    adminKeys: [],
    // Nothing is ever fetched: the peer holds no intent.
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: ['outpost-test-cache-1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await peer?.close();
  if (dir && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test("the client's bound covers the largest document a server keeps, and is below ws's 100 MiB default", () => {
  assert.ok(MAX_SERVER_MESSAGE_BYTES >= DEFAULT_LIMITS.maxDocumentBytes + 64 * 1024);
  assert.ok(MAX_SERVER_MESSAGE_BYTES < 100 * 1024 * 1024);
});

test('a message over the bound closes the connection with a logged reason; the agent stays up and reconnects', async () => {
  const name = desiredDocName('h1');
  await waitFor('the agent to connect to its desired document', () => peer.connections(name).length > 0, 60_000);
  const before = peer.connectsTo(name);
  const socket = peer.connections(name)[0]!;
  // A sync-message prefix and then bytes: the bound is checked on the frame's declared length.
  const huge = Buffer.alloc(MAX_SERVER_MESSAGE_BYTES + 1024);
  await new Promise<void>((resolve) => socket.send(huge, () => resolve()));
  await waitFor(
    'the agent to log why it closed the connection',
    () =>
      logEvents(agent, 'connection-lost').some(
        (e) => e.document === name && /sent a message over \d+ bytes/.test(String(e.reason)),
      ),
    30_000,
  );
  const logged = logEvents(agent, 'connection-lost').find((e) => /sent a message over/.test(String(e.reason)))!;
  assert.match(String(logged.reason), new RegExp(`over ${MAX_SERVER_MESSAGE_BYTES} bytes`));
  await waitFor('the agent to reconnect', () => peer.connectsTo(name) > before, 30_000);
  assert.is(agent.child.exitCode, null, 'the agent is still running');
  assert.equal(logEvents(agent, 'agent-error'), []);
});

test.run();
