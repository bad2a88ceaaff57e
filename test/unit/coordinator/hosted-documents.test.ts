import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { WebSocket } from 'ws';
import * as Y from 'yjs';
import {
  acceptChange,
  acceptUpdate,
  acquireDocument,
  applyFollowedEntry,
  catchUpLoadedDocuments,
  closeAllDocuments,
  createDocumentHostState,
  type DocumentHostState,
  pinDocument,
  releaseDocument,
  unpinDocument,
  withPinned,
} from '../../../coordinator/hosted-documents.js';
import type { LogEntry, UpdateLog } from '../../../coordinator/update-log.js';
import { silentLogger } from '../../../shared/log.js';
import { sleep } from '../../../shared/time/sleep.js';

// The document host's state transitions with a stand-in log and sockets: one load however many
// ask, replay from the log, unload after the idle time unless held or pinned, the size estimate
// the write limits start from, and a failed append dropping the copy so the next use reloads.

const IDLE_MS = 30;

interface FakeLog extends Pick<UpdateLog, 'read' | 'append' | 'head'> {
  entries: Map<string, LogEntry[]>;
  reads: string[];
  failAppends: boolean;
  // While set, appends wait for it: an fsync still in flight.
  inFlight: Promise<void> | null;
}

function fakeLog(): FakeLog {
  const log: FakeLog = {
    entries: new Map(),
    reads: [],
    failAppends: false,
    inFlight: null,
    async read(document, options) {
      log.reads.push(document);
      const until = options?.untilSeq ?? Number.POSITIVE_INFINITY;
      return (log.entries.get(document) ?? []).filter((entry) => entry.seq <= until);
    },
    async head(document) {
      const last = (log.entries.get(document) ?? []).at(-1);
      return last ? { document, seq: last.seq, hash: last.hash } : null;
    },
    async append(document, principal, update) {
      if (log.inFlight) await log.inFlight;
      if (log.failAppends) throw new Error('disk full');
      const list = log.entries.get(document) ?? [];
      // The hash chain is the log's business, not the host's: placeholders.
      const entry = { document, seq: list.length + 1, receivedAt: 0, principal, update, prevHash: '', hash: '' };
      list.push(entry);
      log.entries.set(document, list);
      return entry;
    },
  };
  return log;
}

interface FakeSocket {
  readyState: number;
  sent: Uint8Array[];
  closed: number[];
  send(message: Uint8Array): void;
  close(code: number): void;
}

function fakeSocket(): FakeSocket & WebSocket {
  const socket: FakeSocket = {
    readyState: 1,
    sent: [],
    closed: [],
    send: (message) => void socket.sent.push(message),
    close: (code) => void socket.closed.push(code),
  };
  return socket as FakeSocket & WebSocket;
}

async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('expected a rejection');
}

function updateSetting(key: string, value: string): Uint8Array {
  const doc = new Y.Doc();
  doc.getMap('m').set(key, value);
  return Y.encodeStateAsUpdate(doc);
}

// Every host a test made is closed after it: loaded documents keep the awareness sweep running.
const hosts: DocumentHostState[] = [];
test.after.each(() => {
  for (const host of hosts.splice(0)) closeAllDocuments(host);
});

function hostWith(log: FakeLog): { host: DocumentHostState; events: string[] } {
  const events: string[] = [];
  const host = createDocumentHostState(log, silentLogger, IDLE_MS);
  hosts.push(host);
  host.observers.push({
    loaded: (d) => void events.push(`loaded ${d.name}`),
    accepted: (d, _delta, principal) => void events.push(`accepted ${d.name} ${principal}`),
    unloaded: (name) => void events.push(`unloaded ${name}`),
  });
  return { host, events };
}

