import { promises as fs } from 'node:fs';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Counter, exponentialBuckets, Gauge, Histogram, Registry } from 'prom-client';
import { parseDocName } from '../shared/documents/names.js';
import { CURRENT_KEY, STATUS_MAP } from '../shared/documents/status.js';
import { agentPhaseSchema } from '../shared/schemas/report.js';
import type { DocumentHost, HostedDocument } from './hosted-documents.js';
import type { Refusals } from './limits.js';
import type { PresenceTable } from './presence.js';
import type { UpdateLog } from './update-log.js';

// GET /metrics in Prometheus text format, on the coordinator and (with the relay's own additions,
// relay/metrics.ts) on every relay. Everything is a count read at scrape time from state the
// server keeps anyway, or a counter bumped where it already counts: no host, key, document or URL
// appears in a label, so the page says how much, never who (docs/operations.md, Metrics).

export type SocketKind = 'document' | 'relay-link';

export interface CoordinatorMetricsSources {
  role: 'coordinator' | 'relay';
  host: DocumentHost;
  presence: PresenceTable;
  log: UpdateLog;
  logDirectory: string;
  refusals: Refusals;
  gate: { stats(): { addresses: number; connections: number; pending: number } };
  relaySessions(): number;
}

export interface CoordinatorMetrics {
  registry: Registry;
  // A websocket this server accepted: counted while open; its bytes when read.
  socketOpened(
    socket: { bytesRead: number; bytesWritten: number; once(e: 'close', f: () => void): unknown },
    kind: SocketKind,
  ): void;
  // Answers GET /metrics; never throws (a failed collector is a 500 with the reason).
  respond(res: ServerResponse): void;
}

const PHASES = [...agentPhaseSchema.options, 'unknown'] as const;
type Phase = (typeof PHASES)[number];

// The phase a status document claims, unverified: these are operational counts, `outpost status`
// checks the host's signature. Read without the whole zod parse (it runs on every status update).
function claimedPhase(document: HostedDocument): Phase {
  const current = document.doc.getMap<unknown>(STATUS_MAP).get(CURRENT_KEY) as
    | { status?: { phase?: unknown } }
    | undefined;
  const parsed = agentPhaseSchema.safeParse(current?.status?.phase);
  return parsed.success ? parsed.data : 'unknown';
}

async function directoryBytes(directory: string): Promise<number> {
  let total = 0;
  for (const name of await fs.readdir(directory).catch(() => [] as string[])) {
    const stat = await fs.stat(join(directory, name)).catch(() => null);
    if (stat?.isFile()) total += stat.size;
  }
  return total;
}

// A counter whose value another part keeps (refusals, bytes): each scrape adds what it grew by.
export function mirroredCounter<L extends string>(
  registry: Registry,
  options: { name: string; help: string; labelNames?: L[] },
  read: () => Array<[Partial<Record<L, string>>, number]> | number,
): Counter<L> {
  const last = new Map<string, number>();
  return new Counter<L>({
    ...options,
    labelNames: options.labelNames ?? [],
    registers: [registry],
    collect() {
      const values = read();
      for (const [labels, value] of typeof values === 'number' ? [[{}, values] as const] : values) {
        const key = JSON.stringify(labels);
        const grown = value - (last.get(key) ?? 0);
        last.set(key, value);
        // inc(…, 0) too, so that a series shows (at 0) before its first event.
        this.inc(labels as Partial<Record<L, string | number>>, Math.max(0, grown));
      }
    },
  });
}

