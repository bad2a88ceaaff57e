import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Narinfo } from '../../shared/nix/narinfo.js';
import { narFileBounds } from './nar-size.js';

// The agent downloads NAR files itself (byte-exact progress, hard caps, throughput rule, HTTP
// range resume) into a local file:// binary cache, the staging directory, and then lets Nix
// substitute from it with the pinned keys and require-sigs: Nix still checks every signature and
// NAR hash before registering a path. Files:
//   nix-cache-info
//   <hash>.narinfo          the cache's signed narinfo, URL rewritten to the local file
//   nar/<hash>.nar.part     bytes received so far (resumed with a Range request)
//   nar/<hash>.nar          complete, checked against NarHash (uncompressed) or FileHash
//                           (renamed from .part; re-checked if another process wrote it)
// The URL, FileHash and FileSize lines are not part of what the cache key signs, so rewriting URL
// changes nothing Nix verifies.

export function hashPart(storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

export interface StagedFiles {
  narinfo: string;
  nar: string;
  part: string;
}

export function stagedFiles(dir: string, storePath: string): StagedFiles {
  const hash = hashPart(storePath);
  const nar = join(dir, 'nar', `${hash}.nar`);
  return { narinfo: join(dir, `${hash}.narinfo`), nar, part: `${nar}.part` };
}

// Bytes the transfer of this path is expected to cost: what progress and the disk check count.
export function transferSize(info: Narinfo): number {
  const bounds = narFileBounds(info);
  return bounds.ok ? bounds.expectedBytes : info.narSize;
}

// The hard cap on what we accept for one NAR file, from its signed NarSize (see nar-size.ts); 0
// for a narinfo whose declared FileSize contradicts it (planDownload refuses those).
export function transferCap(info: Narinfo): number {
  const bounds = narFileBounds(info);
  return bounds.ok ? bounds.cap : 0;
}

export function renderNarinfo(info: Narinfo): string {
  const lines = [
    `StorePath: ${info.storePath}`,
    `URL: nar/${hashPart(info.storePath)}.nar`,
    `Compression: ${info.compression}`,
    ...(info.fileHash ? [`FileHash: ${info.fileHash}`] : []),
    ...(info.fileSize !== undefined ? [`FileSize: ${info.fileSize}`] : []),
    `NarHash: ${info.narHash}`,
    `NarSize: ${info.narSize}`,
    `References: ${info.references.join(' ')}`,
    ...(info.deriver ? [`Deriver: ${info.deriver}`] : []),
    ...info.sigs.map((sig) => `Sig: ${sig}`),
    ...(info.ca ? [`CA: ${info.ca}`] : []),
  ];
  return `${lines.join('\n')}\n`;
}

export async function prepareStaging(dir: string): Promise<void> {
  await fs.mkdir(join(dir, 'nar'), { recursive: true, mode: 0o700 });
  // Priority and WantMassQuery as Nix writes them for a file:// cache it creates itself.
  await fs.writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\nWantMassQuery: 0\nPriority: 30\n');
}

export async function writeStagedNarinfo(dir: string, info: Narinfo): Promise<void> {
  await fs.writeFile(stagedFiles(dir, info.storePath).narinfo, renderNarinfo(info));
}

async function fileSize(path: string): Promise<number | null> {
  try {
    return (await fs.stat(path)).size;
  } catch {
    return null;
  }
}

export async function stagedState(
  dir: string,
  storePath: string,
): Promise<{ complete: boolean; partialBytes: number }> {
  const files = stagedFiles(dir, storePath);
  if ((await fileSize(files.nar)) !== null) return { complete: true, partialBytes: 0 };
  return { complete: false, partialBytes: (await fileSize(files.part)) ?? 0 };
}

// Drops everything staged for paths outside `keep` (an older target's leftovers), so disk space
// goes to the closure being installed.
export async function pruneStaging(dir: string, keep: readonly string[]): Promise<void> {
  const hashes = new Set(keep.map(hashPart));
  const remove = async (folder: string): Promise<void> => {
    let names: string[];
    try {
      names = await fs.readdir(folder);
    } catch {
      return;
    }
    await Promise.all(
      names
        .filter((name) => /^[0-9a-z]{32}\.(narinfo|nar|nar\.part)$/.test(name) && !hashes.has(name.slice(0, 32)))
        .map((name) => fs.rm(join(folder, name), { force: true })),
    );
  };
  await remove(dir);
  await remove(join(dir, 'nar'));
}

export async function clearStaging(dir: string): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
}
