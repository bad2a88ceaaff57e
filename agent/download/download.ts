import { join } from 'node:path';
import type { Narinfo } from '../../shared/nix/narinfo.js';
import type { DownloadProgress } from '../../shared/schemas/report.js';
import { formatBytes } from '../../shared/text/bytes.js';
import { invalidPaths } from '../nix/store-query.js';
import { type FetchOutcome, realiseClosure } from '../pipeline/fetch.js';
import { checkDiskSpace } from './disk-space.js';
import { downloadNar, type NarJob, stagedNarIntact } from './nar-download.js';
import { narFileBounds } from './nar-size.js';
import { createProgressTracker } from './progress.js';
import {
  clearStaging,
  hashPart,
  prepareStaging,
  pruneStaging,
  stagedFiles,
  stagedState,
  transferSize,
  writeStagedNarinfo,
} from './staging.js';
import { type FileFeed, type StagingServer, startStagingServer } from './staging-server.js';
import type { ThroughputRule } from './throughput.js';

// Downloads a verified closure: only the paths the store lacks, after checking the closure's size
// against --max-closure-size and the free disk space; every file capped by its signed NarSize
// (nar-size.ts); resumable (files already complete are kept, partial ones continue where they
// stopped); bounded retries, an overall deadline and the throughput rule. Nix substitutes from
// the staging directory with the pinned keys while the files arrive (staging-server.ts), and
// once more from the complete files if that did not work out.

export interface DownloadConfig {
  store?: string;
  stagingDir: string;
  substituter: string;
  trustedCacheKeys: string[];
  maxClosureBytes: number;
  minFreeBytes: number;
  throughput: ThroughputRule;
  // --download-retries N: a file fails after N failed attempts in a row that kept no new bytes,
  // or after RETRY_BUDGET_FACTOR × N failed attempts in all; the closure fails after
  // RETRY_BUDGET_FACTOR × N × concurrency failed attempts in all (see retryVerdict).
  retries: number;
  concurrency: number;
  // Absolute time (ms) by which the download must be complete; persisted, so restarts keep it.
  deadline: number;
  startedAt: number;
  now: () => number;
  signal: AbortSignal;
  onProgress: (progress: DownloadProgress) => void;
  // The target's GC root, so a garbage collection before activation cannot delete it.
  gcRoot: string;
  // First retry waits this long, doubling up to MAX_BACKOFF_MS.
  retryDelayMs?: number;
  onRetry?: (retry: {
    storePath: string;
    reason: string;
    failuresInARow: number;
    failures: number;
    delayMs: number;
  }) => void;
}

export interface DownloadPlan {
  // Verified narinfos of the paths the store does not have.
  missing: Narinfo[];
  closureNarBytes: number;
}

export type DownloadOutcome =
  | {
      ok: true;
      paths: number;
      bytes: number;
      // How Nix imported the closure: while the files arrived, or from the finished files (a
      // fast download, or after the streaming import failed: streamingFailed says why).
      imported: 'while-downloading' | 'after-download';
      streamingFailed?: string;
    }
  | { ok: false; reason: string; outputTail: string; cancelled?: boolean };

const MAX_BACKOFF_MS = 60_000;

// On a fast link the import after the transfer is short, and Nix reading through HTTP costs
// more CPU than reading the staged files (measured: about 0.3 s in Nix and 0.2 s in the agent
// per 100 MiB); on a slow one the import would come on top of a long transfer. So only a
// download still running after this long gets Nix importing as the files arrive.
const STREAM_IMPORT_AFTER_MS = 5000;

// Progress can excuse failures in a row (a link that keeps cutting a long transfer still moves
// it forward through Range resume), but never without end: a cache that sends some bytes and
// then breaks every transfer, or sends bytes that fail the hash, costs a bounded number of
// attempts, each bounded by the file's signed size.
export const RETRY_BUDGET_FACTOR = 4;

export interface RetryCounters {
  // Failed attempts in a row on this file that kept no new bytes on disk.
  inARow: number;
  // Failed attempts on this file.
  file: number;
  // Failed attempts on every file of the closure (shared by all workers).
  closure: { count: number };
}

