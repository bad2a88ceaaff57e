import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Logger } from '../shared/log.js';
import { NARINFO_MAX_BYTES } from '../shared/nix/narinfo.js';

// The relay as binary-cache mirror: GET /nix-cache/<file> answers from disk, fetching each file
// from the upstream cache once (concurrent requests for one file share that download) and never
// changing a byte. It holds no key and checks nothing: agents verify every narinfo signature
// against their pinned cache keys and Nix checks every NAR hash, so a corrupted or forged file
// is refused on the host exactly as if it came from the upstream cache.
export const CACHE_PREFIX = '/nix-cache';

const FILES: readonly { pattern: RegExp; contentType: string; maxBytes: number | null }[] = [
  { pattern: /^\/nix-cache-info$/, contentType: 'text/x-nix-cache-info', maxBytes: 64 * 1024 },
  { pattern: /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/, contentType: 'text/x-nix-narinfo', maxBytes: NARINFO_MAX_BYTES },
  {
    pattern: /^\/nar\/[0-9a-df-np-sv-z]{52}\.nar(\.[a-z0-9]{1,8})?$/,
    contentType: 'application/x-nix-nar',
    maxBytes: null,
  },
];

export interface CacheMirrorOptions {
  dir: string;
  upstreams: string[];
  maxBytes: number;
  logger: Logger;
  timeoutMs?: number;
}

export interface CacheMirror {
  handle(req: IncomingMessage, res: ServerResponse, path: string): void;
  stats(): { files: number; bytes: number; fetchedBytes: number; fetches: number; hits: number };
}

class NotFound extends Error {}

