import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { sleep } from '../../shared/time/sleep.js';
import { removeDirectory, startCoordinatorProcess, temporaryDirectory, waitFor } from '../harness/processes.js';

// "Acknowledged" = seen by another peer through the coordinator: it broadcasts an update only
// after the update is in its fsync'ed log, so a SIGKILL must never lose what a peer has seen.
// Writers and observers go away with the crash (as a CLI that exited would): any client still
// holding the data would re-send it on reconnect and hide a loss.
test('SIGKILL mid-traffic loses nothing acknowledged; clients reconnect by themselves and carry on', async () => {
  const dir = temporaryDirectory('crash');
  const documents = ['hosts/c1/desired', 'hosts/c2/desired', 'hosts/c3/status'];
  const clients: DocumentConnection[] = [];
  try {
    const first = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator.log'));
    const writers = documents.map((name) => connectDocument(first.url, name, { identity: null, maxBackoffMs: 300 }));
    const observers = documents.map((name) => connectDocument(first.url, name, { identity: null, maxBackoffMs: 300 }));
    const bystander = connectDocument(first.url, 'hosts/agent/status', { identity: null, maxBackoffMs: 300 });
    clients.push(...writers, ...observers, bystander);
    await Promise.all(clients.map((c) => waitForSync(c, 10_000)));
    bystander.doc.getArray('log').push(['before-crash']);

    let writing = true;
    const traffic = (async () => {
      for (let n = 0; writing; n += 1) {
        writers.forEach((w, i) => {
          w.doc.getArray('log').push([`${documents[i]}#${n}`]);
        });
        await sleep(2);
      }
    })();
    await waitFor('traffic to flow', () => observers.every((o) => o.doc.getArray('log').length > 50), 10_000);
    first.child.kill('SIGKILL');
    const acknowledged = observers.map((o) => new Set(o.doc.getArray<string>('log').toArray()));
    writing = false;
    for (const c of [...writers, ...observers]) c.close();
    await traffic;
    await first.exited;

    const second = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator-2.log'), first.port);
    const readers = documents.map((name) => connectDocument(second.url, name, { identity: null }));
    clients.push(...readers);
    await Promise.all(readers.map((r) => waitForSync(r, 10_000)));
    readers.forEach((reader, i) => {
      const recovered = new Set(reader.doc.getArray<string>('log').toArray());
      const lost = [...acknowledged[i]!].filter((item) => !recovered.has(item));
      assert.ok(acknowledged[i]!.size > 50);
      assert.equal(
        lost.length,
        0,
        `${documents[i]}: ${lost.length} of ${acknowledged[i]!.size} acknowledged updates lost after SIGKILL`,
      );
    });
    // The bystander was never told to reconnect: it does so by itself and carries on.
    await waitFor('the bystander to resync with the restarted coordinator', () => bystander.provider.synced, 20_000);
    bystander.doc.getArray('log').push(['after-restart']);
    const reader = connectDocument(second.url, 'hosts/agent/status', { identity: null });
    clients.push(reader);
    await waitFor(
      "the bystander's new write to reach a fresh reader",
      () => reader.doc.getArray('log').toArray().includes('after-restart'),
      10_000,
    );
    assert.ok(reader.doc.getArray('log').toArray().includes('before-crash'));
    await second.stop();
  } finally {
    for (const c of clients) c.close();
    removeDirectory(dir);
  }
});

test.run();
