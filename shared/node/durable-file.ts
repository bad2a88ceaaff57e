import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';

// Write to a temporary file, fsync it, rename over the target, fsync the directory: after a
// crash or power loss the file holds either the old or the new content, never a torn mix.
//
// Writes to one path happen one after the other, in call order: two writers of one file (a
// progress milestone and a phase change, two policy listeners) must not interleave — a shared
// temporary name would vanish under the second rename, and an older content could land last.
const writesInFlight = new Map<string, Promise<void>>();
let temporaryCounter = 0;

export function writeFileDurably(path: string, data: string | Uint8Array): Promise<void> {
  const previous = writesInFlight.get(path) ?? Promise.resolve();
  const write = previous.catch(() => undefined).then(() => writeNow(path, data));
  writesInFlight.set(path, write);
  void write
    .finally(() => {
      if (writesInFlight.get(path) === write) writesInFlight.delete(path);
    })
    .catch(() => undefined);
  return write;
}

async function writeNow(path: string, data: string | Uint8Array): Promise<void> {
  temporaryCounter += 1;
  const temporary = `${path}.tmp-${process.pid}-${temporaryCounter}`;
  const handle = await fs.open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(temporary, path);
  await syncDirectory(path);
}

// Makes a rename (or a new file) in the directory of `path` survive a power loss.
export async function syncDirectory(path: string): Promise<void> {
  const dir = await fs.open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
