import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { INTENTS_KEY } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import type { MemoryProbe } from '../bench/memory-probe.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Fuzz issue 11 (docs/fuzzing.md, "The long run"): a writer allowed to write a host's desired
// document writes entries and deletes them again, without end. The servers kept each document's
// whole history in memory (their copies did not collect garbage), so every entry ever written
// stayed decoded in the heap of the relay it was written to and of the coordinator above: the
// long run's open coordinator grew 411 → 1,567 MiB RSS. The writer here is a site client of a
// real relay (open mode: any client may write, as the fuzzer's coordinator allowed), whose writes
// the relay stores and passes to a real coordinator; both servers' live JS heaps are read from
// inside after full garbage collections (test/bench/memory-probe.ts). The history stays in the
// servers' update logs, which the audit replays: checked at the end.
type Server = DaemonProcess & { url: string; port: number };
const dir = temporaryDirectory('outpost-attack-server-history-');
const probe = fileURLToPath(new URL('../bench/memory-probe.js', import.meta.url));
const MiB = 2 ** 20;
const DOCUMENT = desiredDocName('site-1');
const ROUNDS = 2;
const ENTRIES_PER_ROUND = 200;

let coordinator: Server;
let relay: Server;
const probeEnv = (file: string): NodeJS.ProcessEnv => ({
  NODE_OPTIONS: `--import=${probe}`,
  OUTPOST_BENCH_MEMORY_PROBE: file,
  OUTPOST_BENCH_MEMORY_PROBE_GC: '1',
});
const coordinatorProbe = join(dir, 'memory-coordinator.jsonl');
const relayProbe = join(dir, 'memory-relay.jsonl');

test.before(async () => {
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, 'coordinator.log'),
    0,
    [],
    probeEnv(coordinatorProbe),
  );
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    env: probeEnv(relayProbe),
  });
});

