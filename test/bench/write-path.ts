import { mkdtempSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import {
  acceptUpdate,
  acquireDocument,
  closeAllDocuments,
  createDocumentHostState,
  type DocumentHostState,
} from '../../coordinator/hosted-documents.js';
import { createRefusals, DEFAULT_LIMITS, WriteLimits } from '../../coordinator/limits.js';
import { type LogEntry, openUpdateLog, type UpdateLog } from '../../coordinator/update-log.js';
import { syncMessage } from '../../coordinator/wire.js';
import { GENESIS_HASH, logEntryHash } from '../../shared/audit/log-chain.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { silentLogger } from '../../shared/log.js';
import { removeDirectory } from '../harness/processes.js';
import { preSign } from './bench-intents.js';
import { integerOptions, nsToMs, percentiles } from './measure.js';

// The coordinator's write path in one process, one write at a time (issue 15): from an admin's
// intent update arriving (after the websocket frame is parsed) to the broadcast message handed to
// the one reader's socket, for
// - stock: what @y/websocket-server does — apply, encode, send from the document's update event;
// - ours, log in memory: the write limits' check, apply, the log entry's hash, broadcast — every
//   step of ours except the disk;
// - ours, LevelDB: the same with the real update log (coordinator/update-log.ts, fsync'ed batch).
// Rounds alternate the three so a change in the machine's load hits each alike. Wall time per
// write, and the process' CPU per write (all threads: LevelDB's work in the thread pool included).
// The reader is a stand-in socket that records when it is handed the message (the websocket send
// itself is the same for all three).
// - ours, LevelDB, waves: --wave writes to as many documents at once (a rollout wave), each timed
//   from the wave's start.
// Usage: node dist/test/bench/write-path.js [--writes N] [--rounds N] [--wave N]
const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '6' },
    wave: { type: 'string', default: '50' },
  },
});
const { writes: writesPerRound, rounds, wave } = integerOptions(values, { writes: 10, rounds: 1, wave: 1 });

const { signed } = preSign('h00001', 1, generateSigningKey('bench-admin'));

// One admin update per document: an intent appended to an empty desired document.
function intentUpdate(): Uint8Array {
  const admin = new Y.Doc({ gc: false });
  let update: Uint8Array | null = null;
  admin.on('update', (u: Uint8Array) => {
    update = u;
  });
  appendIntent(admin, signed);
  return update!;
}

let handedAt = 0n;
const reader = { readyState: 1, send: () => (handedAt = process.hrtime.bigint()) } as unknown as WebSocket;
// Each document of a wave has a reader of its own, which records when it is handed the update.
const waveReader = (handed: bigint[], index: number): WebSocket =>
  ({ readyState: 1, send: () => (handed[index] = process.hrtime.bigint()) }) as unknown as WebSocket;

// The log without a disk: numbers and hashes each entry as the LevelDB log does, keeps it in memory.
function memoryLog(): Pick<UpdateLog, 'read' | 'append' | 'head'> {
  const heads = new Map<string, { seq: number; hash: string }>();
  return {
    read: async () => [],
    head: async (document) => {
      const head = heads.get(document);
      return head ? { document, ...head } : null;
    },
    async append(document, principal, update) {
      const head = heads.get(document) ?? { seq: 0, hash: GENESIS_HASH };
      const partial = { document, seq: head.seq + 1, receivedAt: Date.now(), principal, update };
      const entry: LogEntry = { ...partial, prevHash: head.hash, hash: logEntryHash(head.hash, partial) };
      heads.set(document, { seq: entry.seq, hash: entry.hash });
      return entry;
    },
  };
}

type Variant = 'stock' | 'ours, log in memory' | 'ours, LevelDB (fsync)' | 'ours, LevelDB, waves';
const wall = new Map<Variant, number[]>();
const cpu = new Map<Variant, number>();