test('concurrent users share one load, replayed from the log with its size', async () => {
  const log = fakeLog();
  const first = updateSetting('a', '1');
  await log.append('hosts/h1/desired', 'admin', first);
  const { host, events } = hostWith(log);
  const [one, two] = await Promise.all([
    acquireDocument(host, 'hosts/h1/desired', fakeSocket()),
    acquireDocument(host, 'hosts/h1/desired', fakeSocket()),
  ]);
  assert.is(one, two);
  assert.equal(log.reads, ['hosts/h1/desired'], 'read from the log once');
  assert.equal(events, ['loaded hosts/h1/desired']);
  assert.is(one.doc.getMap('m').get('a'), '1');
  assert.is(one.stateBytes, first.length, 'the size estimate starts at the log bytes');
  assert.is(one.connections.size, 2);
});

test('a document nobody holds unloads after the idle time; coming back in time keeps it', async () => {
  const log = fakeLog();
  const { host, events } = hostWith(log);
  const ws = fakeSocket();
  const document = await acquireDocument(host, 'hosts/h1/status', ws);
  releaseDocument(host, document, ws);
  assert.ok(host.unloadTimers.has('hosts/h1/status'), 'unload scheduled');
  const again = await acquireDocument(host, 'hosts/h1/status', ws);
  assert.is(again, document, 'the same copy, no reload');
  assert.not.ok(host.unloadTimers.has('hosts/h1/status'), 'unload cancelled');
  releaseDocument(host, again, ws);
  await sleep(IDLE_MS * 3);
  assert.not.ok(host.hosted.has('hosts/h1/status'));
  assert.equal(events, ['loaded hosts/h1/status', 'unloaded hosts/h1/status']);
  const reloaded = await acquireDocument(host, 'hosts/h1/status', ws);
  assert.is.not(reloaded, document, 'loaded afresh');
  assert.equal(log.reads.length, 2);
});

test('a pinned document stays loaded with nobody connected until it is unpinned', async () => {
  const { host, events } = hostWith(fakeLog());
  const ws = fakeSocket();
  const document = await pinDocument(host, 'fleet/policy');
  assert.is(await acquireDocument(host, 'fleet/policy', ws), document);
  releaseDocument(host, document, ws);
  await sleep(IDLE_MS * 3);
  assert.ok(host.hosted.has('fleet/policy'), 'pinned: not unloaded');
  unpinDocument(host, 'fleet/policy');
  unpinDocument(host, 'fleet/policy'); // a second unpin changes nothing
  await sleep(IDLE_MS * 3);
  assert.not.ok(host.hosted.has('fleet/policy'));
  assert.equal(events, ['loaded fleet/policy', 'unloaded fleet/policy']);
});

test('pins are counted: a holder that unpins does not unload a document another still pins', async () => {
  const { host, events } = hostWith(fakeLog());
  await pinDocument(host, 'hosts/h1/status'); // say, a return bundle being applied
  await withPinned(
    { pin: (name) => pinDocument(host, name), unpin: (name) => unpinDocument(host, name) },
    'hosts/h1/status',
    () => undefined, // say, a rollout reading the status
  );
  await sleep(IDLE_MS * 3);
  assert.ok(host.hosted.has('hosts/h1/status'), 'still pinned once: not unloaded');
  unpinDocument(host, 'hosts/h1/status');
  await sleep(IDLE_MS * 3);
  assert.not.ok(host.hosted.has('hosts/h1/status'));
  assert.equal(events, ['loaded hosts/h1/status', 'unloaded hosts/h1/status']);
});

test('withPinned takes its pin back when the use throws', async () => {
  const { host } = hostWith(fakeLog());
  const pins = { pin: (name: string) => pinDocument(host, name), unpin: (name: string) => unpinDocument(host, name) };
  await withPinned(pins, 'fleet/policy', () => {
    throw new Error('boom');
  }).catch(() => undefined);
  assert.not.ok(host.pinned.has('fleet/policy'));
});

