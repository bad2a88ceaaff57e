import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { requestPath, upgradeDocument } from '../../../coordinator/http-guard.js';
import {
  createRefusals,
  DEFAULT_LIMITS,
  newContentBytes,
  newContentIfAllNew,
  type SizedDocument,
  WriteLimits,
  WriterQuota,
} from '../../../coordinator/limits.js';
import { PresenceTable } from '../../../coordinator/presence.js';
import { structsValueProblem, updateValueProblem } from '../../../coordinator/update-values.js';
import { closeReason, isServedDocument } from '../../../coordinator/wire.js';
import { createMemoryLogger } from '../../../shared/node/log.js';

function updatesOf(doc: Y.Doc): Uint8Array[] {
  const updates: Uint8Array[] = [];
  doc.on('update', (u: Uint8Array) => updates.push(u));
  return updates;
}

test('URLs that do not parse or decode give null, never a throw', () => {
  assert.is(requestPath('http://['), null);
  assert.is(upgradeDocument('http://['), null);
  assert.is(upgradeDocument('/%E0%A4%A'), null);
  assert.is(upgradeDocument('/hosts/h1/status?x=1'), 'hosts/h1/status');
  assert.is(upgradeDocument('/fleet%2Fpolicy'), 'fleet/policy');
  assert.is(upgradeDocument('//fleet%2Fpolicy'), null, 'a host that does not parse');
  assert.is(requestPath(undefined), '/');
});

test('document names: the same rule for the direct endpoint and the relay link', () => {
  for (const good of ['hosts/h1/status', 'hosts/a-b/desired', 'fleet/policy', 'fleet/x-1'])
    assert.ok(isServedDocument(good), good);
  for (const bad of [
    '../../etc/passwd',
    'fleet/\u0000nul',
    `fleet/${'a'.repeat(100_000)}`,
    `hosts/${'a'.repeat(100_000)}/status`,
    'hosts/H1/status',
    'hosts/h1/status/',
    '_relay',
    '',
  ])
    assert.not.ok(isServedDocument(bad), JSON.stringify(bad.slice(0, 40)));
});

test('close reasons are cut to 123 bytes of UTF-8 on a character boundary', () => {
  assert.is(closeReason('short'), 'short');
  const cut = closeReason('é'.repeat(200));
  assert.ok(Buffer.byteLength(cut) <= 123, `${Buffer.byteLength(cut)} bytes`);
  assert.ok(cut.endsWith('…'));
  assert.ok(Buffer.byteLength(closeReason('x'.repeat(500))) <= 123);
});

test('writer quota: a full hour at once, then refilled at the hourly rate', () => {
  let now = 0;
  const quota = new WriterQuota(3600, () => now);
  assert.is(quota.available('w'), 3600);
  quota.charge('w', 3000);
  assert.is(quota.available('w'), 600);
  assert.is(quota.available('other'), 3600, 'per writer');
  now += 1000; // one second refills one byte
  assert.is(quota.available('w'), 601);
  quota.charge('w', 2000);
  assert.ok(quota.available('w') < 0, 'a charge after the fact can overdraw');
  now += 3_600_000 * 2;
  assert.is(quota.available('w'), 3600, 'never above one hour');
});

test('new content of an update: counted once, not again when a peer resends it, deletions not counted', () => {
  const server = new Y.Doc();
  const client = new Y.Doc();
  const updates = updatesOf(client);
  client.getMap('status').set('current', { junk: 'x'.repeat(10_000) });
  const first = updates.at(-1)!;
  const counted = newContentBytes(server, first);
  assert.ok(counted >= 10_000 && counted <= 10_100, `${counted}`);
  Y.applyUpdate(server, first);
  assert.is(newContentBytes(server, Y.encodeStateAsUpdate(client)), 0, 'a sync step 2 of what the server has');
  client.getMap('status').set('current', { junk: 'z'.repeat(10_000) });
  assert.ok(newContentBytes(server, updates.at(-1)!) >= 10_000, 'an overwrite from a later clock');
  const list = client.getArray('a');
  for (let i = 0; i < 200; i++) list.push([`v${i}`]);
  Y.applyUpdate(server, Y.encodeStateAsUpdate(client));
  for (let i = 0; i < 100; i++) list.delete(i, 1);
  assert.is(newContentBytes(server, Y.encodeStateAsUpdate(client)), 0, 'deletions only');
});

