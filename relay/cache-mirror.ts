import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import type { Logger } from '../shared/log.js';
import { NARINFO_MAX_BYTES } from '../shared/nix/narinfo.js';
import { serveFile } from '../shared/node/serve-range.js';

// The relay as binary-cache mirror: GET /nix-cache/<file> answers from disk, fetching each file
// from the upstream cache once (concurrent requests for one file share that download) and never
// changing a byte. It holds no key and checks nothing: agents verify every narinfo signature
// against their pinned cache keys and Nix checks every NAR hash, so a corrupted or forged file
// is refused on the host exactly as if it came from the upstream cache.
export const CACHE_PREFIX = '/nix-cache';

// The files a binary cache has, each with its type and its own size bound (null: the mirror's).
export interface MirroredFile {
  pattern: RegExp;
  contentType: string;
  maxBytes: number | null;
}

const FILES: readonly MirroredFile[] = [
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
  // The HTTP client for upstream caches (unit tests pass a stand-in).
  fetch?: typeof fetch;
}

export interface CacheMirror {
  handle(req: IncomingMessage, res: ServerResponse, path: string): void;
  stats(): { files: number; bytes: number; fetchedBytes: number; fetches: number; hits: number };
}

// Everything the mirror knows, as one record the functions below take (the yjs style): unit tests
// build one over a temporary directory and a stand-in fetch (test/unit/relay/cache-mirror.test.ts).
export interface CacheMirrorState {
  readonly options: CacheMirrorOptions;
  // Size and last use of every stored file, for the size bound (least recently used goes first).
  readonly stored: Map<string, { size: number; used: number }>;
  // Downloads running now: concurrent requests for one file share one.
  readonly downloads: Map<string, Promise<void>>;
  readonly counters: { fetchedBytes: number; fetches: number; hits: number };
}

class NotFound extends Error {}

export function createCacheMirrorState(options: CacheMirrorOptions): CacheMirrorState {
  return { options, stored: new Map(), downloads: new Map(), counters: { fetchedBytes: 0, fetches: 0, hits: 0 } };
}

// The kind of cache file a path names (`/nix-cache-info`, `/<hash>.narinfo`, `/nar/…`), or undefined.
export function mirroredFile(path: string): MirroredFile | undefined {
  return FILES.find((f) => f.pattern.test(path));
}

// Takes stock of the files a previous run stored, and empties the temporary directory.
export async function scanMirrorDirectory(mirror: CacheMirrorState): Promise<void> {
  const { dir } = mirror.options;
  await fs.mkdir(join(dir, 'nar'), { recursive: true });
  await fs.mkdir(join(dir, 'tmp'), { recursive: true });
  for (const sub of ['', 'nar']) {
    for (const name of await fs.readdir(join(dir, sub))) {
      const path = `/${sub ? `${sub}/` : ''}${name}`;
      if (!mirroredFile(path)) continue;
      const stat = await fs.stat(join(dir, path));
      if (stat.isFile()) mirror.stored.set(path, { size: stat.size, used: stat.mtimeMs });
    }
  }
  await fs.rm(join(dir, 'tmp'), { recursive: true, force: true });
  await fs.mkdir(join(dir, 'tmp'), { recursive: true });
}

export function storedBytes(mirror: CacheMirrorState): number {
  return [...mirror.stored.values()].reduce((sum, f) => sum + f.size, 0);
}

// Deletes least recently used files until `bytes` more fit under the bound; files being
// downloaded are kept.
export async function makeRoom(mirror: CacheMirrorState, bytes: number): Promise<void> {
  let used = storedBytes(mirror);
  const byAge = [...mirror.stored.entries()].sort((a, b) => a[1].used - b[1].used);
  for (const [path, file] of byAge) {
    if (used + bytes <= mirror.options.maxBytes) return;
    if (mirror.downloads.has(path)) continue;
    mirror.stored.delete(path);
    used -= file.size;
    await fs.rm(join(mirror.options.dir, path), { force: true });
  }
}

