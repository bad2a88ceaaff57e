import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { encodeNixBase32 } from '../../shared/nix/base32.js';
import { narHashToNix32 } from '../../shared/nix/narinfo.js';
import { formatBytes } from '../../shared/text/bytes.js';
import { type BodySource, httpGet } from './http-get.js';
import { createThroughputGuard, type ThroughputRule } from './throughput.js';

// One NAR file from the cache into the staging directory: resumed from the bytes already on disk
// with an HTTP Range request, cut the moment it goes past its cap (from the signed NarSize, see
// nar-size.ts), aborted when slower than the throughput rule, hashed as the bytes arrive (only a
// resumed prefix is read back), written in large blocks, then renamed into place.
//
// Nothing is fsync'ed: the file is read by Nix moments later, and Nix itself does not fsync what
// it restores. What a power loss can leave behind is caught instead: a complete file this process
// did not write and check itself is hashed again before it is used (stagedNarIntact), and a
// resumed partial file is hashed as a whole at its end.

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
  // Called as bytes reach the file on disk (its new length), and with (0, true) when the file is
  // thrown away or started over: what the staging server follows.
  onDisk?: (bytes: number, restarted: boolean) => void;
  checkIntervalMs?: number;
}

// Received bytes are copied into a block (the raw transport reuses its read buffer) and go to
// disk one block per write, at most one write in flight while the next block fills: two or three
// blocks per transfer, sized down to the file when it is smaller. A slow link still gets its
// bytes to disk at least every FLUSH_INTERVAL_MS (a fast one fills a block sooner), so a killed
// agent loses at most that much of a transfer, and Nix, importing as the file grows, follows
// closely.
const WRITE_BLOCK_BYTES = 2 * 1024 * 1024;
const MIN_BLOCK_BYTES = 16 * 1024;
const FLUSH_INTERVAL_MS = 100;
// From this many bytes on, a plain-http transfer takes the raw transport (see http-get.ts).
const LARGE_TRANSFER_BYTES = 1024 * 1024;

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
function parseContentRange(header: string | undefined): { start?: number; unsatisfied?: number } {
  const range = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(header ?? '');
  if (range) return { start: Number(range[1]) };
  const star = /^bytes \*\/(\d+)$/.exec(header ?? '');
  return star ? { unsatisfied: Number(star[1]) } : {};
}

async function writeAll(handle: FileHandle, block: Buffer, length: number): Promise<void> {
  let written = 0;
  while (written < length) {
    const { bytesWritten } = await handle.write(block, written, length - written);
    if (bytesWritten === 0) throw new Error('the disk accepted no more bytes');
    written += bytesWritten;
  }
}

class BlockWriter {
  private filling: Buffer;
  private filled = 0;
  // Written blocks kept for reuse (a block is in flight, one sealed, one filling at most).
  private readonly spares: Buffer[] = [];
  private readonly sealed: { block: Buffer; length: number }[] = [];
  private writing: Promise<void> | null = null;
  private failure: Error | null = null;
  private lastFlush: number;
  // Called once the sealed blocks are written, after push() asked the reader to wait.
  onDrain: (() => void) | null = null;
  // Bytes written so far, after each write.
  onWritten: ((total: number) => void) | null = null;
  private written = 0;

  constructor(
    private readonly handle: FileHandle,
    private readonly blockBytes: number,
    now: number,
  ) {
    this.filling = Buffer.allocUnsafe(blockBytes);
    this.lastFlush = now;
  }

  // Copies the bytes in; false when the reader should wait for onDrain.
  push(bytes: Uint8Array, now: number): boolean {
    if (this.failure) throw this.failure;
    for (let at = 0; at < bytes.length; ) {
      const take = Math.min(bytes.length - at, this.blockBytes - this.filled);
      this.filling.set(bytes.subarray(at, at + take), this.filled);
      this.filled += take;
      at += take;
      if (this.filled === this.blockBytes) this.seal(now);
    }
    if (this.filled > 0 && now - this.lastFlush >= FLUSH_INTERVAL_MS) this.seal(now);
    this.pump();
    return this.sealed.length === 0;
  }

