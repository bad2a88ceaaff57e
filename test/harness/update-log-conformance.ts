import type { Test } from 'uvu';
import * as assert from 'uvu/assert';
import type { LogEntry, UpdateLog } from '../../coordinator/update-log.js';
import { checkLogChain } from '../../shared/audit/log-chain.js';
import { sleep } from '../../shared/time/sleep.js';
import { waitFor } from './processes.js';

// What every update log backend promises (coordinator/update-log.ts), as one suite that each
// backend's test file runs: LevelDB in test/unit/coordinator/update-log-conformance.test.ts, NATS
// JetStream against a real nats-server in test/integration/nats-log.test.ts.

export interface LogStore {
  // Opens a log on this store; a closed log reopens on the same data.
  open(): Promise<UpdateLog>;
  cleanup(): Promise<void>;
}

export interface ConformanceSubject {
  // A new, empty store for one test.
  fresh(): Promise<LogStore>;
  // Several logs open on one store at once (coordinators sharing a NATS cluster); LevelDB is not.
  shared: boolean;
}

const bytes = (...values: number[]): Uint8Array => new Uint8Array(values);

async function withStore(subject: ConformanceSubject, body: (store: LogStore) => Promise<void>): Promise<void> {
  const store = await subject.fresh();
  try {
    await body(store);
  } finally {
    await store.cleanup();
  }
}

function assertChained(document: string, entries: LogEntry[]): void {
  assert.equal(
    entries.map((e) => e.seq),
    entries.map((_, i) => i + 1),
    `${document}: numbered 1…n without gaps`,
  );
  const check = checkLogChain(document, entries);
  assert.equal(check.problems, [], `${document}: one unbroken hash chain`);
}

