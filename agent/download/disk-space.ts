import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { formatBytes } from '../../shared/text/bytes.js';

// Checked before the first byte is fetched: a download that fills the disk halfway breaks more
// than the update (logs, databases) and wastes a satellite link's day.

export interface SpaceNeed {
  // Where the bytes will land (the directory may not exist yet; its nearest existing parent counts).
  path: string;
  bytes: number;
  what: string;
}

export interface Filesystem {
  device: number;
  freeBytes: number;
  path: string;
}

async function nearestExisting(path: string): Promise<string> {
  for (let current = path; ; current = dirname(current)) {
    try {
      await fs.stat(current);
      return current;
    } catch {
      if (dirname(current) === current) return current;
    }
  }
}

export async function filesystemOf(path: string): Promise<Filesystem> {
  const existing = await nearestExisting(path);
  const [stat, statfs] = await Promise.all([fs.stat(existing), fs.statfs(existing)]);
  // bavail: what an unprivileged writer may use; root's reserve is not ours to spend.
  return { device: stat.dev, freeBytes: statfs.bavail * statfs.bsize, path: existing };
}

// null when everything fits (keeping minFreeBytes free on each filesystem), else why not. Needs
// on the same filesystem add up.
export async function checkDiskSpace(needs: readonly SpaceNeed[], minFreeBytes: number): Promise<string | null> {
  const byDevice = new Map<number, { fs: Filesystem; bytes: number; whats: string[] }>();
  for (const need of needs) {
    const fsInfo = await filesystemOf(need.path);
    const entry = byDevice.get(fsInfo.device) ?? { fs: fsInfo, bytes: 0, whats: [] };
    entry.bytes += need.bytes;
    entry.whats.push(`${need.what} ${formatBytes(need.bytes)}`);
    byDevice.set(fsInfo.device, entry);
  }
  for (const { fs: fsInfo, bytes, whats } of byDevice.values()) {
    if (bytes + minFreeBytes > fsInfo.freeBytes) {
      return (
        `not enough disk space on the filesystem of ${fsInfo.path}: the closure needs ${formatBytes(bytes)} (${whats.join(' + ')}), ` +
        `${formatBytes(fsInfo.freeBytes)} is free and ${formatBytes(minFreeBytes)} must stay free (--min-free-space); ` +
        `free space (nix-collect-garbage) or deploy a smaller closure. Nothing was downloaded`
      );
    }
  }
  return null;
}