test('an update is stored, counted and sent to the other peers; a duplicate is not', async () => {
  const log = fakeLog();
  const { host, events } = hostWith(log);
  const writer = fakeSocket();
  const reader = fakeSocket();
  const document = await acquireDocument(host, 'hosts/h1/desired', writer);
  await acquireDocument(host, 'hosts/h1/desired', reader);
  const update = updateSetting('k', 'v');
  const delta = await acceptUpdate(host, document, update, 'admin:alice', writer);
  assert.ok(delta);
  assert.equal(
    log.entries.get('hosts/h1/desired')?.map((e) => e.principal),
    ['admin:alice'],
  );
  assert.is(document.stateBytes, delta.length, 'size estimate grows by each stored delta');
  assert.is(reader.sent.length, 1, 'broadcast to the other peer');
  assert.is(writer.sent.length, 0, 'not echoed to its sender');
  assert.equal(events.at(-1), 'accepted hosts/h1/desired admin:alice');
  assert.is(await acceptUpdate(host, document, update, 'admin:alice', writer), null, 'a duplicate adds nothing');
  assert.is(log.entries.get('hosts/h1/desired')?.length, 1);
});

// What a reader holds must survive a crash: an agent cannot resend what it was sent (it may not
// write its desired document), so nothing reaches it while the append is in flight, and an update
// whose append fails reaches nobody.
test('no peer is sent an update before its append is durable, nor one whose append failed', async () => {
  for (const fails of [false, true]) {
    const log = fakeLog();
    const { host } = hostWith(log);
    const writer = fakeSocket();
    const reader = fakeSocket();
    const document = await acquireDocument(host, 'hosts/h1/desired', writer);
    await acquireDocument(host, 'hosts/h1/desired', reader);
    let durable!: () => void;
    log.inFlight = new Promise((resolve) => (durable = resolve));
    log.failAppends = fails;
    const accepted = acceptUpdate(host, document, updateSetting('k', 'v'), 'admin:alice', writer);
    await sleep(5);
    assert.is(reader.sent.length, 0, 'nothing sent while the append is in flight');
    durable();
    if (fails) {
      assert.match(await rejection(accepted), /disk full/);
      assert.is(reader.sent.length, 0, 'a failed append is sent to nobody');
      assert.equal(reader.closed, [1011], 'the reader is closed instead');
    } else {
      assert.ok(await accepted);
      assert.is(reader.sent.length, 1, 'sent once durable');
    }
  }
});

test('a failed append drops the copy and closes its peers, and the next user reloads from the log', async () => {
  const log = fakeLog();
  const { host, events } = hostWith(log);
  const ws = fakeSocket();
  const document = await acquireDocument(host, 'hosts/h1/status', ws);
  log.failAppends = true;
  assert.match(await rejection(acceptUpdate(host, document, updateSetting('x', 'y'), 'host:h1', ws)), /disk full/);
  assert.ok(document.broken);
  assert.equal(ws.closed, [1011]);
  assert.not.ok(host.hosted.has('hosts/h1/status'));
  assert.equal(events.at(-1), 'unloaded hosts/h1/status');
  log.failAppends = false;
  const reloaded = await acquireDocument(host, 'hosts/h1/status', fakeSocket());
  assert.is.not(reloaded, document);
  assert.is(reloaded.doc.getMap('m').get('x'), undefined, 'memory holds only what the log holds');
});

test('a failed load is forgotten, so the next user tries again', async () => {
  const log = fakeLog();
  let fail = true;
  const read = log.read;
  log.read = async (document) => {
    if (fail) throw new Error('log unreadable');
    return read(document);
  };
  const { host } = hostWith(log);
  assert.match(await rejection(acquireDocument(host, 'hosts/h1/status', fakeSocket())), /log unreadable/);
  assert.not.ok(host.hosted.has('hosts/h1/status'));
  fail = false;
  assert.ok(await acquireDocument(host, 'hosts/h1/status', fakeSocket()));
});