async function oursRound(variant: Variant, host: DocumentHostState, round: number): Promise<void> {
  const limits = new WriteLimits(DEFAULT_LIMITS, createRefusals(), silentLogger);
  for (let i = 0; i < writesPerRound; i++) {
    const document = await acquireDocument(host, desiredDocName(`h${round}x${i}`), reader);
    const update = intentUpdate();
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    await document.run(async () => {
      if (limits.check(document, update, 'admin:bench')) throw new Error('the bench intent was refused');
      await acceptUpdate(host, document, update, 'admin:bench', null);
    });
    const used = process.cpuUsage(cpuStart);
    wall.get(variant)!.push(nsToMs(handedAt - start));
    cpu.set(variant, (cpu.get(variant) ?? 0) + used.user + used.system);
  }
}

// A wave: writes to --wave documents handed over back to back (as a rollout wave's arrive, in one
// turn of the event loop), each timed from the wave's start to its reader's broadcast.
async function waveRound(host: DocumentHostState, round: number): Promise<void> {
  const limits = new WriteLimits(DEFAULT_LIMITS, createRefusals(), silentLogger);
  for (let first = 0; first < writesPerRound; first += wave) {
    const size = Math.min(wave, writesPerRound - first);
    const handed: bigint[] = [];
    const documents = await Promise.all(
      Array.from({ length: size }, (_, i) =>
        acquireDocument(host, desiredDocName(`w${round}x${first + i}`), waveReader(handed, i)),
      ),
    );
    const updates = documents.map(() => intentUpdate());
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    await Promise.all(
      documents.map((document, i) =>
        document.run(async () => {
          if (limits.check(document, updates[i]!, 'admin:bench')) throw new Error('the bench intent was refused');
          await acceptUpdate(host, document, updates[i]!, 'admin:bench', null);
        }),
      ),
    );
    const used = process.cpuUsage(cpuStart);
    for (const at of handed) wall.get('ours, LevelDB, waves')!.push(nsToMs(at - start));
    cpu.set('ours, LevelDB, waves', (cpu.get('ours, LevelDB, waves') ?? 0) + used.user + used.system);
  }
}

function stockRound(): void {
  for (let i = 0; i < writesPerRound; i++) {
    const doc = new Y.Doc({ gc: false });
    doc.on('update', (update: Uint8Array) =>
      reader.send(syncMessage((encoder) => syncProtocol.writeUpdate(encoder, update))),
    );
    const update = intentUpdate();
    const cpuStart = process.cpuUsage();
    const start = process.hrtime.bigint();
    Y.applyUpdate(doc, update, 'peer');
    const used = process.cpuUsage(cpuStart);
    wall.get('stock')!.push(nsToMs(handedAt - start));
    cpu.set('stock', (cpu.get('stock') ?? 0) + used.user + used.system);
  }
}

const directory = mkdtempSync(join(tmpdir(), 'outpost-bench-write-path-'));
const load = loadavg()[0]!;
let log: UpdateLog | null = null;
try {
  log = await openUpdateLog(directory);
  const onDisk = createDocumentHostState(log, silentLogger, 60_000);
  const inMemory = createDocumentHostState(memoryLog(), silentLogger, 60_000);
  for (const variant of ['stock', 'ours, log in memory', 'ours, LevelDB (fsync)', 'ours, LevelDB, waves'] as const)
    wall.set(variant, []);
  // One warm-up round of each, not counted.
  for (let round = 0; round <= rounds; round++) {
    if (round === 1) for (const samples of wall.values()) samples.length = 0;
    if (round === 1) cpu.clear();
    stockRound();
    await oursRound('ours, log in memory', inMemory, round);
    await oursRound('ours, LevelDB (fsync)', onDisk, round);
    await waveRound(onDisk, round);
  }
  closeAllDocuments(onDisk);
  closeAllDocuments(inMemory);
} finally {
  await log?.close();
  removeDirectory(directory);
}

const writes = writesPerRound * rounds;
console.log(
  `${writes} intent writes (${intentUpdate().length} bytes each) per variant, one at a time (waves: ${wave} at once), ${rounds} alternating rounds; load ${load.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}`,
);
console.log('                          wall p50    wall p99   CPU per write (all threads)');
for (const [variant, samples] of wall) {
  const p = percentiles(samples);
  console.log(
    `  ${variant.padEnd(22)} ${p.p50.toFixed(3).padStart(8)} ms ${p.p99.toFixed(3).padStart(8)} ms   ${((cpu.get(variant) ?? 0) / writes).toFixed(0).padStart(5)} µs`,
  );
}