export function defineUpdateLogConformance(test: Test, subject: ConformanceSubject): void {
  test('conformance: appends are numbered and chained per document, and survive reopening', () =>
    withStore(subject, async (store) => {
      let log = await store.open();
      const appended = await Promise.all([1, 2, 3].map((n) => log.append('hosts/a/desired', 'alice', bytes(n))));
      await log.append('hosts/b/desired', 'bob', bytes(9));
      assert.equal(appended.map((e) => e.seq).sort(), [1, 2, 3]);
      await log.close();
      log = await store.open();
      // Closed even when an assertion fails: an open NATS connection would keep the process alive.
      try {
        const entries = await log.read('hosts/a/desired');
        assert.equal(
          entries.map((e) => [e.seq, e.principal, [...e.update]]),
          [
            [1, 'alice', [1]],
            [2, 'alice', [2]],
            [3, 'alice', [3]],
          ],
        );
        assertChained('hosts/a/desired', entries);
        const next = await log.append('hosts/a/desired', 'alice', bytes(4));
        assert.is(next.seq, 4, 'numbering continues after a reopen');
        assert.is(next.prevHash, entries[2]!.hash, 'and chains onto the stored end');
        assert.equal(await log.head('hosts/a/desired'), { document: 'hosts/a/desired', seq: 4, hash: next.hash });
        assert.equal((await log.documents()).sort(), ['hosts/a/desired', 'hosts/b/desired']);
        const heads = (await log.heads()).sort((x, y) => x.document.localeCompare(y.document));
        assert.equal(
          heads.map((h) => [h.document, h.seq]),
          [
            ['hosts/a/desired', 4],
            ['hosts/b/desired', 1],
          ],
        );
        // `bytes` is optional: a log that knows its own size (NATS) gives it.
        const { bytes: logBytes, ...counts } = await log.size();
        assert.equal(counts, { documents: 2, entries: 5 });
        if (logBytes !== undefined) assert.ok(logBytes > 0, `a size in bytes is positive: ${logBytes}`);
        const iterated: number[] = [];
        for await (const entry of log.iterate('hosts/a/desired')) iterated.push(entry.seq);
        assert.equal(iterated, [1, 2, 3, 4]);
      } finally {
        await log.close();
      }
    }));

  test('conformance: reads stop at a sequence number or a moment; an unknown document is empty', () =>
    withStore(subject, async (store) => {
      const log = await store.open();
      try {
        const first = await log.append('hosts/a/status', 'h', bytes(1));
        await sleep(5);
        await log.append('hosts/a/status', 'h', bytes(2));
        assert.equal(
          (await log.read('hosts/a/status', { untilTime: first.receivedAt })).map((e) => e.seq),
          [1],
        );
        assert.equal(
          (await log.read('hosts/a/status', { untilSeq: 1 })).map((e) => e.seq),
          [1],
        );
        assert.equal(await log.read('hosts/none/status'), []);
        assert.is(await log.head('hosts/none/status'), null);
      } finally {
        await log.close();
      }
    }));

  test('conformance: document names keep their characters (dots, wildcards, slashes, non-ASCII)', () =>
    withStore(subject, async (store) => {
      const names = ['fleet/policy', 'hosts/a.b/desired', 'hosts/*/status', 'hosts/>/x', 'hosts/ü_x/desired', 'a b_2E'];
      const log = await store.open();
      try {
        for (const [i, name] of names.entries()) await log.append(name, 'p', bytes(i));
        assert.equal((await log.documents()).sort(), [...names].sort());
        for (const [i, name] of names.entries()) {
          const entries = await log.read(name);
          assert.equal(
            entries.map((e) => [e.document, [...e.update]]),
            [[name, [i]]],
            `${name} reads back only its own entry`,
          );
        }
      } finally {
        await log.close();
      }
    }));

  test('conformance: checkpoints read back in the order they were stored', () =>
    withStore(subject, async (store) => {
      const log = await store.open();
      try {
        const entry = await log.append('fleet/policy', 'admin', bytes(1));
        const first = {
          seq: 1,
          at: '2026-01-01T00:00:00.000Z',
          changed: [{ document: 'fleet/policy', seq: 1, hash: entry.hash }],
        };
        const second = { seq: 2, at: '2026-01-01T00:01:00.000Z', changed: [] };
        await log.putCheckpoint(first);
        await log.putCheckpoint(second);
        const read = [];
        for await (const checkpoint of log.checkpoints()) read.push(checkpoint);
        assert.equal(read, [first, second]);
      } finally {
        await log.close();
      }
    }));

  test('conformance: a log never hands its own appends to its followers', () =>
    withStore(subject, async (store) => {
      const log = await store.open();
      try {
        const followed: LogEntry[] = [];
        const stop = log.follow((entry) => followed.push(entry));
        for (let n = 0; n < 5; n += 1) await log.append('hosts/a/desired', 'alice', bytes(n));
        await sleep(300);
        stop();
        assert.equal(followed, []);
      } finally {
        await log.close();
      }
    }));

  test('conformance: a log claims a task; claiming again renews it', () =>
    withStore(subject, async (store) => {
      const log = await store.open();
      try {
        assert.ok(await log.claim('timestamps', 10_000));
        assert.ok(await log.claim('timestamps', 10_000));
      } finally {
        await log.close();
      }
    }));

  if (!subject.shared) return;

  test('conformance (shared): one holder per task at a time; a holder that stops renewing or closes hands over', () =>
    withStore(subject, async (store) => {
      const [a, b, c] = [await store.open(), await store.open(), await store.open()];
      try {
        assert.ok(await a.claim('timestamps', 1500), 'a claims first');
        assert.not.ok(await b.claim('timestamps', 1500), 'b may not while a holds it');
        assert.ok(await a.claim('timestamps', 1500), 'a renews');
        assert.not.ok(await b.claim('timestamps', 1500));
        // a stops renewing (a frozen or cut-off coordinator): after the lease b takes over, and a,
        // whose renewal now fails, does not believe it still holds it.
        await waitFor('b to take over once a stopped renewing', () => b.claim('timestamps', 1500), 20_000, 250);
        assert.not.ok(await a.claim('timestamps', 1500), 'a has lost it');
        assert.not.ok(await c.claim('timestamps', 1500));
        await b.close();
        assert.ok(await c.claim('timestamps', 1500), 'a holder that closes hands over at once');
      } finally {
        await a.close();
        await b.close();
        await c.close();
      }
    }));

  test('conformance (shared): two writers on one document make one chain, and each follows the other', () =>
    withStore(subject, async (store) => {
      const [a, b] = [await store.open(), await store.open()];
      try {
        const seenByA: LogEntry[] = [];
        const seenByB: LogEntry[] = [];
        a.follow((entry) => seenByA.push(entry));
        b.follow((entry) => seenByB.push(entry));
        const document = 'hosts/shared/desired';
        const [fromA, fromB] = await Promise.all([
          Promise.all([1, 2, 3, 4, 5].map((n) => a.append(document, 'via-a', bytes(n)))),
          Promise.all([6, 7, 8, 9, 10].map((n) => b.append(document, 'via-b', bytes(n)))),
        ]);
        const entries = await a.read(document);
        assert.is(entries.length, 10);
        assertChained(document, entries);
        assert.equal(
          entries.map((e) => e.hash).sort(),
          [...fromA, ...fromB].map((e) => e.hash).sort(),
          'every acknowledged append is in the log, as acknowledged',
        );
        await waitFor('each writer to follow the other', () => seenByA.length >= 5 && seenByB.length >= 5, 10_000, 20);
        await sleep(200);
        assert.equal(
          seenByB.map((e) => e.hash).sort(),
          fromA.map((e) => e.hash).sort(),
          'b follows exactly what a wrote',
        );
        assert.equal(
          seenByA.map((e) => e.hash).sort(),
          fromB.map((e) => e.hash).sort(),
          'a follows exactly what b wrote',
        );
        const next = await b.append(document, 'via-b', bytes(11));
        assert.is(next.seq, 11);
      } finally {
        await a.close();
        await b.close();
      }
    }));
}
