import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Awareness } from 'y-protocols/awareness';
import type * as Y from 'yjs';
import { readCurrentStatus, resultsArray } from '../shared/documents/status.js';
import type { Logger } from '../shared/log.js';
import {
  agentPhaseSchema,
  downloadProgressSchema,
  resultOutcomeSchema,
  signedResultSchema,
} from '../shared/schemas/report.js';

// `outpost agent --metrics-listen 127.0.0.1:PORT`: the agent's own Prometheus metrics on a local
// port (off by default). Everything is read from what the agent already publishes — its status
// document (phase, generations, results) and its awareness state (live download progress) — so
// the hook in run-agent.ts is one call. It serves GET /metrics only, and binds where it is told:
// keep it on a loopback or management address.

export interface AgentMetricsSources {
  statusDoc: Y.Doc;
  awareness: Awareness;
  logger: Logger;
}

export interface AgentMetricsServer {
  port: number;
  close(): Promise<void>;
}

// "127.0.0.1:9464", "[::1]:9464", "0.0.0.0:9464" → address and port.
export function parseListenAddress(text: string): { address: string; port: number } | null {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9A-Za-z.-]+)):(\d{1,5})$/.exec(text);
  const port = Number(match?.[3]);
  if (!match || port > 65535) return null;
  return { address: match[1] ?? match[2]!, port };
}

const PHASES = agentPhaseSchema.options;
const OUTCOMES = resultOutcomeSchema.options;

export function createAgentMetrics(sources: AgentMetricsSources): Registry {
  const registry = new Registry();
  const current = () => readCurrentStatus(sources.statusDoc)?.status ?? null;

  new Gauge({
    name: 'outpost_agent_phase',
    help: "1 for the agent's current phase (from its signed status), 0 for the others",
    labelNames: ['phase'],
    registers: [registry],
    collect() {
      const phase = current()?.phase;
      for (const p of PHASES) this.set({ phase: p }, p === phase ? 1 : 0);
    },
  });
  new Gauge({
    name: 'outpost_agent_generation',
    help: 'Generation applied (running) and targeted (being installed); absent when none',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.reset();
      const status = current();
      if (status?.applied) this.set({ kind: 'applied' }, status.applied.generation);
      if (status?.target) this.set({ kind: 'target' }, status.target.generation);
    },
  });

  // Download progress arrives in awareness (live, every few seconds and at the end) and in the
  // status document (milestones); each download is known by its start time.
  const download = { startedAt: '', done: 0, total: 0 };
  const downloaded = new Counter({
    name: 'outpost_agent_download_bytes_total',
    help: 'Bytes of NAR files downloaded, over all downloads since the agent started',
    registers: [registry],
  });
  const seeProgress = (value: unknown): void => {
    const parsed = downloadProgressSchema.safeParse(value);
    if (!parsed.success) return;
    const { startedAt, bytesDone, bytesTotal } = parsed.data;
    if (startedAt !== download.startedAt) Object.assign(download, { startedAt, done: 0, total: 0 });
    if (bytesDone > download.done) downloaded.inc(bytesDone - download.done);
    download.done = Math.max(download.done, bytesDone);
    download.total = bytesTotal;
  };
  sources.awareness.on('update', () => seeProgress(sources.awareness.getLocalState()?.progress));
  sources.statusDoc.on('update', () => seeProgress(current()?.progress));
  new Gauge({
    name: 'outpost_agent_download_bytes',
    help: 'The current (or last) download: bytes done and bytes in all',
    labelNames: ['kind'],
    registers: [registry],
    collect() {
      this.set({ kind: 'done' }, download.done);
      this.set({ kind: 'total' }, download.total);
    },
  });

  new Gauge({
    name: 'outpost_agent_last_result',
    help: "1 for the outcome of the agent's newest signed result, 0 for the others (all 0 before the first)",
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      const last = lastResult(sources.statusDoc);
      for (const outcome of OUTCOMES) this.set({ outcome }, last?.outcome === outcome ? 1 : 0);
    },
  });
  new Gauge({
    name: 'outpost_agent_last_result_generation',
    help: 'The generation the newest signed result is about',
    registers: [registry],
    collect() {
      this.reset();
      const last = lastResult(sources.statusDoc);
      if (last) this.set(last.generation);
    },
  });
  new Gauge({
    name: 'outpost_agent_last_result_timestamp_seconds',
    help: 'When the newest signed result was written (Unix time)',
    registers: [registry],
    collect() {
      this.reset();
      const last = lastResult(sources.statusDoc);
      if (last) this.set(Date.parse(last.at) / 1000);
    },
  });
  new Gauge({
    name: 'outpost_agent_results',
    help: 'Signed results in the status document, by outcome',
    labelNames: ['outcome'],
    registers: [registry],
    collect() {
      const counts = new Map<string, number>(OUTCOMES.map((o) => [o, 0]));
      for (const entry of resultsArray(sources.statusDoc).toArray()) {
        const outcome = (entry as { result?: { outcome?: unknown } } | null)?.result?.outcome;
        if (typeof outcome === 'string' && counts.has(outcome)) counts.set(outcome, counts.get(outcome)! + 1);
      }
      for (const [outcome, count] of counts) this.set({ outcome }, count);
    },
  });
  return registry;
}

// Only the newest entry is parsed: the array grows with every result.
function lastResult(statusDoc: Y.Doc) {
  const results = resultsArray(statusDoc);
  if (results.length === 0) return null;
  const parsed = signedResultSchema.safeParse(results.get(results.length - 1));
  return parsed.success ? parsed.data.result : null;
}

export async function startAgentMetrics(listen: string, sources: AgentMetricsSources): Promise<AgentMetricsServer> {
  const where = parseListenAddress(listen);
  if (!where)
    throw new Error(`--metrics-listen ${JSON.stringify(listen)}: expected ADDRESS:PORT such as 127.0.0.1:9464`);
  const registry = createAgentMetrics(sources);
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('only GET /metrics is served here\n');
      return;
    }
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
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: Error) =>
      reject(new Error(`--metrics-listen ${listen}: cannot listen there (${error.message}); choose a free port`)),
    );
    server.listen(where.port, where.address, () => {
      server.removeAllListeners('error');
      resolve();
    });
  });
  server.on('error', (error: Error) =>
    sources.logger.warn({ event: 'metrics-server-error', reason: error.message }, 'metrics server error'),
  );
  const port = (server.address() as AddressInfo).port;
  sources.logger.info({ event: 'metrics-listening', address: where.address, port }, 'serving /metrics');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
