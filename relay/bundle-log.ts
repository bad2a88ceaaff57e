import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { openUpdateLog, type UpdateLog } from '../coordinator/update-log.js';
import {
  type BundleOutcome,
  type DataDirApply,
  type DataDirRead,
  holds,
  MISSING_DEPENDENCIES_REASON,
  missingDependencies,
} from '../shared/bundle/apply.js';
import { historyKeepingDoc, itemsFirst } from '../shared/documents/history-forward.js';
import { documentGarbageCollects } from '../shared/documents/names.js';

// An update that adds nothing (no items, no deletions): Yjs' empty update.
const holdsNothing = (update: Uint8Array): boolean => update.length === 2 && update[0] === 0 && update[1] === 0;

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
      if (missingDependencies(doc, update)) {
        outcomes.set(name, { kind: 'refused', reason: MISSING_DEPENDENCIES_REASON });
        continue;
      }
      // Items first, then deletions: a result the update carries deleted keeps its content in the
      // log (the document collects garbage; shared/documents/history-forward.ts).
      for (const part of itemsFirst(update)) {
        const before = Y.encodeStateVector(doc);
        Y.applyUpdate(doc, part);
        // What the log gains is what the document gained (the whole update when it added items).
        const gained = Y.encodeStateAsUpdate(doc, before);
        if (!holdsNothing(gained)) await log.append(name, principal, gained);
      }
      outcomes.set(name, { kind: 'changed' });
    }
  } finally {
    await log.close();
  }
  return outcomes;
};

// Each document of `log` replayed from its entries, one at a time (never all in memory): its
// state vector, and its whole state when `wanted` selects it. A running relay's log may be read
// like this while it appends (LevelDB iterators see a consistent snapshot), and every update the
// relay took is in its log before it is applied, so this is all it holds.
export async function* logDocumentStates(
  log: UpdateLog,
  wanted: (name: string) => boolean,
): AsyncGenerator<{ name: string; vector: Uint8Array; state: Uint8Array | null }> {
  for (const name of (await log.documents()).sort()) {
    // A wanted document keeps the content of its deleted results: the agents delete theirs once
    // this server holds them, and HQ's log gets them only from here.
    const doc = wanted(name)
      ? historyKeepingDoc(documentGarbageCollects(name))
      : new Y.Doc({ gc: documentGarbageCollects(name) });
    for await (const entry of log.iterate(name)) Y.applyUpdate(doc, entry.update);
    yield { name, vector: Y.encodeStateVector(doc), state: wanted(name) ? Y.encodeStateAsUpdate(doc) : null };
    doc.destroy();
  }
}

// The store paths a relay's cache mirror (DIR/nix-cache) holds whole, narinfo and NAR: what HQ
// may leave out of the next bundle. Files are renamed into place whole, so a running mirror can be
// listed too.
export async function mirroredStorePaths(cacheDir: string): Promise<string[]> {
  const names = await fs.readdir(cacheDir).catch(() => [] as string[]);
  const paths: string[] = [];
  for (const name of names) {
    if (!/^[0-9a-df-np-sv-z]{32}\.narinfo$/.test(name)) continue;
    const text = await fs.readFile(join(cacheDir, name), 'utf8').catch(() => '');
    const storePath = /^StorePath: (\S+)$/m.exec(text)?.[1];
    const url = /^URL: (\S+)$/m.exec(text)?.[1];
    if (!storePath || !url || !(await fs.stat(join(cacheDir, url)).catch(() => null))) continue;
    paths.push(storePath);
  }
  return paths.sort();
}

// A stopped relay's documents for a return bundle: the whole state of each document `wanted`
// selects, the state vector of every document the log holds, and the store paths its cache mirror
// holds (what the site has, for HQ's next bundle).
export const readDataDir: DataDirRead = async (dataDir, wanted) => {
  const log = await openDataDirLog(dataDir);
  const states = new Map<string, Uint8Array>();
  const vectors = new Map<string, Uint8Array>();
  try {
    for await (const { name, vector, state } of logDocumentStates(log, wanted)) {
      vectors.set(name, vector);
      if (state) states.set(name, state);
    }
  } finally {
    await log.close();
  }
  return { states, vectors, storePaths: await mirroredStorePaths(join(dataDir, 'nix-cache')) };
};