// Counts one failed attempt; null while retrying is allowed, else why the download gives up.
export function retryVerdict(
  counters: RetryCounters,
  keptNewBytes: boolean,
  limits: { retries: number; concurrency: number },
): string | null {
  counters.inARow = keptNewBytes ? 0 : counters.inARow + 1;
  counters.file += 1;
  counters.closure.count += 1;
  if (counters.inARow > limits.retries)
    return `gave up after ${limits.retries} retries without progress (--download-retries)`;
  const perFile = RETRY_BUDGET_FACTOR * limits.retries;
  if (counters.file > perFile)
    return `gave up after ${counters.file} failed attempts on this file (at most ${RETRY_BUDGET_FACTOR} × --download-retries ${limits.retries}, progress or not)`;
  const perClosure = RETRY_BUDGET_FACTOR * limits.retries * Math.max(1, limits.concurrency);
  if (counters.closure.count > perClosure)
    return `gave up after ${counters.closure.count} failed attempts across the closure (at most ${RETRY_BUDGET_FACTOR} × --download-retries ${limits.retries} × ${Math.max(1, limits.concurrency)} transfers at a time)`;
  return null;
}

export function storeDirectory(store: string | undefined): string {
  return store ? join(store, 'nix', 'store') : '/nix/store';
}

