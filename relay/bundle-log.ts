import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { openUpdateLog } from '../coordinator/update-log.js';
import { type BundleOutcome, type DataDirApply, type DataDirRead, holds } from '../shared/bundle/apply.js';
import { documentGarbageCollects } from '../shared/documents/names.js';

// A stopped relay's (or coordinator's) update log: each update that adds something is appended
// as the server would append a write, so on start the server loads it like any logged update and
// walks the carried policy chain from its own pinned root. Its write checks do not run here: the
// updates are signed entries every reader verifies, and fleet documents are written this way
// because no client may write them over the sync protocol.
// A relay keeps its log in DIR/log (beside its cache mirror), a coordinator in DIR itself.
async function openDataDirLog(dataDir: string) {
  const relayLog = join(dataDir, 'log');
  for (const directory of [relayLog, dataDir])
    if (await fs.stat(join(directory, 'CURRENT')).catch(() => null)) return openUpdateLog(directory);
  throw new Error(
    `${dataDir} holds no update log (neither ${relayLog} nor ${dataDir} is one): give the --data-dir the relay or coordinator runs with`,
  );
}

export const applyToDataDir: DataDirApply = async (dataDir, updates, principal) => {
  const log = await openDataDirLog(dataDir);
  const outcomes = new Map<string, BundleOutcome>();
  try {
    for (const [name, update] of updates) {
      const doc = new Y.Doc({ gc: documentGarbageCollects(name) });
      for await (const entry of log.iterate(name)) Y.applyUpdate(doc, entry.update);
      if (update.length === 0 || holds(doc, update)) {
        outcomes.set(name, { kind: 'had' });
        continue;
      }
      const before = Y.encodeStateVector(doc);
      Y.applyUpdate(doc, update);
      // What the log gains is what the document gained (the whole update when it added items).
      await log.append(name, principal, Y.encodeStateAsUpdate(doc, before));
      outcomes.set(name, { kind: 'changed' });
    }
  } finally {
    await log.close();
  }
  return outcomes;
};

// A stopped relay's documents for a return bundle: the whole state of each document `wanted`
// selects, and the state vector of every document the log holds (what the site has, for HQ's
// next bundle).
export const readDataDir: DataDirRead = async (dataDir, wanted) => {
  const log = await openDataDirLog(dataDir);
  const states = new Map<string, Uint8Array>();
  const vectors = new Map<string, Uint8Array>();
  try {
    for (const name of (await log.documents()).sort()) {
      const doc = new Y.Doc({ gc: documentGarbageCollects(name) });
      for await (const entry of log.iterate(name)) Y.applyUpdate(doc, entry.update);
      vectors.set(name, Y.encodeStateVector(doc));
      if (wanted(name)) states.set(name, Y.encodeStateAsUpdate(doc));
    }
  } finally {
    await log.close();
  }
  return { states, vectors };
};