test("the coordinator's own change is made on the live copy, stored, then sent to every peer", async () => {
  const log = fakeLog();
  const { host, events } = hostWith(log);
  const peer = fakeSocket();
  const document = await acquireDocument(host, 'fleet/rollout-r1', peer);
  const delta = await acceptChange(host, document, (doc) => doc.getArray('evidence').push(['a', 'b']), 'rollout:r1');
  assert.ok(delta);
  assert.equal(document.doc.getArray('evidence').toArray(), ['a', 'b']);
  assert.equal(
    log.entries.get('fleet/rollout-r1')?.map((e) => e.principal),
    ['rollout:r1'],
  );
  assert.is(peer.sent.length, 1, 'broadcast to every peer (it came from none)');
  assert.equal(events.at(-1), 'accepted fleet/rollout-r1 rollout:r1');
  // What the log holds rebuilds what memory holds.
  const replayed = new Y.Doc();
  for (const entry of log.entries.get('fleet/rollout-r1')!) Y.applyUpdate(replayed, entry.update);
  assert.equal(replayed.getArray('evidence').toArray(), ['a', 'b']);
  assert.is(await acceptChange(host, document, () => undefined, 'rollout:r1'), null, 'no change, nothing stored');
  assert.is(log.entries.get('fleet/rollout-r1')?.length, 1);
});

test('a change that throws: nothing changed keeps the copy; something changed drops it, as a failed append does', async () => {
  const log = fakeLog();
  const { host } = hostWith(log);
  const ws = fakeSocket();
  const document = await acquireDocument(host, 'fleet/rollout-r1', ws);
  const before = () => {
    throw new Error('refused before writing');
  };
  assert.match(await rejection(acceptChange(host, document, before, 'rollout:r1')), /before writing/);
  assert.not.ok(document.broken);
  assert.ok(host.hosted.has('fleet/rollout-r1'));
  const midway = (doc: Y.Doc) => {
    doc.getArray('plans').push(['half']);
    throw new Error('refused midway');
  };
  assert.match(await rejection(acceptChange(host, document, midway, 'rollout:r1')), /midway/);
  assert.ok(document.broken);
  assert.equal(ws.closed, [1011]);
  assert.not.ok(host.hosted.has('fleet/rollout-r1'));
  assert.is(log.entries.get('fleet/rollout-r1'), undefined, 'nothing stored');
  const reloaded = await acquireDocument(host, 'fleet/rollout-r1', fakeSocket());
  assert.equal(reloaded.doc.getArray('plans').toArray(), [], 'memory holds only what the log holds');
  log.failAppends = true;
  assert.match(
    await rejection(acceptChange(host, reloaded, (doc) => doc.getArray('plans').push(['p']), 'rollout:r1')),
    /disk full/,
  );
  assert.ok(reloaded.broken, 'a failed append drops it too');
});

// applyFollowedEntry queues its work once the load has resolved (a microtask later); a task
// queued after that one runs after it.
async function settled(document: { run<T>(task: () => T): Promise<T> }): Promise<void> {
  await sleep(0);
  await document.run(() => undefined);
}

// A shared log (NATS): another coordinator's entry that this copy never got — the stream follower
// passed it before the document was loaded here and the load's read did not return it — shows as
// a gap in the document's entry numbers when the next entry comes, from the follower or from an
// append of this coordinator's own; the copy then reads the log again.
test('an entry missed between load and follow is read from the log when the next followed entry shows the gap', async () => {
  const log = fakeLog();
  const name = 'hosts/h1/status';
  await log.append(name, 'a', updateSetting('a', '1'));
  const { host, events } = hostWith(log);
  const ws = fakeSocket();
  const document = await acquireDocument(host, name, ws);
  assert.is(document.logSeq, 1);
  const missed = await log.append(name, 'b', updateSetting('b', '2'));
  const next = await log.append(name, 'c', updateSetting('c', '3'));
  assert.is(missed.seq, 2);
  applyFollowedEntry(host, next);
  await settled(document);
  assert.is(document.doc.getMap('m').get('c'), '3');
  assert.is(document.doc.getMap('m').get('b'), '2', 'the missed entry was read from the log');
  assert.is(document.logSeq, 3);
  assert.equal(events.slice(1), [`accepted ${name} b`, `accepted ${name} c`], 'both passed on, in order');
  assert.is(ws.sent.length, 2, 'both sent to the peer');
});

