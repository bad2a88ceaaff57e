import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { encodeNixBase32 } from '../../shared/nix/base32.js';
import { narHashToNix32 } from '../../shared/nix/narinfo.js';
import { syncDirectory } from '../../shared/node/durable-file.js';
import { createThroughputGuard, type ThroughputRule } from './throughput.js';

// One NAR file from the cache into the staging directory: resumed from the bytes already on disk
// with an HTTP Range request, cut at the declared size, aborted when the transfer is slower than
// the throughput rule, checked against FileHash, then renamed into place.

export interface NarJob {
  url: string;
  part: string;
  final: string;
  // Declared FileSize (null when the narinfo has none).
  expectedSize: number | null;
  cap: number;
  // FileHash, or NarHash for an uncompressed NAR: checked before the file counts as complete.
  expectedHash: string | null;
}

export type NarOutcome =
  | { ok: true; bytes: number }
  // retryable false: the cache is hostile or broken (more bytes than declared); retrying cannot help.
  | { ok: false; reason: string; bytes: number; retryable: boolean };

export interface NarDownloadOptions {
  throughput: ThroughputRule;
  signal: AbortSignal;
  now: () => number;
  // Called with every chunk's size (negative when a partial file is thrown away).
  onBytes: (delta: number) => void;
  checkIntervalMs?: number;
}

async function sizeOf(path: string): Promise<number> {
  try {
    return (await fs.stat(path)).size;
  } catch {
    return 0;
  }
}

async function sha256Nix32(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${encodeNixBase32(new Uint8Array(hash.digest()))}`;
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
  const timer = setInterval(() => {
    const slow = guard.check(options.now());
    if (slow && !abortReason) {
      abortReason = `too slow: ${slow}`;
      controller.abort();
    }
  }, options.checkIntervalMs ?? 1000);
  const fail = (reason: string, retryable = true): NarOutcome => ({ ok: false, reason, bytes: received, retryable });
  try {
    if (options.signal.aborted) return fail('cancelled');
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const response = await fetch(job.url, { headers, signal: controller.signal });
    if (response.status === 416 && offset > 0 && job.expectedSize === offset) {
      await response.body?.cancel();
    } else if (response.status !== 200 && response.status !== 206) {
      await response.body?.cancel();
      return fail(`HTTP ${response.status} for ${job.url}`);
    } else {
      if (response.status === 200 && offset > 0) {
        // The server ignored the Range header: start the file over.
        options.onBytes(-offset);
        offset = 0;
      }
      const handle = await fs.open(job.part, offset > 0 ? 'a' : 'w', 0o600);
      try {
        const reader = response.body?.getReader();
        for (;;) {
          if (!reader) break;
          const { done, value } = await reader.read();
          if (done) break;
          if (offset + received + value.byteLength > job.cap) {
            await reader.cancel().catch(() => undefined);
            await handle.close().catch(() => undefined);
            options.onBytes(-(offset + received));
            await fs.rm(job.part, { force: true });
            return fail(
              `${job.url} sent more than the ${job.cap} bytes its narinfo declares: the cache is broken or hostile`,
              false,
            );
          }
          await handle.write(value);
          received += value.byteLength;
          guard.record(received, options.now());
          options.onBytes(value.byteLength);
        }
        await handle.sync();
      } finally {
        await handle.close().catch(() => undefined);
      }
    }
    const total = offset + received;
    if (job.expectedSize !== null && total !== job.expectedSize) {
      return fail(`${job.url} ended after ${total} of ${job.expectedSize} bytes`);
    }
    if (job.expectedHash && (await sha256Nix32(job.part)) !== narHashToNix32(job.expectedHash)) {
      options.onBytes(-total);
      await fs.rm(job.part, { force: true });
      return fail(`${job.url} does not match its declared hash ${job.expectedHash}; the partial file was discarded`);
    }
    await fs.rename(job.part, job.final);
    await syncDirectory(job.final);
    return { ok: true, bytes: received };
  } catch (error) {
    if (abortReason) return fail(abortReason);
    if (options.signal.aborted) return fail('cancelled');
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return fail(`${job.url}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
  } finally {
    clearInterval(timer);
    options.signal.removeEventListener('abort', abortFromCaller);
  }
}