  private seal(now: number): void {
    this.sealed.push({ block: this.filling, length: this.filled });
    this.filling = this.spares.pop() ?? Buffer.allocUnsafe(this.blockBytes);
    this.filled = 0;
    this.lastFlush = now;
  }

  private pump(): void {
    if (this.writing || this.failure) return;
    const next = this.sealed.shift();
    if (!next) return;
    this.writing = writeAll(this.handle, next.block, next.length).then(
      () => {
        this.writing = null;
        this.written += next.length;
        this.onWritten?.(this.written);
        if (this.spares.length < 2) this.spares.push(next.block);
        this.pump();
        if (!this.writing && this.sealed.length === 0) {
          const drain = this.onDrain;
          this.onDrain = null;
          drain?.();
        }
      },
      (error: Error) => {
        this.writing = null;
        this.failure = error;
        const drain = this.onDrain;
        this.onDrain = null;
        drain?.();
      },
    );
  }

  // Everything received is written (not fsync'ed).
  async finish(): Promise<void> {
    if (this.filled > 0) this.seal(this.lastFlush);
    this.pump();
    while (this.writing) {
      await this.writing;
      this.pump();
    }
    if (this.failure) throw this.failure;
  }

  // Stops without writing what is queued (the file is being thrown away).
  async abandon(): Promise<void> {
    this.sealed.length = 0;
    this.filled = 0;
    if (this.writing) await this.writing;
  }
}

// Why a body ended early: the cap was passed (the cache is hostile), or the stream broke.
class OverCap extends Error {}

// Complete files this process wrote and checked, by path, with what identifies that very file.
const checkedHere = new Map<string, string>();

async function identity(path: string): Promise<string | null> {
  try {
    const stat = await fs.stat(path);
    return `${stat.dev}:${stat.ino}:${stat.size}:${stat.mtimeMs}`;
  } catch {
    return null;
  }
}

async function rememberChecked(path: string): Promise<void> {
  const id = await identity(path);
  if (id) checkedHere.set(path, id);
}

// Whether a complete staged file can be used as it is: one this process checked is; any other
// (left by an earlier process, perhaps cut short by a power loss) must have the right size and
// hash. A file that does not is removed, to be fetched again.
export async function stagedNarIntact(
  job: Pick<NarJob, 'final' | 'exactSize' | 'cap' | 'expectedHash'>,
): Promise<boolean> {
  const id = await identity(job.final);
  if (id === null) return false;
  if (checkedHere.get(job.final) === id) return true;
  const size = await sizeOf(job.final);
  let intact = size <= job.cap && (job.exactSize === null || size === job.exactSize);
  if (intact && job.expectedHash)
    intact = nix32Digest(await hashPrefix(job.final, size)) === narHashToNix32(job.expectedHash);
  if (!intact) {
    await fs.rm(job.final, { force: true });
    return false;
  }
  checkedHere.set(job.final, id);
  return true;
}