test("an own append numbered past this copy's entries waits for the follower to bring those before; one it lost is read", async () => {
  const log = fakeLog();
  const name = 'hosts/h1/desired';
  await log.append(name, 'a', updateSetting('a', '1'));
  const { host } = hostWith(log);
  const document = await acquireDocument(host, name, fakeSocket());
  // Another coordinator's entry 2 is in the stream, on its way through the follower.
  const inTransit = await log.append(name, 'b', updateSetting('b', '2'));
  await document.run(() => acceptUpdate(host, document, updateSetting('c', '3'), 'admin', null));
  assert.is(document.logSeq, 1, 'entry 3 is applied, entry 2 not yet');
  applyFollowedEntry(host, inTransit);
  await settled(document);
  assert.is(document.logSeq, 3);
  assert.equal(log.reads, [name], 'no read: the follower brought it');
  // Entry 5 from another coordinator after its entry 4, which the follower lost.
  await log.append(name, 'd', updateSetting('d', '4'));
  const next = await log.append(name, 'e', updateSetting('e', '5'));
  applyFollowedEntry(host, next);
  await settled(document);
  assert.is(document.doc.getMap('m').get('d'), '4', 'the lost entry was read from the log');
  assert.is(document.logSeq, 5);
});

test('after the follower may have missed entries, a loaded document behind the log reads them; one up to date does not', async () => {
  const log = fakeLog();
  const { host } = hostWith(log);
  const behind = await acquireDocument(host, 'hosts/h1/status', fakeSocket());
  const current = await acquireDocument(host, 'hosts/h2/status', fakeSocket());
  await log.append('hosts/h1/status', 'b', updateSetting('b', '2'));
  await catchUpLoadedDocuments(host);
  assert.is(behind.doc.getMap('m').get('b'), '2');
  assert.is(behind.logSeq, 1);
  assert.is(current.logSeq, 0);
  assert.equal(log.reads, ['hosts/h1/status', 'hosts/h2/status', 'hosts/h1/status'], 'only the one behind read again');
});

// One loaded document, and its log with head() wrapped by the test (a cluster without quorum, a slow answer).
async function loadedWithHead(wrap: (head: FakeLog['head']) => FakeLog['head']) {
  const log = fakeLog();
  const { host } = hostWith(log);
  const name = 'hosts/h4/desired';
  const document = await acquireDocument(host, name, fakeSocket());
  log.head = wrap(log.head);
  return { log, host, name, document };
}

test('a head the log cannot read during the comparison (no quorum yet) is compared again until it is read', async () => {
  let refusals = 2;
  const { log, host, name, document } = await loadedWithHead((head) => async (document) => {
    if (refusals > 0) {
      refusals -= 1;
      throw new Error('timeout');
    }
    return head(document);
  });
  // Stored once the cluster is back; the follower lost it.
  await log.append(name, 'b', updateSetting('b', '2'));
  await catchUpLoadedDocuments(host, 5);
  assert.is(refusals, 0);
  assert.is(document.logSeq, 1, 'read once its head could be');
  assert.is(document.doc.getMap('m').get('b'), '2');
});

test('a report while a comparison runs compares again after it', async () => {
  let release: () => void = () => undefined;
  const slow = new Promise<void>((resolve) => (release = resolve));
  let heads = 0;
  const { log, host, name, document } = await loadedWithHead((head) => async (document) => {
    heads += 1;
    const found = await head(document);
    if (heads === 1) await slow;
    return found;
  });
  const first = catchUpLoadedDocuments(host, 5);
  await sleep(1);
  // Lost by the follower after the first pass read the head; reported again.
  await log.append(name, 'b', updateSetting('b', '2'));
  const second = catchUpLoadedDocuments(host, 5);
  release();
  await Promise.all([first, second]);
  assert.is(heads, 2);
  assert.is(document.logSeq, 1);
});

test('entries in order need no read; a duplicate changes nothing', async () => {
  const log = fakeLog();
  const name = 'hosts/h1/status';
  const { host } = hostWith(log);
  const document = await acquireDocument(host, name, fakeSocket());
  const first = await log.append(name, 'b', updateSetting('b', '2'));
  applyFollowedEntry(host, first);
  applyFollowedEntry(host, first);
  await settled(document);
  assert.is(document.logSeq, 1);
  assert.equal(log.reads, [name], 'read once, at load');
});

test.run();
