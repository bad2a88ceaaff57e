import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { writeFileDurably } from '../shared/node/durable-file.js';

// The agent's own copy of its status document, kept on disk: results written while the link is
// down survive an agent restart and merge into the coordinator's copy on the next sync.
export function statusDocFile(stateDir: string): string {
  return join(stateDir, 'status-document.bin');
}

export async function loadStatusDocument(stateDir: string): Promise<Y.Doc> {
  const doc = new Y.Doc({ gc: true });
  try {
    Y.applyUpdate(doc, new Uint8Array(await fs.readFile(statusDocFile(stateDir))), 'disk');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new Error(
        `cannot read ${statusDocFile(stateDir)}: ${(error as Error).message}; move it aside and the agent refills it from the coordinator`,
      );
    }
  }
  return doc;
}

export async function saveStatusDocument(stateDir: string, doc: Y.Doc): Promise<void> {
  await writeFileDurably(statusDocFile(stateDir), Y.encodeStateAsUpdate(doc));
}
