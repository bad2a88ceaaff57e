import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { type BundleCacheFile, CACHE_PATH_PATTERN, MAX_CACHE_INFO_BYTES } from '../shared/bundle/format.js';
import { toHex } from '../shared/crypto/encoding.js';
import { decodeNixBase32 } from '../shared/nix/base32.js';
import {
  NARINFO_MAX_BYTES,
  type Narinfo,
  narHashToNix32,
  narinfoUrl,
  parseNarinfo,
  verifyNarinfo,
} from '../shared/nix/narinfo.js';
import type { EntrySource } from '../shared/node/bundle-file.js';

// The binary-cache part of a bundle (issue 16): at HQ, the narinfos and NARs of every closure
// the site's newest intents name, read from the org's cache and checked against its pinned keys;
// at the site, the same checks again (whoever held the stick could have rewritten the bundle and
// its hashes) before anything is put where agents fetch from. Agents and Nix check once more.

const STORE_DIR = '/nix/store';
const MAX_CLOSURE_PATHS = 50_000;

export function hashPartOf(storePath: string): string {
  return storePath.slice(STORE_DIR.length + 1, STORE_DIR.length + 1 + 32);
}

// A narinfo's NAR file in hex SHA-256 and exact size, from its hash lines: for an uncompressed
// NAR the signed NarHash/NarSize; for a compressed one FileHash/FileSize, which the cache key
// does not sign (Nix checks NarHash after decompressing, on the host).
export function narFileDigest(info: Narinfo): { sha256: string; bytes: number } | { error: string } {
  const hex = (hash: string): string => toHex(decodeNixBase32(narHashToNix32(hash).slice('sha256:'.length), 32));
  if (info.compression === 'none') {
    if (info.fileSize !== undefined && info.fileSize !== info.narSize)
      return { error: `declares FileSize ${info.fileSize} for an uncompressed NAR of NarSize ${info.narSize}` };
    return { sha256: hex(info.narHash), bytes: info.narSize };
  }
  if (!info.fileHash || info.fileSize === undefined)
    return {
      error: `is compressed (${info.compression}) but declares no FileHash/FileSize; re-publish it with 'nix copy --to <cache>'`,
    };
  return { sha256: hex(info.fileHash), bytes: info.fileSize };
}