test('new content, fast path: a fresh write is counted with one diff and one decoding, answered as the exact diff answers', () => {
  // The common write (an intent appended to a desired document) takes the fast path.
  const server = new Y.Doc({ gc: false });
  const admin = new Y.Doc({ gc: false });
  const updates = updatesOf(admin);
  admin.getArray('intents').push([{ intent: { host: 'h', generation: 1, closure: 'x'.repeat(80) }, signature: 's' }]);
  const fresh = newContentIfAllNew(server, updates.at(-1)!);
  assert.ok(fresh, 'an appended intent is all new');
  assert.is(fresh.bytes, newContentBytes(server, updates.at(-1)!));
  Y.applyUpdate(server, updates.at(-1)!);
  assert.is(newContentIfAllNew(server, updates.at(-1)!), null, 'a resend takes the exact diff');
  admin.getArray('intents').delete(0, 1);
  assert.is(newContentIfAllNew(server, updates.at(-1)!), null, 'an update with deletes takes the exact diff');
  // Sized as Yjs re-encodes it, not by its raw bytes: a hand-made update of 100 legacy JSON
  // contents '1e20' (4 bytes each) stores as '100000000000000000000' (21 bytes each).
  const crafted = encoding.createEncoder();
  for (const n of [1, 1, 7, 0]) encoding.writeVarUint(crafted, n); // one client, one struct, client 7, clock 0
  encoding.writeUint8(crafted, 2); // ContentJSON, no origins: parent by root key
  encoding.writeVarUint(crafted, 1);
  encoding.writeVarString(crafted, 'a');
  encoding.writeVarUint(crafted, 100);
  for (let i = 0; i < 100; i++) encoding.writeVarString(crafted, '1e20');
  encoding.writeVarUint(crafted, 0); // no deletes
  const craftedUpdate = encoding.toUint8Array(crafted);
  const crafty = newContentIfAllNew(new Y.Doc(), craftedUpdate);
  assert.ok(crafty, 'a fresh write');
  assert.ok(crafty.bytes > 2000 && craftedUpdate.length < 600, `${craftedUpdate.length} B counted as ${crafty.bytes}`);

  // Whatever the update, when the fast path answers, it answers as the exact diff does.
  const operation = fc.record({
    client: fc.integer({ min: 0, max: 2 }),
    kind: fc.constantFrom('push', 'insert', 'set', 'delete', 'nested'),
    size: fc.integer({ min: 0, max: 300 }),
    serverApplies: fc.boolean(),
  });
  fc.assert(
    fc.property(
      fc.array(operation, { minLength: 1, maxLength: 25 }),
      fc.constantFrom('last', 'merged', 'state'),
      (ops, shape) => {
        const server = new Y.Doc({ gc: false });
        const clients = [new Y.Doc({ gc: false }), new Y.Doc({ gc: false }), new Y.Doc({ gc: false })];
        const emitted: Uint8Array[] = [];
        for (const client of clients) client.on('update', (u: Uint8Array) => emitted.push(u));
        for (const op of ops) {
          const client = clients[op.client]!;
          const before = emitted.length;
          const list = client.getArray('a');
          if (op.kind === 'push') list.push([{ v: 'p'.repeat(op.size) }]);
          else if (op.kind === 'insert') list.insert(Math.min(op.size, list.length), ['i'.repeat(op.size)]);
          else if (op.kind === 'set') client.getMap('m').set(`k${op.size % 3}`, 's'.repeat(op.size));
          else if (op.kind === 'delete' && list.length > 0) list.delete(op.size % list.length, 1);
          else client.getMap('m').set('n', { a: [[{}], { b: [] }], c: 'n'.repeat(op.size) });
          if (op.serverApplies) for (const u of emitted.slice(before)) Y.applyUpdate(server, u);
        }
        const update =
          shape === 'last'
            ? emitted.at(-1)!
            : shape === 'merged'
              ? Y.mergeUpdates(emitted.slice(-4))
              : Y.encodeStateAsUpdate(clients[ops[0]!.client]!);
        if (update.length === 0) return;
        const fast = newContentIfAllNew(server, update);
        if (!fast) return;
        assert.is(fast.bytes, newContentBytes(server, update), 'bytes');
        const missing = Y.diffUpdate(update, Y.encodeStateVector(server));
        assert.equal(fast.missing, missing, 'the diff');
        assert.is(
          structsValueProblem(fast.structs, fast.missing.length, DEFAULT_LIMITS),
          updateValueProblem(missing, DEFAULT_LIMITS),
        );
      },
    ),
    { numRuns: 300 },
  );
});

