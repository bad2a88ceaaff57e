import { join } from 'node:path';
import * as Y from 'yjs';
import { sleep } from '../../shared/time/sleep.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import type { DaemonProcess } from '../harness/processes.js';
import { LeanDocClient } from './lean-client.js';

// A set workload (after Jepsen's) on 3 coordinators sharing a 3-node NATS JetStream cluster
// (stream R=3), while coordinators and NATS nodes are SIGKILLed and restarted on a seeded
// schedule. Shared by the nats-soak integration test (a short run) and `npm run soak:nats`
// (the 10,000 writes).
//
// Writes: `workers` loops each add unique items (`w<worker>#<n>`) to a random document (an
// intent or a status document of one of `hosts` hosts) through a random coordinator. A write is
// acknowledged when the coordinator answers a sync barrier sent after it on the same connection:
// the coordinator handles a connection's messages in order and answers the barrier only after the
// update before it was appended to the log (stored by the stream on a quorum). A write whose
// connection fails or whose barrier is not answered is indeterminate: it may or may not be there.
//
// No client ever resends: a writer whose connection ends is dropped with its document, and the
// next write on that coordinator and document opens a new connection with an empty one. (A CRDT
// peer that kept its document would resend on reconnect and hide a coordinator that acknowledged
// what it then lost; read-only peers cannot do that, so the checker must not either.)
//
// The check, once every node and coordinator is back: every acknowledged item is in its document
// as read through every coordinator (a, b, c, each restarted some times) and through one started
// from nothing (it reads the stream alone). Lost = acknowledged items missing from the fresh one;
// live coordinators get a grace period to catch up on what they follow.

export interface SoakOptions {
  directory: string;
  writes: number;
  workers: number;
  hosts: number;
  seed: number;
  // Each worker waits up to this long (uniformly random) between its writes.
  pauseMs: number;
  // Time between faults, and how long a killed process stays down, each uniformly in [min, max].
  upMs: [number, number];
  downMs: [number, number];
  log?: (line: string) => void;
}

export interface SoakResult {
  attempted: number;
  acknowledged: number;
  indeterminate: number;
  // Acknowledged items missing from the coordinator started from nothing: the stream lost them.
  lost: number;
  // Acknowledged items missing per coordinator (after the grace period), fresh included.
  missing: Record<string, number>;
  examples: string[];
  faults: string[];
  writingSeconds: number;
  documents: number;
}

// mulberry32: small, seeded, good enough to choose documents, coordinators and faults.
export function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

interface Coordinator {
  name: string;
  port: number;
  url: string;
  daemon: DaemonProcess | null;
}