async function fetchBounded(url: string, maxBytes: number, timeoutMs: number): Promise<Uint8Array | null> {
  const response = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) }).catch((error: Error) => {
    const cause = (error as { cause?: Error }).cause;
    throw new Error(`cannot fetch ${url}: ${cause?.message ?? error.message}`);
  });
  if (response.status === 404 || response.status === 403 || response.status === 410) {
    await response.body?.cancel();
    return null;
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new Error(`${url} answered HTTP ${response.status}`);
  }
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > maxBytes) throw new Error(`${url} is over ${maxBytes} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export interface PlannedCacheFile {
  entry: BundleCacheFile;
  source: EntrySource;
}

export interface CachePlan {
  files: PlannedCacheFile[];
  // Store paths in the closures, and those left out because the site has them.
  paths: number;
  leftOut: number;
  narBytes: number;
}

const sha256Hex = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

// Walks every closure through its narinfos' References, checks each narinfo against the pinned
// keys (a bundle HQ cannot vouch for would only be refused at the site, weeks later), and plans
// the files: nix-cache-info, then per path its NAR and narinfo. NARs are streamed when written.
export async function planCacheFiles(
  cache: string,
  closures: readonly string[],
  trustedKeys: readonly string[],
  siteHas: ReadonlySet<string>,
  timeoutMs: number,
): Promise<CachePlan> {
  const base = cache.replace(/\/+$/, '');
  const files: PlannedCacheFile[] = [];
  const info = await fetchBounded(`${base}/nix-cache-info`, MAX_CACHE_INFO_BYTES, timeoutMs);
  if (info) files.push({ entry: cacheEntry('nix-cache-info', info), source: { bytes: info } });
  const seen = new Set<string>(closures);
  let frontier = [...closures];
  let paths = 0;
  let leftOut = 0;
  let narBytes = 0;
  const nars = new Set<string>();
  while (frontier.length > 0) {
    const next: string[] = [];
    for (const storePath of frontier) {
      const url = narinfoUrl(cache, storePath);
      const text = await fetchBounded(url, NARINFO_MAX_BYTES, timeoutMs);
      if (!text)
        throw new Error(
          `the cache ${cache} does not have ${storePath} (HTTP 404 for ${url}); publish the closure with 'nix copy --to <cache>' first`,
        );
      const narinfo = parseNarinfo(new TextDecoder().decode(text), url);
      if (narinfo.storePath !== storePath)
        throw new Error(`${url} describes ${narinfo.storePath}, not ${storePath}: the cache is corrupt or hostile`);
      const verdict = verifyNarinfo(narinfo, trustedKeys);
      if (!verdict.ok)
        throw new Error(
          `${storePath} in ${cache}: ${verdict.reason}; agents would refuse it. Sign the closure with the cache key (nix store sign) or give the right --trusted-cache-key`,
        );
      paths += 1;
      for (const name of narinfo.references) {
        const reference = `${STORE_DIR}/${name}`;
        if (seen.has(reference)) continue;
        seen.add(reference);
        if (seen.size > MAX_CLOSURE_PATHS)
          throw new Error(`the closures have more than ${MAX_CLOSURE_PATHS} paths; bundle fewer hosts at a time`);
        next.push(reference);
      }
      if (siteHas.has(storePath)) {
        leftOut += 1;
        continue;
      }
      if (!CACHE_PATH_PATTERN.test(narinfo.url) || !narinfo.url.startsWith('nar/'))
        throw new Error(
          `${url} names its NAR ${JSON.stringify(narinfo.url)}, not nar/<hash>.nar[.<compression>] as Nix lays out a binary cache`,
        );
      const digest = narFileDigest(narinfo);
      if ('error' in digest) throw new Error(`${url} ${digest.error}`);
      // Paths with equal contents share one NAR file (named by its hash): carried once.
      if (!nars.has(narinfo.url)) {
        nars.add(narinfo.url);
        narBytes += digest.bytes;
        const narUrl = `${base}/${narinfo.url}`;
        files.push({
          entry: { type: 'cache', path: narinfo.url, sha256: digest.sha256, bytes: digest.bytes },
          source: { stream: () => openNarStream(narUrl, timeoutMs) },
        });
      }
      files.push({ entry: cacheEntry(`${hashPartOf(storePath)}.narinfo`, text), source: { bytes: text } });
    }
    frontier = next;
  }
  return { files, paths, leftOut, narBytes };
}

function cacheEntry(path: string, bytes: Uint8Array): BundleCacheFile {
  return { type: 'cache', path, sha256: sha256Hex(bytes), bytes: bytes.length };
}

async function openNarStream(url: string, timeoutMs: number): Promise<AsyncIterable<Uint8Array>> {
  // A NAR may be large: the deadline is per read of the body's start, the stream itself is
  // bounded by the size its narinfo declares (writeBundleFile).
  const response = await fetch(url, { signal: AbortSignal.timeout(Math.max(timeoutMs, 3_600_000)) });
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new Error(`${url} answered HTTP ${response.status}`);
  }
  return response.body as AsyncIterable<Uint8Array>;
}

// SHA-256 of a file on disk, streamed.
export async function fileSha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

// Whether `dir` already holds exactly this file (same size and SHA-256).
export async function cacheHolds(dir: string, entry: BundleCacheFile): Promise<boolean> {
  const stat = await fs.stat(join(dir, entry.path)).catch(() => null);
  if (!stat?.isFile() || stat.size !== entry.bytes) return false;
  return (await fileSha256(join(dir, entry.path))) === entry.sha256;
}

export type CacheCheck = { ok: true; paths: string[] } | { ok: false; reason: string };

// The checks `bundle apply` makes before any cache file is put in place, from the position of
// whoever held the stick (who can rewrite every hash in the manifest): every narinfo parses, is
// filed under its own store path's hash (a swapped narinfo is refused), is signed by a pinned
// cache key; its NAR is in the bundle (or already at the site) with the size and SHA-256 the
// narinfo gives; and no NAR is carried that no narinfo names.
export async function checkCacheFiles(
  entries: readonly BundleCacheFile[],
  narinfoTexts: ReadonlyMap<string, Uint8Array>,
  trustedKeys: readonly string[],
  targetDir: string,
): Promise<CacheCheck> {
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const named = new Set<string>();
  const paths: string[] = [];
  for (const entry of entries) {
    if (!entry.path.endsWith('.narinfo')) continue;
    const where = `bundle file ${entry.path}`;
    let info: Narinfo;
    try {
      info = parseNarinfo(new TextDecoder('utf-8', { fatal: true }).decode(narinfoTexts.get(entry.path)), where);
    } catch (error) {
      return { ok: false, reason: (error as Error).message };
    }
    if (`${hashPartOf(info.storePath)}.narinfo` !== entry.path)
      return {
        ok: false,
        reason: `${entry.path} describes ${info.storePath}, another store path: the narinfo was swapped`,
      };
    const verdict = verifyNarinfo(info, trustedKeys);
    if (!verdict.ok) return { ok: false, reason: `${entry.path} (${info.storePath}): ${verdict.reason}` };
    const digest = narFileDigest(info);
    if ('error' in digest) return { ok: false, reason: `${entry.path} ${digest.error}` };
    const nar = byPath.get(info.url);
    named.add(info.url);
    paths.push(info.storePath);
    if (!nar) {
      if (CACHE_PATH_PATTERN.test(info.url) && (await fs.stat(join(targetDir, info.url)).catch(() => null))) continue;
      return {
        ok: false,
        reason: `${entry.path} (${info.storePath}) names the NAR ${info.url}, which neither the bundle nor ${targetDir} holds`,
      };
    }
    if (nar.bytes !== digest.bytes || nar.sha256 !== digest.sha256)
      return {
        ok: false,
        reason: `the NAR ${info.url} is ${nar.bytes} bytes with SHA-256 ${nar.sha256}, but the signed narinfo of ${info.storePath} says ${digest.bytes} bytes with SHA-256 ${digest.sha256}: the NAR was altered`,
      };
  }
  for (const entry of entries)
    if (entry.path.startsWith('nar/') && !named.has(entry.path))
      return { ok: false, reason: `the bundle carries ${entry.path}, which no narinfo in it names` };
  return { ok: true, paths };
}