test('write limits: update size, writer quota and document size, each naming its flag', () => {
  const now = 0;
  const refusals = createRefusals();
  const limits = new WriteLimits(
    { ...DEFAULT_LIMITS, maxUpdateBytes: 2000, maxWriterBytesPerHour: 5000, maxDocumentBytes: 7000 },
    refusals,
    createMemoryLogger('test').logger,
    () => now,
  );
  const target: SizedDocument = { name: 'hosts/h1/status', doc: new Y.Doc(), stateBytes: 0 };
  // Each write from a client of its own, so a refused one leaves no gap the next depends on.
  const write = (writer: string, size: number): ReturnType<WriteLimits['check']> => {
    const client = new Y.Doc();
    client.getArray('r').push(['y'.repeat(size)]);
    const update = Y.encodeStateAsUpdate(client);
    const refusal = limits.check(target, update, writer);
    if (!refusal) {
      Y.applyUpdate(target.doc, update);
      target.stateBytes += update.length;
      limits.charge(writer, update.length);
    }
    return refusal;
  };
  assert.is(write('a', 3000)?.limit, 'max-update-size');
  assert.match(write('a', 3000)!.reason, /--max-update-size/);
  for (let i = 0; i < 3; i++) assert.is(write('a', 1500), null);
  const quota = write('a', 1500);
  assert.is(quota?.limit, 'max-writer-bytes-per-hour');
  assert.is(quota?.code, 4429);
  assert.is(write('b', 1500), null, 'another writer has its own quota');
  const full = write('c', 1500);
  assert.is(full?.limit, 'max-document-size');
  assert.is(full?.code, 4413);
  assert.equal([refusals.updateTooLarge, refusals.writerQuota, refusals.documentTooLarge], [2, 1, 1]);
});

test('document size: an overestimate (a garbage-collected log) is recomputed, not refused', () => {
  const limits = new WriteLimits(
    { ...DEFAULT_LIMITS, maxDocumentBytes: 50_000 },
    createRefusals(),
    createMemoryLogger('test').logger,
  );
  const client = new Y.Doc();
  const updates = updatesOf(client);
  client.getMap('m').set('k', 'x'.repeat(1000));
  const target: SizedDocument = { name: 'hosts/h1/status', doc: new Y.Doc({ gc: true }), stateBytes: 49_900 };
  assert.is(limits.check(target, updates.at(-1)!, 'w'), null);
  assert.ok(target.stateBytes < 1000, `recomputed to ${target.stateBytes}`);
});

test('presence: a relay source is bounded, and ended sessions leave one table, not one each', () => {
  const table = new PresenceTable();
  const session = {};
  assert.ok(table.setRemote(session, 'h1', true, 1, 2));
  assert.ok(table.setRemote(session, 'h2', true, 1, 2));
  assert.not.ok(table.setRemote(session, 'h3', true, 1, 2), 'over the bound');
  assert.ok(table.setRemote(session, 'h1', false, 2, 2), 'known hosts update');
  table.dropSource(session, 5);
  for (let i = 0; i < 1000; i++) {
    const again = {};
    table.setRemote(again, 'h1', true, 10 + i, 2);
    table.dropSource(again, 11 + i);
  }
  assert.equal(table.hosts().sort(), ['h1', 'h2']);
  assert.equal(table.get('h1'), { online: false, lastSeen: 1010 });
  assert.is((table as unknown as { remote: Map<object, unknown> }).remote.size, 0);
});

test.run();
