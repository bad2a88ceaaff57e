import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { encodeNixBase32 } from '../../shared/nix/base32.js';
import { narHashToNix32 } from '../../shared/nix/narinfo.js';
import { syncDirectory } from '../../shared/node/durable-file.js';
import { formatBytes } from './disk-space.js';
import { createThroughputGuard, type ThroughputRule } from './throughput.js';

// One NAR file from the cache into the staging directory: resumed from the bytes already on disk
// with an HTTP Range request, cut the moment it goes past its cap (from the signed NarSize, see
// nar-size.ts), aborted when slower than the throughput rule, hashed as the bytes arrive (only a
// resumed prefix is read back), written in large blocks, then renamed into place.

export interface NarJob {
  url: string;
  part: string;
  final: string;
  // The file must be exactly this long to be complete; null when only the cap is known.
  exactSize: number | null;
  // More bytes than this end the transfer at once and the file is thrown away.
  cap: number;
  // NarHash (signed) for an uncompressed NAR, else the cache's FileHash; null: none declared
  // (Nix still checks the NarHash when it unpacks the file).
  expectedHash: string | null;
}

export type NarOutcome =
  | { ok: true; received: number }
  // kept: bytes of this file on disk afterwards, which the next attempt resumes from.
  // retryable false: the cache is hostile or broken (more bytes than its signed size allows).
  | { ok: false; reason: string; received: number; kept: number; retryable: boolean };

export interface NarDownloadOptions {
  throughput: ThroughputRule;
  signal: AbortSignal;
  now: () => number;
  // Called as bytes arrive (negative when a partial file is thrown away).
  onBytes: (delta: number) => void;
  checkIntervalMs?: number;
}

// Received bytes go to disk in one write per block (a writev of the chunks as they came, no
// copy), at most one write in flight while the next block fills; memory per transfer stays
// under two blocks. A slow link still gets its bytes to disk at least every FLUSH_INTERVAL_MS,
// so a killed agent loses at most that much of a transfer.
const WRITE_BLOCK_BYTES = 4 * 1024 * 1024;
const FLUSH_INTERVAL_MS = 1000;
// libuv splits longer writev calls anyway; a drip of tiny chunks flushes at this count.
const MAX_CHUNKS_PER_WRITE = 1024;

async function sizeOf(path: string): Promise<number> {
  try {
    return (await fs.stat(path)).size;
  } catch {
    return 0;
  }
}

// The bytes already on disk, hashed so the resumed transfer only adds the rest.
async function hashPrefix(path: string, bytes: number): Promise<Hash> {
  const hash = createHash('sha256');
  if (bytes === 0) return hash;
  for await (const chunk of createReadStream(path, { start: 0, end: bytes - 1, highWaterMark: 1024 * 1024 }))
    hash.update(chunk as Buffer);
  return hash;
}

function nix32Digest(hash: Hash): string {
  return `sha256:${encodeNixBase32(new Uint8Array(hash.digest()))}`;
}

// "bytes START-END/TOTAL" → START; "bytes */TOTAL" → TOTAL as `unsatisfied`.
function parseContentRange(header: string | null): { start?: number; unsatisfied?: number } {
  const range = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header ?? '');
  if (range) return { start: Number(range[1]) };
  const star = /^bytes \*\/(\d+)$/.exec(header ?? '');
  return star ? { unsatisfied: Number(star[1]) } : {};
}

// Sequential block writer over an open file: push() queues a chunk, flushing a block at a time.
class BlockWriter {
  private chunks: Uint8Array[] = [];
  private bytes = 0;
  private inFlight: Promise<void> = Promise.resolve();
  private failure: Error | null = null;
  private lastFlush: number;

  constructor(
    private readonly handle: FileHandle,
    now: number,
  ) {
    this.lastFlush = now;
  }

  async push(chunk: Uint8Array, now: number): Promise<void> {
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
    if (
      this.bytes >= WRITE_BLOCK_BYTES ||
      this.chunks.length >= MAX_CHUNKS_PER_WRITE ||
      now - this.lastFlush >= FLUSH_INTERVAL_MS
    ) {
      this.lastFlush = now;
      await this.flush();
    }
  }

  // Waits for the previous block only, so the next one fills while this one is written.
  async flush(): Promise<void> {
    await this.inFlight;
    if (this.failure) throw this.failure;
    if (this.chunks.length === 0) return;
    const chunks = this.chunks;
    this.chunks = [];
    this.bytes = 0;
    this.inFlight = this.handle.writev(chunks).then(
      () => undefined,
      (error: Error) => {
        this.failure = error;
      },
    );
  }

  async finish(): Promise<void> {
    await this.flush();
    await this.inFlight;
    if (this.failure) throw this.failure;
  }

  // Stops without writing what is queued (the file is being thrown away).
  async abandon(): Promise<void> {
    this.chunks = [];
    await this.inFlight;
  }
}