// Downloads one file from the first upstream that has it, within its bound, into place.
export async function fetchFromUpstream(
  mirror: CacheMirrorState,
  path: string,
  maxBytes: number | null,
): Promise<void> {
  const { options, counters } = mirror;
  const get = options.fetch ?? fetch;
  const problems: string[] = [];
  for (const upstream of options.upstreams) {
    const response = await get(`${upstream.replace(/\/+$/, '')}${path}`, {
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
    const temporary = join(options.dir, 'tmp', `${randomBytes(8).toString('hex')}`);
    const handle = await fs.open(temporary, 'w');
    let size = 0;
    try {
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        size += chunk.length;
        counters.fetchedBytes += chunk.length;
        if (size > limit) throw new Error(`${path} grew past the mirror's limit of ${limit} bytes`);
        await handle.write(chunk);
      }
      if (Number.isFinite(declared) && declared !== size) throw new Error(`${path}: got ${size} of ${declared} bytes`);
      await handle.sync();
    } catch (error) {
      await handle.close();
      await fs.rm(temporary, { force: true });
      throw error;
    }
    await handle.close();
    await makeRoom(mirror, size);
    await fs.rename(temporary, join(options.dir, path));
    mirror.stored.set(path, { size, used: Date.now() });
    counters.fetches += 1;
    options.logger.info({ event: 'cache-mirror-fetched', path, bytes: size, upstream }, 'fetched from upstream cache');
    return;
  }
  throw new NotFound(`${path}: ${problems.join('; ')}`);
}

// The file is on disk once this resolves: a hit, or a download (shared with concurrent requests).
export function ensureStored(mirror: CacheMirrorState, path: string, maxBytes: number | null): Promise<void> {
  const file = mirror.stored.get(path);
  if (file) {
    mirror.counters.hits += 1;
    file.used = Date.now();
    return Promise.resolve();
  }
  let pending = mirror.downloads.get(path);
  if (!pending) {
    pending = fetchFromUpstream(mirror, path, maxBytes).finally(() => mirror.downloads.delete(path));
    mirror.downloads.set(path, pending);
  }
  return pending;
}

// GET or HEAD /nix-cache/<file>: from disk, fetched first if missing; 404 for what no upstream
// has (or no cache file), 502 for an upstream that failed.
export function handleCacheRequest(
  mirror: CacheMirrorState,
  req: IncomingMessage,
  res: ServerResponse,
  fullPath: string,
): void {
  const path = fullPath.slice(CACHE_PREFIX.length);
  const file = mirroredFile(path);
  if ((req.method !== 'GET' && req.method !== 'HEAD') || !file) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  ensureStored(mirror, path, file.maxBytes)
    .then(() => {
      const size = mirror.stored.get(path)?.size;
      // Evicted again between its download and now (a full mirror under many requests).
      if (size === undefined) throw new NotFound(`${path}: evicted before it could be served; retry`);
      serveFile(req, res, join(mirror.options.dir, path), file.contentType, size);
    })
    .catch((error: Error) => {
      if (!(error instanceof NotFound))
        mirror.options.logger.warn(
          { event: 'cache-mirror-failed', path, reason: error.message },
          'cache mirror fetch failed',
        );
      if (res.headersSent || res.destroyed) return void res.destroy();
      res.writeHead(error instanceof NotFound ? 404 : 502, { 'content-type': 'text/plain' }).end(`${error.message}\n`);
    });
}

export function cacheMirrorStats(mirror: CacheMirrorState): ReturnType<CacheMirror['stats']> {
  return { files: mirror.stored.size, bytes: storedBytes(mirror), ...mirror.counters };
}

export async function openCacheMirror(options: CacheMirrorOptions): Promise<CacheMirror> {
  const mirror = createCacheMirrorState(options);
  await scanMirrorDirectory(mirror);
  return {
    handle: (req, res, path) => handleCacheRequest(mirror, req, res, path),
    stats: () => cacheMirrorStats(mirror),
  };
}
