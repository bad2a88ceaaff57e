import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';

// Write to a temporary file, fsync it, rename over the target, fsync the directory: after a
// crash or power loss the file holds either the old or the new content, never a torn mix.
export async function writeFileDurably(path: string, data: string | Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`;
  const handle = await fs.open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(temporary, path);
  const dir = await fs.open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}