export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const log = options.log ?? (() => undefined);
  const random = seededRandom(options.seed);
  const between = ([min, max]: [number, number]): number => min + Math.floor(random() * (max - min + 1));
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)]!;
  const documents = Array.from({ length: options.hosts }, (_, i) => [
    `hosts/soak-${i}/desired`,
    `hosts/soak-${i}/status`,
  ]).flat();
  const onCluster = clusterCoordinators(options.directory, ['--log-level', 'warn']);
  let cluster: NatsCluster | null = null;
  const open = new Set<LeanDocClient>();
  try {
    cluster = await startNatsCluster(join(options.directory, 'nats'), 3);
    const nats = cluster;
    const coordinators: Coordinator[] = [];
    for (const name of ['a', 'b', 'c']) {
      const daemon = await onCluster.start(nats, name);
      coordinators.push({ name, port: daemon.port, url: daemon.url, daemon });
    }
    const startedAt = Date.now();
    const faults: string[] = [];
    const note = (what: string): void => {
      const line = `${((Date.now() - startedAt) / 1000).toFixed(1)} s ${what}`;
      faults.push(line);
      log(line);
    };
    const restart = async (coordinator: Coordinator): Promise<void> => {
      for (let attempt = 1; coordinator.daemon === null; attempt += 1) {
        try {
          coordinator.daemon = await onCluster.start(nats, coordinator.name, [], coordinator.port);
        } catch (error) {
          // Its port taken for a moment, or JetStream still electing: try again.
          if (attempt >= 5) throw error;
          await sleep(1000);
        }
      }
    };

    const acknowledged = new Map<string, Set<string>>(documents.map((d) => [d, new Set()]));
    // Which coordinator acknowledged each item, and when: for the report of anything missing.
    const ackedBy = new Map<string, string>();
    let attempted = 0;
    let indeterminate = 0;
    let writing = true;

    // Writers whose connection ended: dropped with their document (see above).
    const ended = new WeakSet<LeanDocClient>();
    const connectWriter = async (coordinator: Coordinator, document: string): Promise<LeanDocClient> => {
      const client: LeanDocClient = new LeanDocClient({
        serverUrl: coordinator.url,
        name: document,
        doc: new Y.Doc(),
        onClosed: () => ended.add(client),
      });
      open.add(client);
      try {
        await within(client.whenStored(), 20_000, `connecting to ${coordinator.name} for ${document}`);
        return client;
      } catch (error) {
        client.close();
        open.delete(client);
        throw error;
      }
    };
    const worker = async (index: number): Promise<void> => {
      const writers = new Map<string, LeanDocClient>();
      let n = 0;
      while (writing && attempted < options.writes) {
        const coordinator = pick(coordinators);
        const document = pick(documents);
        const key = `${coordinator.name} ${document}`;
        let writer = writers.get(key);
        try {
          if (!writer || ended.has(writer)) {
            if (writer) open.delete(writer);
            writer = await connectWriter(coordinator, document);
            writers.set(key, writer);
          }
        } catch {
          await sleep(100 + Math.floor(random() * 200));
          continue;
        }
        if (attempted >= options.writes) break;
        const item = `w${index}#${n}`;
        n += 1;
        attempted += 1;
        if (attempted % 1000 === 0) log(`${((Date.now() - startedAt) / 1000).toFixed(1)} s ${attempted} writes sent`);
        writer.doc.getArray<string>('set').push([item]);
        try {
          await within(writer.barrier(), 20_000, `write ${item}`);
          acknowledged.get(document)!.add(item);
          ackedBy.set(item, `${coordinator.name} at ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
        } catch {
          indeterminate += 1;
          writer.close();
          open.delete(writer);
          writers.delete(key);
        }
        if (options.pauseMs > 0) await sleep(Math.floor(random() * options.pauseMs));
      }
      for (const writer of writers.values()) {
        writer.close();
        open.delete(writer);
      }
    };

    const kinds = ['coordinator', 'nats node', 'coordinator and nats node', 'two nats nodes'] as const;
    const faultLoop = async (): Promise<void> => {
      while (writing) {
        await sleep(between(options.upMs));
        if (!writing) return;
        const kind = pick([...kinds]);
        try {
          await inject(kind);
        } catch (error) {
          // A node or coordinator slow to come back on a loaded machine: keep going; the end of
          // the run starts whatever is still down.
          note(`fault ${kind}: ${(error as Error).message}`);
        }
      }
    };
    const inject = async (kind: (typeof kinds)[number]): Promise<void> => {
      const coordinator = pick(coordinators);
      const nodes = [...nats.nodes].sort(() => random() - 0.5).slice(0, kind === 'two nats nodes' ? 2 : 1);
      if (kind === 'coordinator' || kind === 'coordinator and nats node') {
        await coordinator.daemon?.stop('SIGKILL');
        coordinator.daemon = null;
        note(`SIGKILL coordinator ${coordinator.name}`);
      }
      if (kind !== 'coordinator') {
        await Promise.all(nodes.map((node) => node.stop('SIGKILL')));
        note(`SIGKILL nats ${nodes.map((node) => node.name).join(' and ')}`);
      }
      await sleep(between(options.downMs));
      try {
        if (kind !== 'coordinator') {
          await Promise.all(nodes.map((node) => node.start()));
          note(`restarted nats ${nodes.map((node) => node.name).join(' and ')}`);
        }
      } finally {
        if (kind === 'coordinator' || kind === 'coordinator and nats node') {
          await restart(coordinator);
          note(`restarted coordinator ${coordinator.name}`);
        }
      }
    };

    // Never rejects (inject's errors are noted): nothing is left unhandled while the writers run.
    const faulting = faultLoop().catch((error: Error) => note(`fault loop ended: ${error.message}`));
    const writingStarted = Date.now();
    await Promise.all(Array.from({ length: options.workers }, (_, index) => worker(index)));
    const writingSeconds = (Date.now() - writingStarted) / 1000;
    writing = false;
    await faulting;
    for (const client of open) client.close();
    open.clear();
    // Everything up again (the fault loop restarts what it stopped; this is belt and braces).
    await Promise.all(nats.nodes.map((node) => node.start()));
    for (const coordinator of coordinators) await restart(coordinator);
    const fresh = await onCluster.start(nats, 'fresh');
    const readers: Coordinator[] = [
      ...coordinators,
      { name: 'fresh', port: fresh.port, url: fresh.url, daemon: fresh },
    ];

    // Reads a document through a coordinator until it holds every acknowledged item or the grace
    // period (one for the whole check) ends; what is still missing then is reported.
    const deadline = Date.now() + 60_000;
    const missingFrom = async (coordinator: Coordinator, document: string): Promise<string[]> => {
      const wanted = acknowledged.get(document)!;
      let missing = [...wanted];
      for (;;) {
        const reader = new LeanDocClient({ serverUrl: coordinator.url, name: document, doc: new Y.Doc() });
        try {
          await within(reader.whenSynced(), 20_000, `reading ${document} through ${coordinator.name}`);
          const stored = new Set(reader.doc.getArray<string>('set').toArray());
          missing = [...wanted].filter((item) => !stored.has(item));
        } catch (error) {
          log(`retrying a read: ${(error as Error).message}`);
        } finally {
          reader.close();
        }
        if (missing.length === 0 || Date.now() > deadline) return missing;
        await sleep(1000);
      }
    };
    const missing: Record<string, number> = {};
    const examples: string[] = [];
    for (const reader of readers) {
      missing[reader.name] = 0;
      for (const document of documents) {
        const gone = await missingFrom(reader, document);
        missing[reader.name]! += gone.length;
        for (const item of gone.slice(0, 3))
          examples.push(`${item} in ${document} through ${reader.name} (acknowledged by ${ackedBy.get(item)})`);
      }
    }
    let total = 0;
    for (const items of acknowledged.values()) total += items.size;
    return {
      attempted,
      acknowledged: total,
      indeterminate,
      lost: missing.fresh!,
      missing,
      examples: examples.slice(0, 20),
      faults,
      writingSeconds,
      documents: documents.length,
    };
  } finally {
    for (const client of open) client.close();
    await onCluster.stopAll();
    await cluster?.close();
  }
}
