import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { WebSocket } from 'ws';
import * as Y from 'yjs';
import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../../shared/documents/status.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { Result } from '../../shared/schemas/report.js';
import { commitTentativeMessage, tentativeUpdateMessage } from '../../shared/sync/tentative.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import type { BinaryCacheServer } from '../harness/cache-server.js';
import { activations, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { type LifecycleFleet, logEvents, readAgentState, startLifecycleFleet } from '../harness/lifecycle-fleet.js';
import { switchIntent } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Tentative delivery (shared/sync/tentative.ts) from the attacker's real position: a coordinator
// or relay that hands a real agent process a validly signed intent tentatively (message 16) and
// then crashes, stays silent or breaks the order, without the commit (message 17) that says the
// update is durable. The agent's claim: it never applies, acts on or reports an intent it got only
// tentatively, so a coordinator that loses an update before its append is durable cannot make a
// host install what the log never had. The agents list the hostile server first and a real
// coordinator second (they fail over); the real coordinator never has the held intent.
let fleet: LifecycleFleet;
// HELD is only ever sent tentatively (and, in the positive control, committed); LOGGED is the
// real coordinator's intent, which shows that the agent went on working.
let held: string;
let logged: string;
const HELD_GENERATION = 5;
const peers: HostilePeer[] = [];

test.before(async () => {
  fleet = await startLifecycleFleet(temporaryDirectory('attack-agent-tentative'), ['--log-level', 'debug']);
  held = await buildSystemClosure({ name: 'nixos-system-tentative-held' });
  logged = await buildSystemClosure({ name: 'nixos-system-tentative-logged' });
  await fleet.publish(held);
  await fleet.publish(logged);
});

test.after(async () => {
  await Promise.all(peers.map((peer) => peer.close()));
  await fleet?.close();
  if (fleet && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(fleet.dir);
});

interface Victim {
  host: SimulatedHost;
  agent: DaemonProcess;
  // Its own cache server, so that its request log is this agent's alone.
  cache: BinaryCacheServer;
  peer: HostilePeer;
  desired: string;
  // The agent's tentative connections to its desired document on the hostile server, attacked.
  attacked: WebSocket[];
}

// A real agent whose first coordinator is a hostile server that does `attack` on each connection
// of the agent's desired document that asked for tentative delivery, once it has answered the
// agent's sync step 1 (`earlier`: how many it attacked before). The agent's other connections to
// the document (its peer probe, a plain reader) are served plainly.
async function victim(
  id: string,
  attack: (socket: WebSocket, peer: HostilePeer, earlier: number) => void,
): Promise<Victim> {
  const peer = await startHostilePeer();
  peers.push(peer);
  const desired = desiredDocName(id);
  const attacked: WebSocket[] = [];
  peer.afterHandshake(desired, (socket, tentative) => {
    if (!tentative) return;
    attacked.push(socket);
    attack(socket, peer, attacked.length - 1);
  });
  const host = await fleet.host(id);
  const cache = await fleet.serveCache();
  const agent = fleet.startAgent(host, cache.url, ['--backoff-base', '0.2', '--backoff-max', '1'], {
    coordinators: [peer.url, fleet.coordinator.url],
  });
  return { host, agent, cache, peer, desired, attacked };
}

// An intent signed by the admin key the agent trusts, for a closure the cache serves: everything
// an agent needs to act, if it ever took it.
function signedIntent(host: string, generation: number, closure: string): SignedIntent {
  return signIntent(switchIntent(host, generation, closure, fleet.admin.name), fleet.admin);
}

// The held intent as a Yjs update of the desired document, as a coordinator would pass it on.
function heldUpdate(host: string, generation = HELD_GENERATION): Uint8Array {
  const doc = new Y.Doc();
  appendIntent(doc, signedIntent(host, generation, held));
  return Y.encodeStateAsUpdate(doc);
}

// The agent's own validly signed results in the hostile server's copy of its status document.
function resultsOnPeer(peer: HostilePeer, host: SimulatedHost): Result[] {
  return readResults(peer.doc(statusDocName(host.host)))
    .results.filter(
      (r) => r.signature.publicKey === host.publicKey && verifyPayloadSignature('result', r.result, r.signature),
    )
    .map((r) => r.result);
}

function firstResultOnPeer(peer: HostilePeer, host: SimulatedHost): Promise<Result> {
  return waitFor(
    `${host.host}'s first signed result on the hostile server`,
    () => resultsOnPeer(peer, host)[0],
    120_000,
    200,
  );
}

// No trace of the held intent anywhere the agent could have acted on or reported it: its log, its
// state, its system profile and activations, its cache requests, its status and results on the
// hostile server and on the real coordinator.
async function assertNeverActedOnHeld(v: Victim): Promise<void> {
  const { host, agent, cache, peer } = v;
  assert.not.ok(agent.logs().includes(held), `the agent's log never names the held closure ${held}`);
  const heldGenerations = [HELD_GENERATION, HELD_GENERATION + 1];
  const namingHeld = agent
    .logs()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .filter((line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        return heldGenerations.includes(Number(entry.generation)) || heldGenerations.includes(Number(entry.by));
      } catch {
        return false;
      }
    });
  assert.equal(namingHeld, [], 'no log event names the held generations');
  assert.not.ok(
    (await activations(host)).some((line) => line.includes(held)),
    'the held closure never activated',
  );
  assert.is.not(await profileTarget(host), held, 'the system profile never points at the held closure');
  const state = await readAgentState(host);
  assert.not.ok(JSON.stringify(state).includes(held), "the agent's saved state never names the held closure");
  const heldHash = held.slice('/nix/store/'.length, '/nix/store/'.length + 32);
  assert.not.ok(
    cache.requests.some((request) => request.includes(heldHash)),
    'the agent never asked the cache for the held closure',
  );
  assert.not.ok(
    resultsOnPeer(peer, host).some((r) => r.generation === HELD_GENERATION || r.closure === held),
    'no result on the hostile server names the held intent',
  );
  assert.not.ok(
    JSON.stringify(readCurrentStatus(peer.doc(statusDocName(host.host))) ?? null).includes(held),
    'the status on the hostile server never names the held closure',
  );
  // A host whose status never reached the real coordinator is not listed there at all.
  const view = await fleet.view(host.host).catch((error: Error) => {
    if (/no such host|does not list/.test(error.message)) return null;
    throw error;
  });
  assert.not.ok(JSON.stringify(view).includes(held), 'the real coordinator shows nothing of the held closure');
  assert.not.ok(
    view?.lastResult && view.lastResult.generation >= HELD_GENERATION,
    'the real coordinator has no result for the held generations',
  );
}

test('a coordinator that crashes after a tentative intent and before its commit makes the agent install nothing: it fails over to the real coordinator, which never had the intent, and applies what that one holds', async () => {
  await fleet.deploy('t1', logged);
  const v = await victim('t1', (socket, peer) => {
    socket.send(tentativeUpdateMessage(1, heldUpdate('t1')));
    // The append never became durable: the server goes down, on every connection at once, once
    // the agent has read the tentative update and the close after it (the close frame follows
    // the update on the same socket).
    socket.close(1011, 'crashed before the append was durable');
    socket.once('close', () => void peer.close());
  });
  // The real coordinator's intent applied shows that the agent took the close, failed over and
  // evaluated its desired document as the real coordinator holds it.
  const result = await fleet.nextResult('t1', 0, 120_000);
  assert.is(result.outcome, 'applied', result.reason);
  assert.is(result.closure, logged, 'the applied intent is the logged one, not the held one');
  assert.ok(v.peer.tentativeAsked(v.desired) >= 1, 'the agent asked the hostile server for tentative delivery');
  assert.ok(v.peer.closeCodes(v.desired).length >= 1, 'the hostile connection of the desired document ended');
  await assertNeverActedOnHeld(v);
  assert.equal(await activations(v.host), [`switch ${logged}`]);
});

test('a server that sends a tentative intent and then stays silent never has it applied, while updates after it are', async () => {
  const logdIntent = signedIntent('t2', 1, logged);
  const v = await victim('t2', (socket, peer) => {
    socket.send(tentativeUpdateMessage(1, heldUpdate('t2')));
    // A plain update after it on the same socket: once the agent acts on this one, it has read
    // the tentative update before it. The commit never comes; the connection stays open.
    appendIntent(peer.doc(desiredDocName('t2')), logdIntent);
  });
  const result = await firstResultOnPeer(v.peer, v.host);
  assert.is(result.generation, 1, `the first result is for the plainly sent intent: ${JSON.stringify(result)}`);
  assert.is(result.outcome, 'applied', result.reason);
  assert.is(v.attacked.length, 1, 'one tentative connection, never closed');
  assert.is(v.attacked[0]!.readyState, v.attacked[0]!.OPEN, 'the silent connection is still open');
  await assertNeverActedOnHeld(v);
});

test('positive control: the same tentative intent followed by its commit is applied', async () => {
  const v = await victim('t3', (socket) => {
    socket.send(tentativeUpdateMessage(7, heldUpdate('t3')));
    socket.send(commitTentativeMessage(7));
  });
  const result = await firstResultOnPeer(v.peer, v.host);
  assert.is(result.generation, HELD_GENERATION);
  assert.is(result.closure, held);
  assert.is(result.outcome, 'applied', result.reason);
  assert.equal(await activations(v.host), [`switch ${held}`]);
  assert.ok(v.peer.tentativeAsked(v.desired) >= 1, 'the agent asked for tentative delivery');
});

// Each breaks the order on the first connections of the agent's desired document (`earlier`: how
// many before), with `update` and `again`, two tentative intents for the held closure.
const violations: {
  name: string;
  broken: number;
  attack: (socket: WebSocket, earlier: number, update: Uint8Array, again: Uint8Array) => void;
  // How many connections the agent closes with 4000, and the reason it logs.
  refusals: number;
  reason: RegExp;
}[] = [
  {
    name: 'a second tentative update before the first is committed',
    broken: 2,
    attack: (socket, _earlier, update, again) => {
      socket.send(tentativeUpdateMessage(1, update));
      socket.send(tentativeUpdateMessage(2, again));
      // Were either kept, this would apply it.
      socket.send(commitTentativeMessage(2));
    },
    refusals: 2,
    reason: /tentative update 2 arrived while 1 was not committed/,
  },
  {
    name: 'a commit with the wrong seq',
    broken: 2,
    attack: (socket, _earlier, update) => {
      socket.send(tentativeUpdateMessage(1, update));
      socket.send(commitTentativeMessage(2));
    },
    refusals: 2,
    reason: /commit of 2 while 1 is held/,
  },
  {
    // A server that crashed after the tentative update, restarted and commits it on the next
    // connection: what the first connection held went with it.
    name: 'a commit on a new connection of what the previous one held',
    broken: 2,
    attack: (socket, earlier, update) => {
      if (earlier === 0) {
        socket.send(tentativeUpdateMessage(1, update));
        socket.close(1011, 'crashed before the append was durable');
      } else socket.send(commitTentativeMessage(1));
    },
    refusals: 1,
    reason: /commit of 1 with no tentative update held/,
  },
];

for (const [i, violation] of violations.entries()) {
  test(`protocol violation, ${violation.name}: the agent closes the connection with 4000, applies nothing of it, reconnects and goes on working`, async () => {
    const id = `t4${i}`;
    const update = heldUpdate(id);
    const again = heldUpdate(id, HELD_GENERATION + 1);
    const plainIntent = signedIntent(id, 1, logged);
    const v = await victim(id, (socket, peer, earlier) => {
      // The first connections break the order; the next gets a plain intent, which the agent
      // applies only if it reconnected after them and goes on working.
      if (earlier < violation.broken) violation.attack(socket, earlier, update, again);
      else if (earlier === violation.broken) appendIntent(peer.doc(desiredDocName(id)), plainIntent);
    });
    const result = await firstResultOnPeer(v.peer, v.host);
    assert.is(result.closure, logged, `the first result is for the plain intent: ${JSON.stringify(result)}`);
    assert.is(result.outcome, 'applied', result.reason);
    assert.equal(
      v.peer.closeCodes(v.desired).filter((code) => code === 4000).length,
      violation.refusals,
      `the agent closed the broken connections with 4000: ${v.peer.closeCodes(v.desired)}`,
    );
    const refused = logEvents(v.agent, 'connection-refused').filter((e) => e.document === v.desired);
    assert.ok(
      refused.some((e) => e.code === 4000 && violation.reason.test(String(e.reason))),
      `the agent says why it closed: ${JSON.stringify(refused)}`,
    );
    assert.is(v.agent.child.exitCode, null, 'the agent keeps running');
    await assertNeverActedOnHeld(v);
  });
}

test('end to end with the real coordinator: the agent opts in, and an intent written by an admin reaches it as a tentative update and its commit', async () => {
  const host = await fleet.host('t5');
  const cache = await fleet.serveCache();
  fleet.startAgent(host, cache.url);
  // The first intent may reach the agent in its first sync; once it is applied the agent's
  // desired document is connected, so the second one is passed on as it is stored.
  await fleet.deploy('t5', held);
  const first = await fleet.nextResult('t5', 0, 120_000);
  assert.is(first.outcome, 'applied', first.reason);
  const committedBefore = logEvents(fleet.coordinator, 'tentative-committed').length;
  await fleet.deploy('t5', logged);
  const second = await fleet.nextResult('t5', first.seq, 120_000);
  assert.is(second.outcome, 'applied', second.reason);
  assert.is(second.closure, logged);
  const committed = logEvents(fleet.coordinator, 'tentative-committed')
    .slice(committedBefore)
    .filter((e) => e.document === desiredDocName('t5'));
  assert.ok(
    committed.some((e) => Number(e.readers) >= 1),
    `the coordinator committed the admin's update to a tentative reader of desired/t5: ${JSON.stringify(committed)}`,
  );
});

test.run();