export async function downloadNar(job: NarJob, options: NarDownloadOptions): Promise<NarOutcome> {
  let offset = await sizeOf(job.part);
  if (offset > job.cap) {
    options.onBytes(-offset);
    await fs.rm(job.part, { force: true });
    offset = 0;
  }
  const controller = new AbortController();
  const abortFromCaller = (): void => controller.abort();
  options.signal.addEventListener('abort', abortFromCaller, { once: true });
  let abortReason: string | null = null;
  const started = options.now();
  const guard = createThroughputGuard(options.throughput, started);
  let received = 0;
  let kept = offset;
  const timer = setInterval(() => {
    const slow = guard.check(options.now());
    if (slow && !abortReason) {
      abortReason = `too slow: ${slow}`;
      controller.abort();
    }
  }, options.checkIntervalMs ?? 1000);
  const fail = (reason: string, retryable = true): NarOutcome => ({ ok: false, reason, received, kept, retryable });
  const discard = async (): Promise<void> => {
    options.onBytes(-kept);
    kept = 0;
    await fs.rm(job.part, { force: true });
  };
  let handle: FileHandle | null = null;
  let writer: BlockWriter | null = null;
  try {
    if (options.signal.aborted) return fail('cancelled');
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    // The prefix is read back while the request is on its way.
    const [response, prefix] = await Promise.all([
      fetch(job.url, { headers, signal: controller.signal }),
      hashPrefix(job.part, offset),
    ]);
    let hash = prefix;
    const range = parseContentRange(response.headers.get('content-range'));
    if (response.status === 416 && offset > 0 && (job.exactSize === offset || range.unsatisfied === offset)) {
      // Everything arrived before; only the rename was missing.
      await response.body?.cancel();
    } else if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel();
      if (response.status === 416) await discard();
      return fail(`HTTP ${response.status} for ${job.url}`);
    } else {
      if (response.status === 200 && offset > 0) {
        // The server ignored the Range header: start the file over.
        options.onBytes(-offset);
        offset = 0;
        kept = 0;
        hash = createHash('sha256');
      } else if (response.status === 206 && range.start !== offset) {
        await response.body?.cancel();
        await discard();
        return fail(
          `${job.url} answered a request for bytes from ${offset} with ${response.headers.get('content-range') ?? 'no Content-Range'}; the partial file was discarded`,
        );
      }
      const tooMuch = (what: string): string =>
        `${job.url} ${what} more than the ${job.cap} bytes (${formatBytes(job.cap)}) its signed NarSize allows: the cache is broken or hostile; the transfer was cut and the file discarded`;
      const declaredLength = Number(response.headers.get('content-length') ?? Number.NaN);
      if (Number.isSafeInteger(declaredLength) && offset + declaredLength > job.cap) {
        await response.body?.cancel();
        await discard();
        return fail(tooMuch(`declared ${offset + declaredLength} bytes (Content-Length after ${offset} kept),`), false);
      }
      handle = await fs.open(job.part, offset > 0 ? 'a' : 'w', 0o600);
      writer = new BlockWriter(handle, options.now());
      const reader = response.body?.getReader();
      for (;;) {
        if (!reader) break;
        const { done, value } = await reader.read();
        if (done) break;
        if (offset + received + value.byteLength > job.cap) {
          // Cut the moment it goes past the cap: nothing more is read, the file is discarded.
          await reader.cancel().catch(() => undefined);
          await writer.abandon();
          writer = null;
          await handle.close().catch(() => undefined);
          handle = null;
          await discard();
          return fail(tooMuch('sent'), false);
        }
        hash.update(value);
        received += value.byteLength;
        const at = options.now();
        guard.record(received, at);
        options.onBytes(value.byteLength);
        await writer.push(value, at);
        kept = offset + received;
      }
      await writer.finish();
      writer = null;
      await handle.sync();
      await handle.close();
      handle = null;
    }
    const total = offset + received;
    kept = total;
    if (job.exactSize !== null && total !== job.exactSize) {
      return fail(`${job.url} ended after ${total} of ${job.exactSize} bytes`);
    }
    if (job.expectedHash && nix32Digest(hash) !== narHashToNix32(job.expectedHash)) {
      await discard();
      return fail(`${job.url} does not match its declared hash ${job.expectedHash}; the partial file was discarded`);
    }
    await fs.rename(job.part, job.final);
    await syncDirectory(job.final);
    return { ok: true, received };
  } catch (error) {
    // Bytes received before a cut are good: they go to disk for the next attempt to resume from.
    if (handle) {
      await writer?.finish().catch(() => undefined);
      await handle.close().catch(() => undefined);
      kept = await sizeOf(job.part);
    }
    if (abortReason) return fail(abortReason);
    if (options.signal.aborted) return fail('cancelled');
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return fail(`${job.url}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
  } finally {
    clearInterval(timer);
    options.signal.removeEventListener('abort', abortFromCaller);
  }
}