test.after(async () => {
  await relay?.stop();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

// The server's live JS heap after two full garbage collections, read from inside the process.
async function liveHeap(server: Server, file: string): Promise<number> {
  const lines = async (): Promise<string[]> =>
    (await fs.readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  const before = (await lines()).length;
  server.child.kill('SIGWINCH');
  const line = await waitFor('a memory probe', async () => (await lines())[before], 20_000);
  return (JSON.parse(line) as MemoryProbe).heapUsed;
}

function syncMessage(write: (encoder: encoding.Encoder) => void): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 0);
  write(encoder);
  return encoding.toUint8Array(encoder);
}

// A writer's connection: every change made on its copy goes out as an update; a close (a refused
// write) is kept so the test names it.
async function openWriter(url: string): Promise<{ doc: Y.Doc; ws: WebSocket; closed: () => string | null }> {
  const doc = new Y.Doc();
  const ws = new WebSocket(`${url}/${DOCUMENT}`);
  let closedWith: string | null = null;
  ws.on('close', (code, reason) => {
    closedWith = `${code} ${reason.toString()}`;
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  doc.on('update', (update: Uint8Array) => ws.send(syncMessage((e) => syncProtocol.writeUpdate(e, update))));
  return { doc, ws, closed: () => closedWith };
}

// What a fresh reader of the server gets: its state vector.
async function vectorAt(url: string): Promise<Uint8Array> {
  const doc = new Y.Doc();
  const ws = new WebSocket(`${url}/${DOCUMENT}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => ws.send(syncMessage((e) => syncProtocol.writeSyncStep1(e, doc))));
    ws.once('error', reject);
    ws.on('message', (data: Buffer) => {
      const decoder = decoding.createDecoder(new Uint8Array(data));
      if (decoding.readVarUint(decoder) !== 0) return;
      if (syncProtocol.readSyncMessage(decoder, encoding.createEncoder(), doc, null) === 1) resolve();
    });
  });
  ws.close();
  const vector = Y.encodeStateVector(doc);
  doc.destroy();
  return vector;
}

// ~22 KB per entry in 1,000 small objects: 45 per KiB, under the servers' 64 per KiB value check
// (finding 8), so each is a write both servers take; kept decoded, ~100 KB of heap each.
function entry(n: number): unknown {
  return { n, rows: Array.from({ length: 1000 }, (_, i) => ({ k: `row-${String(i).padStart(11, '0')}` })) };
}

// Every entry the log of `dataDir` ever stored with its content, replayed as the audit does
// (shared/audit/replay.ts: a copy that keeps history).
async function loggedEntries(dataDir: string): Promise<number> {
  const log = await openUpdateLog(dataDir);
  const doc = new Y.Doc({ gc: false });
  try {
    for await (const logged of log.iterate(DOCUMENT)) Y.applyUpdate(doc, logged.update);
  } finally {
    await log.close();
  }
  let count = 0;
  for (let item = doc.getArray(INTENTS_KEY)._start; item; item = item.right)
    if (item.content instanceof Y.ContentAny) count += item.content.getContent().length;
  doc.destroy();
  return count;
}

// Waits until the server at `url` holds everything the writer wrote (through the relay).
async function storedAt(url: string, writer: Awaited<ReturnType<typeof openWriter>>, what: string): Promise<void> {
  const expected = Buffer.from(Y.encodeStateVector(writer.doc));
  await waitFor(
    `${what} stored at ${url}`,
    async () => {
      assert.is(writer.closed(), null, `the relay closed the writer: ${writer.closed()}`);
      return expected.equals(await vectorAt(url));
    },
    120_000,
    500,
  );
}

test('issue 11: entries a writer writes into a desired document and deletes again cost the relay and the coordinator no memory once deleted', async () => {
  const writer = await openWriter(relay.url);
  const intents = writer.doc.getArray(INTENTS_KEY);
  writer.doc.transact(() => intents.push([{ n: -1, note: 'first' }]));
  await storedAt(coordinator.url, writer, 'the first entry');
  const baseline = {
    relay: await liveHeap(relay, relayProbe),
    coordinator: await liveHeap(coordinator, coordinatorProbe),
  };
  const readings: string[] = [];
  let written = 0;
  for (let round = 1; round <= ROUNDS; round++) {
    for (let i = 0; i < ENTRIES_PER_ROUND; i++) {
      writer.doc.transact(() => intents.push([entry(written)]));
      writer.doc.transact(() => intents.delete(intents.length - 1, 1));
      written += 1;
      // Let the socket drain now and then: the relay takes each write through its queue (fsync).
      if (i % 20 === 19) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await storedAt(coordinator.url, writer, `round ${round}`);
    const heap = {
      relay: await liveHeap(relay, relayProbe),
      coordinator: await liveHeap(coordinator, coordinatorProbe),
    };
    readings.push(
      `after ${written} entries: relay ${(heap.relay / MiB).toFixed(1)} MiB, coordinator ${(heap.coordinator / MiB).toFixed(1)} MiB`,
    );
    console.log(readings.at(-1));
    // Kept, each round is ~20 MB of heap on each server (measured below the assertion's bound
    // only with the servers' copies collecting garbage).
    for (const side of ['relay', 'coordinator'] as const)
      assert.ok(
        heap[side] - baseline[side] < 12 * MiB,
        `${side} live heap grew ${((heap[side] - baseline[side]) / MiB).toFixed(1)} MiB (${readings.join('; ')})`,
      );
  }
  console.log(
    `baseline: relay ${(baseline.relay / MiB).toFixed(1)} MiB, coordinator ${(baseline.coordinator / MiB).toFixed(1)} MiB`,
  );
  writer.ws.close();
  // The history is in both logs: every entry written, with its content.
  await relay.stop();
  await coordinator.stop();
  assert.is(await loggedEntries(join(dir, 'coordinator')), written + 1, "entries in the coordinator's log");
  assert.is(await loggedEntries(join(dir, 'relay', 'log')), written + 1, "entries in the relay's log");
});

// The relay's copy collects garbage too, so what a site writes and deletes while the uplink is
// down is a tombstone in its memory: the content reaches the coordinator's log from the relay's
// log (relay/bridge.ts, shared/documents/history-forward.ts), as results pruned at a site do.
test("entries written and deleted at a site while the uplink is down reach the coordinator's log with their content", async () => {
  const upstreamDir = join(dir, 'coordinator-2');
  const first = await startCoordinatorProcess(upstreamDir, join(dir, 'coordinator-2.log'));
  await first.stop();
  const site = await startRelayProcess(join(dir, 'relay-2'), join(dir, 'relay-2.log'), [first.url]);
  let upstream: Server | null = null;
  try {
    const writer = await openWriter(site.url);
    const intents = writer.doc.getArray(INTENTS_KEY);
    for (let n = 0; n < 5; n++) {
      writer.doc.transact(() => intents.push([{ n, note: 'written at the site' }]));
      writer.doc.transact(() => intents.delete(intents.length - 1, 1));
    }
    await storedAt(site.url, writer, 'the site writes');
    writer.ws.close();
    upstream = await startCoordinatorProcess(upstreamDir, join(dir, 'coordinator-2.log'), first.port);
    const expected = Buffer.from(Y.encodeStateVector(writer.doc));
    const url = upstream.url;
    await waitFor('the site writes upstream', async () => expected.equals(await vectorAt(url)), 60_000, 500);
  } finally {
    await site.stop();
    await upstream?.stop();
  }
  assert.is(await loggedEntries(upstreamDir), 5, "entries in the coordinator's log, with their content");
});

test.run();