// The checks that refuse a closure before anything is fetched.
export async function planDownload(
  infos: readonly Narinfo[],
  config: Pick<DownloadConfig, 'store' | 'stagingDir' | 'maxClosureBytes' | 'minFreeBytes'>,
): Promise<{ ok: true; plan: DownloadPlan } | { ok: false; reason: string }> {
  // FileSize is not signed; one that contradicts the signed NarSize means a broken or hostile cache.
  for (const info of infos) {
    const bounds = narFileBounds(info);
    if (!bounds.ok) return { ok: false, reason: bounds.reason };
  }
  const closureNarBytes = infos.reduce((sum, info) => sum + info.narSize, 0);
  if (closureNarBytes > config.maxClosureBytes) {
    return {
      ok: false,
      reason: `the closure is ${formatBytes(closureNarBytes)} (sum of NarSize over ${infos.length} paths), above --max-closure-size ${formatBytes(config.maxClosureBytes)}; nothing was downloaded`,
    };
  }
  const invalid = new Set(
    await invalidPaths(
      config.store,
      infos.map((i) => i.storePath),
    ),
  );
  const missing = infos.filter((i) => invalid.has(i.storePath));
  let stagingBytes = 0;
  for (const info of missing) {
    const staged = await stagedState(config.stagingDir, info.storePath);
    if (!staged.complete) stagingBytes += Math.max(0, transferSize(info) - staged.partialBytes);
  }
  const shortage = await checkDiskSpace(
    [
      {
        path: storeDirectory(config.store),
        bytes: missing.reduce((sum, i) => sum + i.narSize, 0),
        what: 'store paths',
      },
      { path: config.stagingDir, bytes: stagingBytes, what: 'downloads' },
    ],
    config.minFreeBytes,
  );
  if (shortage) return { ok: false, reason: shortage };
  return { ok: true, plan: { missing, closureNarBytes } };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

function narUrl(substituter: string, info: Narinfo): string {
  const base = `${substituter.replace(/\/+$/, '')}/`;
  const url = new URL(info.url, base);
  // A narinfo may only point into its own cache.
  if (url.origin !== new URL(base).origin)
    throw new Error(`narinfo of ${info.storePath} points outside ${substituter} (${info.url})`);
  return url.href;
}

export async function downloadClosure(
  closure: string,
  plan: DownloadPlan,
  config: DownloadConfig,
): Promise<DownloadOutcome> {
  await prepareStaging(config.stagingDir);
  await pruneStaging(
    config.stagingDir,
    plan.missing.map((i) => i.storePath),
  );
  const tracker = createProgressTracker(
    { paths: plan.missing.length, bytes: plan.missing.reduce((s, i) => s + transferSize(i), 0) },
    config.now,
    config.startedAt,
  );
  const queue: { info: Narinfo; job: NarJob; hash: string }[] = [];
  // What the staging server follows, per store path hash.
  const feeds = new Map<string, FileFeed>();
  for (const info of plan.missing) {
    await writeStagedNarinfo(config.stagingDir, info);
    const files = stagedFiles(config.stagingDir, info.storePath);
    const bounds = narFileBounds(info);
    if (!bounds.ok) return { ok: false, reason: bounds.reason, outputTail: '' };
    // Uncompressed, the file is the NAR: its signed NarHash is what the bytes must match.
    const expectedHash = info.compression === 'none' ? info.narHash : (info.fileHash ?? null);
    let url: string;
    try {
      url = narUrl(config.substituter, info);
    } catch (error) {
      return { ok: false, reason: (error as Error).message, outputTail: '' };
    }
    const job: NarJob = {
      url,
      part: files.part,
      final: files.nar,
      exactSize: bounds.exactSize,
      cap: bounds.cap,
      expectedHash,
    };
    const hash = hashPart(info.storePath);
    if (await stagedNarIntact(job)) {
      tracker.addBytes(transferSize(info));
      tracker.pathDone();
      feeds.set(hash, { onDisk: 0, generation: 0, state: 'complete' });
      continue;
    }
    const partialBytes = (await stagedState(config.stagingDir, info.storePath)).partialBytes;
    tracker.addBytes(partialBytes);
    feeds.set(hash, { onDisk: partialBytes, generation: 0, state: 'pending' });
    queue.push({ info, job, hash });
  }
  // Nix imports references first: the closure's leaves are at the end of the walk from the root.
  queue.reverse();
  config.onProgress(tracker.snapshot());

  const controller = new AbortController();
  const stopAll = (): void => controller.abort();
  config.signal.addEventListener('abort', stopAll, { once: true });
  let fatal: string | null = null;
  const deadlineTimer = setTimeout(
    () => {
      fatal ??= `the download did not finish by its deadline (${new Date(config.deadline).toISOString()}, --fetch-timeout after it started); ${tracker.snapshot().pathsDone} of ${plan.missing.length} paths are kept for the next attempt`;
      controller.abort();
    },
    Math.max(0, config.deadline - config.now()),
  );
  const progressTimer = setInterval(() => config.onProgress(tracker.snapshot()), 1000);

  // Feed changes wake the staging server's followers.
  const signalled = (): { promise: Promise<void>; resolve: () => void } => {
    let resolve = (): void => undefined;
    const promise = new Promise<void>((done) => {
      resolve = done;
    });
    return { promise, resolve };
  };
  let feedChanged = signalled();
  const notify = (): void => {
    const changed = feedChanged;
    feedChanged = signalled();
    changed.resolve();
  };
  const wanted = new Set<string>();
  // A download still running after STREAM_IMPORT_AFTER_MS gets Nix importing while the files
  // arrive (staging-server.ts); if that fails for any reason, Nix imports once more from the
  // complete staging directory below.
  const importTimeoutMs = Math.max(3_600_000, config.deadline - config.now());
  const streamAbort = new AbortController();
  // Set from the timer's callback (a holder object, so their types are not narrowed to null here).
  const streaming: { server: StagingServer | null; import: Promise<FetchOutcome> | null } = {
    server: null,
    import: null,
  };
  let downloadsOver = false;
  let streamStarting: Promise<void> | null = null;
  const startStreaming = (): void => {
    if (downloadsOver || streamStarting) return;
    streamStarting = (async () => {
      const server = await startStagingServer(config.stagingDir, {
        get: (hash) => feeds.get(hash),
        want: (hash) => wanted.add(hash),
        changed: () => feedChanged.promise,
      });
      streaming.server = server;
      if (downloadsOver) return;
      streaming.import = realiseClosure(closure, {
        store: config.store,
        substituters: [server.url],
        trustedCacheKeys: config.trustedCacheKeys,
        timeoutMs: importTimeoutMs,
        addRoot: config.gcRoot,
        // Nix waits for the agent's downloader, however slow the link; a cut stream is not
        // retried by Nix (the agent's own import from the staged files is the retry).
        options: { 'stalled-download-timeout': String(Math.ceil(importTimeoutMs / 1000)), 'download-attempts': '1' },
        signal: streamAbort.signal,
      });
    })().catch(() => undefined);
  };
  const streamTimer = queue.length > 0 ? setTimeout(startStreaming, STREAM_IMPORT_AFTER_MS) : undefined;

  // "Real progress" for the retry count: at least what the throughput rule asks of one window,
  // kept on disk for the next attempt (bytes thrown away, e.g. after a hash mismatch, are none).
  const progressBytes = Math.max(1, (config.throughput.minBytesPerSecond * config.throughput.windowMs) / 1000);
  const closureFailures = { count: 0 };
  // The next file: one Nix is waiting for, else the next in order.
  const takeNext = (): (typeof queue)[number] | undefined => {
    const index = queue.findIndex((item) => wanted.has(item.hash));
    return queue.splice(Math.max(0, index), 1)[0];
  };
  const worker = async (): Promise<void> => {
    for (let item = takeNext(); item && !controller.signal.aborted; item = takeNext()) {
      const { info, job, hash } = item;
      const feed = feeds.get(hash)!;
      // Counted per file: one outage of the link costs each file in flight one attempt, not the
      // whole download several.
      const counters: RetryCounters = { inARow: 0, file: 0, closure: closureFailures };
      let keptBefore = (await stagedState(config.stagingDir, info.storePath)).partialBytes;
      for (;;) {
        const outcome = await downloadNar(job, {
          throughput: config.throughput,
          signal: controller.signal,
          now: config.now,
          onBytes: (delta) => (delta >= 0 ? tracker.addBytes(delta) : tracker.discardBytes(-delta)),
          onDisk: (bytes, restarted) => {
            feed.onDisk = bytes;
            if (restarted) feed.generation += 1;
            notify();
          },
        });
        if (outcome.ok) {
          tracker.pathDone();
          feed.state = 'complete';
          notify();
          break;
        }
        if (controller.signal.aborted) return;
        if (!outcome.retryable) {
          fatal ??= `${info.storePath}: ${outcome.reason}`;
          controller.abort();
          return;
        }
        const keptNewBytes = outcome.kept - keptBefore >= progressBytes;
        keptBefore = outcome.kept;
        const giveUp = retryVerdict(counters, keptNewBytes, config);
        if (giveUp) {
          fatal ??= `${info.storePath}: ${outcome.reason}; ${giveUp}`;
          controller.abort();
          return;
        }
        const delayMs = Math.min(MAX_BACKOFF_MS, (config.retryDelayMs ?? 1000) * 2 ** Math.max(0, counters.inARow - 1));
        config.onRetry?.({
          storePath: info.storePath,
          reason: outcome.reason,
          failuresInARow: counters.inARow,
          failures: counters.file,
          delayMs,
        });
        await sleep(delayMs, controller.signal);
      }
    }
  };
  let streamedOutcome: FetchOutcome | null = null;
  try {
    await Promise.all(Array.from({ length: Math.max(1, Math.min(config.concurrency, queue.length)) }, worker));
    downloadsOver = true;
    clearTimeout(streamTimer);
    await streamStarting;
    const failed = fatal !== null || config.signal.aborted;
    if (failed) {
      for (const feed of feeds.values()) if (feed.state !== 'complete') feed.state = 'failed';
      notify();
      streamAbort.abort();
    }
    // Nix is gone before the staging directory is touched again.
    streamedOutcome = streaming.import ? await streaming.import : null;
  } finally {
    downloadsOver = true;
    clearTimeout(streamTimer);
    clearTimeout(deadlineTimer);
    clearInterval(progressTimer);
    config.signal.removeEventListener('abort', stopAll);
    streamAbort.abort();
    await streamStarting;
    streaming.server?.close();
  }
  config.onProgress(tracker.snapshot());
  if (fatal) return { ok: false, reason: `download failed: ${fatal}`, outputTail: '' };
  if (config.signal.aborted) return { ok: false, reason: 'download cancelled', outputTail: '', cancelled: true };

  const imported = streamedOutcome?.ok
    ? streamedOutcome
    : await realiseClosure(closure, {
        store: config.store,
        substituters: [`file://${config.stagingDir}`],
        trustedCacheKeys: config.trustedCacheKeys,
        timeoutMs: Math.max(3_600_000, config.deadline - config.now()),
        addRoot: config.gcRoot,
      });
  // Bytes Nix refused are never worth keeping; bytes it took are now in the store.
  await clearStaging(config.stagingDir);
  if (!imported.ok) return imported;
  const snapshot = tracker.snapshot();
  return {
    ok: true,
    paths: snapshot.pathsTotal,
    bytes: snapshot.bytesTotal,
    imported: streamedOutcome?.ok ? 'while-downloading' : 'after-download',
    ...(streamedOutcome && !streamedOutcome.ok ? { streamingFailed: streamedOutcome.reason } : {}),
  };
}
