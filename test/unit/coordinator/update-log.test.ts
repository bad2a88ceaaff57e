import fc from 'fast-check';
import { Level } from 'level';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeLogEntry, encodeLogEntry, type LogEntry, openUpdateLog } from '../../../coordinator/update-log.js';
import { checkLogChain } from '../../../shared/audit/log-chain.js';
import { toHex } from '../../../shared/crypto/encoding.js';
import { sleep } from '../../../shared/time/sleep.js';
import { anyLogText, referenceEncodeLogEntry } from '../../harness/log-entry-reference.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// A fresh directory for one test's log, removed after it whatever happens.
async function inLogDirectory(body: (dir: string) => Promise<void>): Promise<void> {
  const dir = temporaryDirectory('log');
  try {
    await body(dir);
  } finally {
    removeDirectory(dir);
  }
}

test('appends get increasing sequence numbers per document and survive reopening', async () => {
  await inLogDirectory(async (dir) => {
    let log = await openUpdateLog(dir);
    const appended = await Promise.all(
      [1, 2, 3].map((n) => log.append('hosts/a/desired', 'alice', new Uint8Array([n]))),
    );
    await log.append('hosts/b/desired', 'bob', new Uint8Array([9]));
    assert.equal(appended.map((e) => e.seq).sort(), [1, 2, 3]);
    await log.close();
    log = await openUpdateLog(dir);
    const entries = await log.read('hosts/a/desired');
    assert.equal(
      entries.map((e) => [e.seq, e.principal, [...e.update]]),
      [
        [1, 'alice', [1]],
        [2, 'alice', [2]],
        [3, 'alice', [3]],
      ],
    );
    assert.equal((await log.documents()).sort(), ['hosts/a/desired', 'hosts/b/desired']);
    const next = await log.append('hosts/a/desired', 'alice', new Uint8Array([4]));
    assert.is(next.seq, 4, 'numbering continues after a restart');
    assert.is((await log.read('hosts/a/desired', { untilSeq: 2 })).length, 2);
    await log.close();
  });
});

test('reading up to a moment returns the history as it was then', async () => {
  await inLogDirectory(async (dir) => {
    const log = await openUpdateLog(dir);
    const first = await log.append('hosts/a/status', 'h', new Uint8Array([1]));
    await sleep(5);
    await log.append('hosts/a/status', 'h', new Uint8Array([2]));
    const past = await log.read('hosts/a/status', { untilTime: first.receivedAt });
    assert.equal(
      past.map((e) => e.seq),
      [1],
    );
    await log.close();
  });
});

test('a data directory another process holds is refused with its path and the fix', async () => {
  const dir = temporaryDirectory('log-locked');
  const first = await openUpdateLog(dir);
  try {
    await openUpdateLog(dir).then(
      () => assert.unreachable('the second open must fail'),
      (error: Error) => {
        assert.match(error.message, dir);
        assert.match(error.message, /another coordinator or relay/);
      },
    );
  } finally {
    await first.close();
    removeDirectory(dir);
  }
});

test('every log entry decodes to what was encoded', () => {
  const entry: fc.Arbitrary<LogEntry> = fc.record(
    {
      document: fc.string({ maxLength: 80 }),
      seq: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
      receivedAt: fc.double(),
      principal: fc.string({ maxLength: 120 }),
      update: fc.uint8Array({ maxLength: 512 }),
      prevHash: fc.string({ maxLength: 80 }),
      hash: fc.string({ maxLength: 80 }),
    },
    { noNullPrototype: true },
  );
  fc.assert(
    fc.property(entry, (e) => {
      assert.equal(decodeLogEntry(e.document, encodeLogEntry(e)), e);
    }),
    { numRuns: 3000, seed: 91 },
  );
});