export async function downloadNar(job: NarJob, options: NarDownloadOptions): Promise<NarOutcome> {
  let offset = await sizeOf(job.part);
  if (offset > job.cap) {
    options.onBytes(-offset);
    await fs.rm(job.part, { force: true });
    options.onDisk?.(0, true);
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
  // What progress has counted for this file (the kept prefix, then each chunk).
  let counted = offset;
  const count = (delta: number): void => {
    counted += delta;
    options.onBytes(delta);
  };
  // Throws the partial file away, and takes back what progress counted for it.
  const discard = async (): Promise<void> => {
    count(-counted);
    kept = 0;
    await fs.rm(job.part, { force: true });
    options.onDisk?.(0, true);
  };
  const tooMuch = (what: string): string =>
    `${job.url} ${what} more than the ${job.cap} bytes (${formatBytes(job.cap)}) its signed NarSize allows: the cache is broken or hostile; the transfer was cut and the file discarded`;
  let handle: FileHandle | null = null;
  let writer: BlockWriter | null = null;
  let source: BodySource | null = null;
  try {
    if (options.signal.aborted) return fail('cancelled');
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    // The prefix is read back while the request is on its way.
    const prefix = hashPrefix(job.part, offset);
    prefix.catch(() => undefined);
    const remaining = (job.exactSize ?? job.cap) - offset;
    source = await httpGet(job.url, {
      headers,
      signal: controller.signal,
      large: remaining >= LARGE_TRANSFER_BYTES,
    });
    let hash = await prefix;
    const { status } = source;
    const range = parseContentRange(source.header('content-range'));
    const encoding = source.header('content-encoding');
    if (status === 416 && offset > 0 && (job.exactSize === offset || range.unsatisfied === offset)) {
      // Everything arrived before; only the rename was missing.
      source.destroy();
    } else if (status !== 200 && status !== 206) {
      source.destroy();
      if (status === 416) await discard();
      return fail(`HTTP ${status} for ${source.url}`);
    } else if (encoding && encoding !== 'identity') {
      source.destroy();
      return fail(
        `${source.url} answered with Content-Encoding ${encoding} although identity was asked for; configure the cache to serve NAR files as they are`,
        false,
      );
    } else {
      if (status === 200 && offset > 0) {
        // The server ignored the Range header: start the file over.
        count(-offset);
        options.onDisk?.(0, true);
        offset = 0;
        kept = 0;
        hash = createHash('sha256');
      } else if (status === 206 && range.start !== offset) {
        source.destroy();
        await discard();
        return fail(
          `${source.url} answered a request for bytes from ${offset} with ${source.header('content-range') ?? 'no Content-Range'}; the partial file was discarded`,
        );
      }
      const declaredLength = Number(source.header('content-length') ?? Number.NaN);
      if (Number.isSafeInteger(declaredLength) && offset + declaredLength > job.cap) {
        source.destroy();
        await discard();
        return fail(tooMuch(`declared ${offset + declaredLength} bytes (Content-Length after ${offset} kept),`), false);
      }
      handle = await fs.open(job.part, offset > 0 ? 'a' : 'w', 0o600);
      const blockWriter = new BlockWriter(
        handle,
        Math.min(WRITE_BLOCK_BYTES, Math.max(MIN_BLOCK_BYTES, job.cap - offset)),
        options.now(),
      );
      writer = blockWriter;
      const body = source;
      const base = offset;
      blockWriter.onWritten = (written) => options.onDisk?.(base + written, false);
      await body.pipe((chunk) => {
        // Cut the moment it goes past the cap: nothing more is read, the file is discarded.
        if (base + received + chunk.byteLength > job.cap) throw new OverCap();
        hash.update(chunk);
        received += chunk.byteLength;
        const at = options.now();
        guard.record(received, at);
        count(chunk.byteLength);
        if (blockWriter.push(chunk, at)) return true;
        blockWriter.onDrain = () => body.resume();
        return false;
      });
      await writer.finish();
      writer = null;
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
    await rememberChecked(job.final);
    return { ok: true, received };
  } catch (error) {
    source?.destroy();
    if (error instanceof OverCap) {
      await writer?.abandon();
      await handle?.close().catch(() => undefined);
      await discard();
      return fail(tooMuch('sent'), false);
    }
    // Bytes received before a cut are good: they go to disk for the next attempt to resume from.
    if (handle) {
      await writer?.finish().catch(() => undefined);
      await handle.close().catch(() => undefined);
      kept = await sizeOf(job.part);
    }
    if (abortReason) return fail(abortReason);
    if (options.signal.aborted) return fail('cancelled');
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    const code = (error as { code?: string }).code;
    return fail(`${job.url}: ${cause?.code ?? cause?.message ?? code ?? (error as Error).message}`);
  } finally {
    clearInterval(timer);
    options.signal.removeEventListener('abort', abortFromCaller);
  }
}
