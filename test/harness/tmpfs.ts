import { promises as fs } from 'node:fs';
import { runCommand } from './nix-fixtures.js';

// A small filesystem of its own (root only): lets a test give a device store a few MiB of disk.
export async function mountTmpfs(dir: string, bytes: number): Promise<() => Promise<void>> {
  await fs.mkdir(dir, { recursive: true });
  const mounted = await runCommand('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  if (mounted.code !== 0)
    throw new Error(`cannot mount a tmpfs on ${dir} (this test runs as root): ${mounted.stderr.trim()}`);
  return async () => {
    await runCommand('umount', ['-l', dir]);
  };
}