test('encodeLogEntry writes the same bytes as the lib0-encoder version (issue 15: stored logs)', () => {
  const entry = fc.record({
    document: fc.constant('d'),
    seq: fc.oneof(fc.nat(), fc.maxSafeNat(), fc.double({ min: -1e30, max: 1e30, noNaN: true })),
    receivedAt: fc.double(),
    principal: anyLogText,
    update: fc.oneof(
      fc.uint8Array({ maxLength: 3000 }),
      fc.uint8Array({ minLength: 2, maxLength: 300 }).map((bytes) => bytes.subarray(1)),
    ),
    prevHash: fc.oneof(anyLogText, fc.stringMatching(/^[0-9a-f]{64}$/)),
    hash: fc.oneof(anyLogText, fc.stringMatching(/^[0-9a-f]{64}$/)),
  });
  fc.assert(
    fc.property(entry, (e) => {
      assert.equal(encodeLogEntry(e), referenceEncodeLogEntry(e));
    }),
    { numRuns: 5000, seed: 153 },
  );
  // A fixed vector, independent of the reference code.
  const fixed = encodeLogEntry({
    document: 'd',
    seq: 300,
    receivedAt: 1.5,
    principal: 'admin:ålice',
    update: new Uint8Array([1, 2, 3]),
    prevHash: 'ab',
    hash: 'é',
  });
  assert.is(toHex(fixed), '02ac023ff80000000000000c61646d696e3ac3a56c69636503010203026162' + '02c3a9');
});

test('damaged entries decode to an entry or a clear error, never anything else', () => {
  const valid = encodeLogEntry({
    document: 'd',
    seq: 7,
    receivedAt: 1,
    principal: 'host:h1',
    update: new Uint8Array(40),
    prevHash: 'a'.repeat(64),
    hash: 'b'.repeat(64),
  });
  for (let cut = 0; cut < valid.length; cut++) assert.throws(() => decodeLogEntry('d', valid.subarray(0, cut)));
  assert.throws(
    () => decodeLogEntry('hosts/h1/status', new Uint8Array([3])),
    /hosts\/h1\/status has unknown version 3/,
  );
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeLogEntry('d', bytes);
      } catch (error) {
        assert.instance(error, Error);
      }
    }),
    { numRuns: 5000, seed: 92 },
  );
});

test('entries are chained by hash; the head names the last one; logs from before the chain still read and chain on', async () => {
  await inLogDirectory(async (dir) => {
    // Two entries as the previous version stored them (entry version 1, meta without a hash).
    const db = new Level<string, Uint8Array>(dir, { keyEncoding: 'utf8', valueEncoding: 'view' });
    for (const seq of [1, 2]) {
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, 1);
      encoding.writeVarUint(encoder, seq);
      encoding.writeFloat64(encoder, 1000 + seq);
      encoding.writeVarString(encoder, 'old');
      encoding.writeVarUint8Array(encoder, new Uint8Array([seq]));
      await db.put(`u!hosts/a/desired!${seq.toString(16).padStart(12, '0')}`, encoding.toUint8Array(encoder));
    }
    await db.put('d!hosts/a/desired', new TextEncoder().encode('2'));
    await db.close();
    let log = await openUpdateLog(dir);
    const legacyHead = await log.head('hosts/a/desired');
    assert.is(legacyHead?.seq, 2);
    await log.append('hosts/a/desired', 'new', new Uint8Array([3]));
    await log.append('hosts/a/desired', 'new', new Uint8Array([4]));
    await log.close();
    log = await openUpdateLog(dir);
    const entries = await log.read('hosts/a/desired');
    const check = checkLogChain('hosts/a/desired', entries);
    assert.equal(check.problems, []);
    assert.equal(
      entries.map((e) => e.seq),
      [1, 2, 3, 4],
    );
    assert.is(entries[2]!.prevHash, legacyHead!.hash, 'the first new entry chains onto the old ones');
    assert.equal(await log.head('hosts/a/desired'), check.head);
    await log.close();
  });
});

test('a whole read gives the head the next append chains on (no meta read); a partial read does not', async () => {
  await inLogDirectory(async (dir) => {
    let log = await openUpdateLog(dir);
    for (const n of [1, 2, 3]) await log.append('hosts/a/desired', 'alice', new Uint8Array([n]));
    await log.close();
    // Loading a document reads its whole log: the next append continues from its last entry.
    log = await openUpdateLog(dir);
    assert.is((await log.read('hosts/a/desired')).length, 3);
    assert.is((await log.read('hosts/none/desired')).length, 0);
    const [fourth, first] = await Promise.all([
      log.append('hosts/a/desired', 'alice', new Uint8Array([4])),
      log.append('hosts/none/desired', 'bob', new Uint8Array([1])),
    ]);
    assert.is(fourth.seq, 4);
    assert.is(first.seq, 1);
    await log.close();
    // A read up to a moment ends before the head: it must not be taken for it.
    log = await openUpdateLog(dir);
    assert.is((await log.read('hosts/a/desired', { untilSeq: 1 })).length, 1);
    // An append racing a whole read of the same document keeps its number.
    const [, fifth] = await Promise.all([
      log.read('hosts/a/desired'),
      log.append('hosts/a/desired', 'alice', new Uint8Array([5])),
    ]);
    assert.is(fifth.seq, 5);
    assert.is((await log.read('hosts/a/desired')).length, 5);
    assert.is((await log.append('hosts/a/desired', 'alice', new Uint8Array([6]))).seq, 6);
    await log.close();
    log = await openUpdateLog(dir);
    for (const document of ['hosts/a/desired', 'hosts/none/desired']) {
      const entries = await log.read(document);
      const check = checkLogChain(document, entries);
      assert.equal(check.problems, [], document);
      assert.equal(await log.head(document), check.head, document);
    }
    await log.close();
  });
});