export async function openCacheMirror(options: CacheMirrorOptions): Promise<CacheMirror> {
  const { dir, logger } = options;
  await fs.mkdir(join(dir, 'nar'), { recursive: true });
  await fs.mkdir(join(dir, 'tmp'), { recursive: true });
  // Size and last use of every stored file, for the size bound (least recently used goes first).
  const stored = new Map<string, { size: number; used: number }>();
  for (const sub of ['', 'nar']) {
    for (const name of await fs.readdir(join(dir, sub))) {
      const path = `/${sub ? `${sub}/` : ''}${name}`;
      if (!FILES.some((f) => f.pattern.test(path))) continue;
      const stat = await fs.stat(join(dir, path));
      if (stat.isFile()) stored.set(path, { size: stat.size, used: stat.mtimeMs });
    }
  }
  await fs.rm(join(dir, 'tmp'), { recursive: true, force: true });
  await fs.mkdir(join(dir, 'tmp'), { recursive: true });
  const downloads = new Map<string, Promise<void>>();
  const counters = { fetchedBytes: 0, fetches: 0, hits: 0 };
  const total = (): number => [...stored.values()].reduce((sum, f) => sum + f.size, 0);

  async function makeRoom(bytes: number): Promise<void> {
    let used = total();
    const byAge = [...stored.entries()].sort((a, b) => a[1].used - b[1].used);
    for (const [path, file] of byAge) {
      if (used + bytes <= options.maxBytes) return;
      if (downloads.has(path)) continue;
      stored.delete(path);
      used -= file.size;
      await fs.rm(join(dir, path), { force: true });
    }
  }

  async function fetchOnce(path: string, maxBytes: number | null): Promise<void> {
    const problems: string[] = [];
    for (const upstream of options.upstreams) {
      const response = await fetch(`${upstream.replace(/\/+$/, '')}${path}`, {
        signal: AbortSignal.timeout(options.timeoutMs ?? 3_600_000),
      }).catch((error: Error) => error);
      if (response instanceof Error) {
        problems.push(`${upstream}: ${response.message}`);
        continue;
      }
      if (response.status === 404) {
        await response.body?.cancel();
        problems.push(`${upstream}: 404`);
        continue;
      }
      if (!response.ok || !response.body) {
        await response.body?.cancel();
        problems.push(`${upstream}: ${response.status}`);
        continue;
      }
      const declared = Number(response.headers.get('content-length') ?? NaN);
      const limit = Math.min(maxBytes ?? Infinity, options.maxBytes);
      if (declared > limit) {
        await response.body.cancel();
        throw new Error(`${path} is ${declared} bytes, over the mirror's limit of ${limit}`);
      }
      const temporary = join(dir, 'tmp', `${randomBytes(8).toString('hex')}`);
      const handle = await fs.open(temporary, 'w');
      let size = 0;
      try {
        for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
          size += chunk.length;
          counters.fetchedBytes += chunk.length;
          if (size > limit) throw new Error(`${path} grew past the mirror's limit of ${limit} bytes`);
          await handle.write(chunk);
        }
        if (Number.isFinite(declared) && declared !== size)
          throw new Error(`${path}: got ${size} of ${declared} bytes`);
        await handle.sync();
      } catch (error) {
        await handle.close();
        await fs.rm(temporary, { force: true });
        throw error;
      }
      await handle.close();
      await makeRoom(size);
      await fs.rename(temporary, join(dir, path));
      stored.set(path, { size, used: Date.now() });
      counters.fetches += 1;
      logger.info({ event: 'cache-mirror-fetched', path, bytes: size, upstream }, 'fetched from upstream cache');
      return;
    }
    throw new NotFound(`${path}: ${problems.join('; ')}`);
  }

  function ensure(path: string, maxBytes: number | null): Promise<void> {
    if (stored.has(path)) {
      counters.hits += 1;
      stored.get(path)!.used = Date.now();
      return Promise.resolve();
    }
    let pending = downloads.get(path);
    if (!pending) {
      pending = fetchOnce(path, maxBytes).finally(() => downloads.delete(path));
      downloads.set(path, pending);
    }
    return pending;
  }

  return {
    stats: () => ({ files: stored.size, bytes: total(), ...counters }),
    handle(req, res, fullPath) {
      const path = fullPath.slice(CACHE_PREFIX.length);
      const file = FILES.find((f) => f.pattern.test(path));
      if ((req.method !== 'GET' && req.method !== 'HEAD') || !file) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      ensure(path, file.maxBytes)
        .then(() => {
          const size = stored.get(path)?.size;
          // Evicted again between its download and now (a full mirror under many requests).
          if (size === undefined) throw new NotFound(`${path}: evicted before it could be served; retry`);
          serveStored(req, res, path, file.contentType, size);
        })
        .catch((error: Error) => {
          if (!(error instanceof NotFound))
            logger.warn({ event: 'cache-mirror-failed', path, reason: error.message }, 'cache mirror fetch failed');
          if (res.headersSent || res.destroyed) return void res.destroy();
          res
            .writeHead(error instanceof NotFound ? 404 : 502, { 'content-type': 'text/plain' })
            .end(`${error.message}\n`);
        });
    },
  };

  function serveStored(
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
    contentType: string,
    size: number,
  ): void {
    // Agents resume a NAR cut off mid-transfer with `Range: bytes=N-` (satellite links).
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      res
        .writeHead(416, { 'content-type': 'text/plain', 'content-range': `bytes */${size}` })
        .end('range not satisfiable\n');
      return;
    }
    if (range) {
      res.writeHead(206, {
        'content-type': contentType,
        'content-length': String(range.end - range.start + 1),
        'content-range': `bytes ${range.start}-${range.end}/${size}`,
        'accept-ranges': 'bytes',
      });
    } else {
      res.writeHead(200, {
        'content-type': contentType,
        'content-length': String(size),
        'accept-ranges': 'bytes',
      });
    }
    if (req.method === 'HEAD') return void res.end();
    const stream = createReadStream(join(dir, path), range ? { start: range.start, end: range.end } : {});
    stream.on('error', () => res.destroy());
    stream.pipe(res);
  }
}

// One `bytes=START-[END]` or `bytes=-SUFFIX` range (all an agent sends); anything else is served
// whole, as RFC 9110 allows.
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | null {
  const match = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return null;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}
