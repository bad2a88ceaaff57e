import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { followDocumentChanges } from '../../../coordinator/followed-changes.js';
import type { LogEntry, UpdateLog } from '../../../coordinator/update-log.js';
import type { LogHead } from '../../../shared/audit/log-chain.js';
import { silentLogger } from '../../../shared/log.js';
import { sleep } from '../../../shared/time/sleep.js';
import { waitFor } from '../../harness/processes.js';

// The catch-up for followers that act on which documents changed, with a stand-in shared log:
// what it delivers, what it loses, and when it says it may have lost something.

interface FakeSharedLog extends Pick<UpdateLog, 'follow' | 'heads'> {
  // Each document's last entry number in the log.
  stored: Map<string, number>;
  headReads: number;
  failHeads: boolean;
  // Another coordinator stores an entry; `lost` keeps it from the follower.
  store(document: string, options?: { lost?: boolean }): void;
  missed(): void;
}

function fakeSharedLog(initial: Record<string, number> = {}): FakeSharedLog {
  let deliver: ((entry: LogEntry) => void) | null = null;
  let missed: (() => void) | null = null;
  const log: FakeSharedLog = {
    stored: new Map(Object.entries(initial)),
    headReads: 0,
    failHeads: false,
    follow(onEntry, onMissed) {
      deliver = onEntry;
      missed = onMissed ?? null;
      return () => {
        deliver = null;
        missed = null;
      };
    },
    async heads() {
      log.headReads += 1;
      if (log.failHeads) throw new Error('no quorum');
      return [...log.stored].map(([document, seq]): LogHead => ({ document, seq, hash: `h${seq}` }));
    },
    store(document, options = {}) {
      const seq = (log.stored.get(document) ?? 0) + 1;
      log.stored.set(document, seq);
      const entry = { document, seq, receivedAt: 0, principal: 'p', update: new Uint8Array(), prevHash: '', hash: '' };
      if (!options.lost) deliver?.(entry);
    },
    missed: () => missed?.(),
  };
  return log;
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

test('followed entries name their documents; after a loss the documents behind the log are named once', async () => {
  const log = fakeSharedLog({ 'hosts/a/status': 3, 'hosts/b/status': 1 });
  const changed: string[] = [];
  const feed = followDocumentChanges(log, (document) => changed.push(document), silentLogger);
  await settle();
  log.store('hosts/a/status');
  assert.equal(changed, ['hosts/a/status'], 'a delivered entry');
  log.store('hosts/b/status', { lost: true });
  log.store('hosts/c/desired', { lost: true });
  assert.equal(changed, ['hosts/a/status'], 'lost entries reach nobody');
  log.missed();
  await feed.catchUp();
  assert.equal(changed.sort(), ['hosts/a/status', 'hosts/b/status', 'hosts/c/desired']);
  // Nothing moved since: a second comparison names nothing.
  await feed.catchUp();
  assert.is(changed.length, 3);
  feed.stop();
});

test('documents that changed before following started are not named; a failed baseline names every document', async () => {
  const log = fakeSharedLog({ 'hosts/a/status': 5 });
  const changed: string[] = [];
  const feed = followDocumentChanges(log, (document) => changed.push(document), silentLogger);
  await feed.catchUp();
  assert.equal(changed, [], 'the baseline is the log as it was');
  feed.stop();

  const failing = fakeSharedLog({ 'hosts/a/status': 5 });
  failing.failHeads = true;
  const named: string[] = [];
  const blind = followDocumentChanges(failing, (document) => named.push(document), silentLogger);
  await settle();
  failing.failHeads = false;
  await blind.catchUp();
  assert.equal(named, ['hosts/a/status'], 'without a baseline nothing is known to be up to date');
  blind.stop();
});

test('a loss reported during a comparison runs one more', async () => {
  const log = fakeSharedLog({ 'fleet/policy': 1 });
  const changed: string[] = [];
  const feed = followDocumentChanges(log, (document) => changed.push(document), silentLogger);
  await settle();
  const reads = log.headReads;
  const first = feed.catchUp();
  log.store('fleet/policy', { lost: true });
  log.missed();
  log.missed();
  await first;
  assert.is(log.headReads - reads, 2, 'one comparison, then one more for the losses reported meanwhile');
  assert.equal(changed, ['fleet/policy']);
  feed.stop();
  log.store('fleet/policy');
  assert.equal(changed, ['fleet/policy'], 'stopped: nothing more delivered');
});

test('a comparison the log cannot answer is retried until one succeeds, and not after stop', async () => {
  const log = fakeSharedLog({ 'fleet/policy': 1 });
  const changed: string[] = [];
  const feed = followDocumentChanges(log, (document) => changed.push(document), silentLogger, 20);
  await settle();
  log.failHeads = true;
  log.store('fleet/policy', { lost: true });
  await feed.catchUp();
  assert.equal(changed, [], 'no quorum: nothing compared yet');
  // Waited for, not slept: on a loaded machine a 20 ms retry timer can fire well after 20 ms.
  await waitFor('two retries while it fails', () => log.headReads >= 3, 5000, 5);
  log.failHeads = false;
  await waitFor('the retry that succeeds', () => changed.length > 0, 5000, 5);
  assert.equal(changed, ['fleet/policy'], 'the retry that succeeds hands the document over');
  const reads = log.headReads;
  await sleep(50);
  assert.is(log.headReads, reads, 'no retry after a comparison succeeded');

  log.failHeads = true;
  await feed.catchUp();
  feed.stop();
  await sleep(50);
  assert.is(log.headReads, reads + 1, 'stopped: no retry');
});

test('followers of one log share its heads reads; each is handed every change until it stops', async () => {
  const log = fakeSharedLog({ 'hosts/a/status': 1 });
  const relays: string[] = [];
  const rollouts: string[] = [];
  const relayFeed = followDocumentChanges(log, (document) => relays.push(document), silentLogger);
  const rolloutFeed = followDocumentChanges(log, (document) => rollouts.push(document), silentLogger);
  await settle();
  assert.is(log.headReads, 1, 'one baseline for both');
  log.store('hosts/a/status', { lost: true });
  log.missed();
  await sleep(10);
  assert.is(log.headReads, 2, 'one comparison for both');
  assert.equal(relays, ['hosts/a/status']);
  assert.equal(rollouts, ['hosts/a/status']);
  relayFeed.stop();
  log.store('hosts/a/status');
  assert.equal(relays, ['hosts/a/status'], 'stopped');
  assert.equal(rollouts, ['hosts/a/status', 'hosts/a/status'], 'the other still follows');
  rolloutFeed.stop();
  const again = followDocumentChanges(log, () => undefined, silentLogger);
  await settle();
  assert.is(log.headReads, 3, 'after the last follower stopped, a new one follows the log afresh');
  again.stop();
});

test.run();