test('a group commit of interleaved documents stores the last seq and hash of each as its head', async () => {
  await inLogDirectory(async (dir) => {
    let log = await openUpdateLog(dir);
    const documents = ['hosts/a/desired', 'hosts/b/desired', 'hosts/c/desired'];
    // Appends started in one turn share batches: each batch holds several entries per document.
    for (let wave = 0; wave < 3; wave++)
      await Promise.all(
        Array.from({ length: 12 }, (_, n) => log.append(documents[n % 3]!, 'alice', new Uint8Array([wave, n]))),
      );
    await log.close();
    // Reopened, the stored meta keys are the heads: the last entry of each, chained.
    log = await openUpdateLog(dir);
    const heads = await log.heads();
    for (const document of documents) {
      const entries = await log.read(document);
      assert.is(entries.length, 12, document);
      const check = checkLogChain(document, entries);
      assert.equal(check.problems, [], document);
      assert.equal(
        heads.find((h) => h.document === document),
        check.head,
        document,
      );
    }
    await log.close();
  });
});

test('the raw LevelDB keys and values are the log format, byte for byte', async () => {
  await inLogDirectory(async (dir) => {
    const log = await openUpdateLog(dir);
    // A non-ASCII name: keys are stored as their UTF-8 bytes. Appends started in one turn share
    // group commits, so batches hold several entries and heads per document.
    const documents = ['hosts/a/desired', 'hosts/ü-名/status'];
    const entries: LogEntry[] = [];
    for (let wave = 0; wave < 2; wave++)
      entries.push(
        ...(await Promise.all(
          Array.from({ length: 6 }, (_, n) => log.append(documents[n % 2]!, 'admin:ö', new Uint8Array([wave, n, 255]))),
        )),
      );
    await log.close();
    // What the log format says is stored, built without the log's own encoder: entry keys
    // u!<document>!<seq, 12 hex digits> -> the reference (lib0) encoding; head keys d!<document> ->
    // "<last seq> <its hash>".
    const utf8 = new TextEncoder();
    const expected = new Map<string, string>();
    for (const entry of entries)
      expected.set(
        toHex(utf8.encode(`u!${entry.document}!${entry.seq.toString(16).padStart(12, '0')}`)),
        toHex(referenceEncodeLogEntry(entry)),
      );
    for (const document of documents) {
      const last = entries.filter((e) => e.document === document).sort((a, b) => b.seq - a.seq)[0]!;
      expected.set(toHex(utf8.encode(`d!${document}`)), toHex(utf8.encode(`${last.seq} ${last.hash}`)));
    }
    const raw = new Level<Uint8Array, Uint8Array>(dir, { keyEncoding: 'view', valueEncoding: 'view' });
    const stored = new Map<string, string>();
    for await (const [key, value] of raw.iterator()) stored.set(toHex(key), toHex(value));
    await raw.close();
    assert.equal(stored, expected);
  });
});

test("an append after the log closed rejects with LevelDB's reason, and a later one too (nothing hangs)", async () => {
  await inLogDirectory(async (dir) => {
    const log = await openUpdateLog(dir);
    await log.append('hosts/a/desired', 'alice', new Uint8Array([1]));
    await log.close();
    for (const n of [2, 3]) {
      const error = await log.append('hosts/a/desired', 'alice', new Uint8Array([n])).catch((e: Error) => e);
      assert.instance(error, Error);
      assert.match((error as Error).message, /not open/);
    }
  });
});

test.run();