export function createCoordinatorMetrics(sources: CoordinatorMetricsSources): CoordinatorMetrics {
  const registry = new Registry();
  registry.setDefaultLabels({ role: sources.role });

  // Last phase claimed per host whose status document was loaded since start (an agent
  // connected, a relay synced it): the map holds one small entry per host, updated on each
  // stored status update; documents unloading keep their host's last phase.
  const phases = new Map<string, Phase>();
  const track = (document: HostedDocument): void => {
    const parsed = parseDocName(document.name);
    if (parsed?.role === 'status') phases.set(parsed.host, claimedPhase(document));
  };
  // Seconds from an append to its durable acknowledgement: a commit of ~0.3 ms on a local SSD, a
  // few ms under load, a quorum's round trip on NATS; tens of ms and more mean a disk or a cluster
  // that holds every write back.
  const appendSeconds = new Histogram({
    name: 'outpost_update_log_append_seconds',
    help: 'Time for an update log append to become durable (fsync, or the NATS stream quorum), seconds',
    // Doubling from 0.25 ms to 4.1 s: the same relative resolution for a lone commit on a fast disk
    // and a stalled quorum.
    buckets: exponentialBuckets(0.00025, 2, 15),
    registers: [registry],
  });
  sources.host.observe({ loaded: track, accepted: track, logAppended: (seconds) => appendSeconds.observe(seconds) });

  new Gauge({
    name: 'outpost_hosts_by_phase',
    help: 'Hosts by the phase their status document last claimed (hosts whose status was loaded since start)',
    labelNames: ['phase'],
    registers: [registry],
    collect() {
      const counts = new Map<Phase, number>(PHASES.map((p) => [p, 0]));
      for (const phase of phases.values()) counts.set(phase, (counts.get(phase) ?? 0) + 1);
      for (const [phase, count] of counts) this.set({ phase }, count);
    },
  });
  new Gauge({
    name: 'outpost_hosts',
    help: 'Hosts known to presence (connected here or reported by a relay), by online state',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      let online = 0;
      const hosts = sources.presence.hosts();
      for (const host of hosts) if (sources.presence.get(host)?.online) online += 1;
      this.set({ state: 'online' }, online);
      this.set({ state: 'offline' }, hosts.length - online);
    },
  });

  // Websockets by kind, and their bytes: finished sockets are summed at close, open ones read live.
  const open = new Map<SocketKind, Set<{ bytesRead: number; bytesWritten: number }>>([
    ['document', new Set()],
    ['relay-link', new Set()],
  ]);
  const closedBytes = { document: { in: 0, out: 0 }, 'relay-link': { in: 0, out: 0 } };
  new Gauge({
    name: 'outpost_websocket_connections',
    help: 'Open websocket connections: document (one per agent or admin document) and relay-link (one per relay)',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      for (const [kind, sockets] of open) this.set({ kind }, sockets.size);
    },
  });
  new Gauge({
    name: 'outpost_tcp_connections',
    help: 'Open TCP connections of any kind (HTTP, websocket) counted by the connection limits, and pending upgrades',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const stats = sources.gate.stats();
      this.set({ state: 'open' }, stats.connections);
      this.set({ state: 'pending' }, stats.pending);
    },
  });
  new Gauge({
    name: 'outpost_relay_sessions',
    help: 'Relays connected to this server over their multiplexed link',
    registers: [registry],
    collect() {
      this.set(sources.relaySessions());
    },
  });
  mirroredCounter(
    registry,
    {
      name: 'outpost_sync_bytes_total',
      help: 'Bytes on websocket connections (sync and awareness, with framing), by direction and connection kind',
      labelNames: ['direction', 'kind'],
    },
    () =>
      [...open].flatMap(([kind, sockets]) => {
        let read = closedBytes[kind].in;
        let written = closedBytes[kind].out;
        for (const socket of sockets) {
          read += socket.bytesRead;
          written += socket.bytesWritten;
        }
        return [
          [{ direction: 'in', kind }, read],
          [{ direction: 'out', kind }, written],
        ] as Array<[{ direction: string; kind: string }, number]>;
      }),
  );
  new Gauge({
    name: 'outpost_open_documents',
    help: 'Documents loaded in memory now',
    registers: [registry],
    collect() {
      this.set(sources.host.openDocuments());
    },
  });

  new Gauge({
    name: 'outpost_update_log_entries',
    help: 'Entries (stored updates) in the append-only update log',
    registers: [registry],
    async collect() {
      this.set((await sources.log.size()).entries);
    },
  });
  new Gauge({
    name: 'outpost_update_log_documents',
    help: 'Documents in the update log',
    registers: [registry],
    async collect() {
      this.set((await sources.log.size()).documents);
    },
  });
  new Gauge({
    name: 'outpost_update_log_bytes',
    help: 'Bytes of the update log: its LevelDB files, or the NATS stream (as stored on each replica)',
    registers: [registry],
    async collect() {
      this.set((await sources.log.size()).bytes ?? (await directoryBytes(sources.logDirectory)));
    },
  });
  mirroredCounter(
    registry,
    {
      name: 'outpost_refusals_total',
      help: 'Requests and connections refused or failed, by reason (the counters /healthz shows under refusals)',
      labelNames: ['reason'],
    },
    () => Object.entries(sources.refusals).map(([reason, count]) => [{ reason }, count]),
  );

  return {
    registry,
    socketOpened(socket, kind) {
      const sockets = open.get(kind)!;
      sockets.add(socket);
      socket.once('close', () => {
        if (!sockets.delete(socket)) return;
        closedBytes[kind].in += socket.bytesRead;
        closedBytes[kind].out += socket.bytesWritten;
      });
    },
    respond(res) {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
          res.end(text);
        },
        (error: Error) => {
          res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
          res.end(`cannot collect metrics: ${error.message}\n`);
        },
      );
    },
  };
}
