import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { ENTRY_LIMITS, parseEntry } from '../shared/documents/entries.js';
import {
  ACTION_RESULTS_KEY,
  actionResultsArray,
  bundleDigest,
  COLLECT_BUNDLES_MAP,
  CURRENT_KEY,
  collectBundlesMap,
  RESULTS_KEY,
  resultsArray,
  STATUS_MAP,
} from '../shared/documents/status.js';
import { writeFileDurably } from '../shared/node/durable-file.js';
import { collectBundleSchema, signedActionResultSchema } from '../shared/schemas/action.js';
import { signedResultSchema, signedStatusSchema } from '../shared/schemas/report.js';

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

// Saves after remote changes, coalesced: however fast a peer sends updates, at most one save runs
// and one more is queued (a queue per update would grow without bound under a flood).
export function createStatusSaver(stateDir: string, doc: () => Y.Doc): { request(): void; idle(): Promise<void> } {
  let running: Promise<void> | null = null;
  let again = false;
  const run = (): Promise<void> => {
    running = (async () => {
      do {
        again = false;
        await saveStatusDocument(stateDir, doc()).catch(() => undefined);
      } while (again);
      running = null;
    })();
    return running;
  };
  return {
    request() {
      if (running) again = true;
      else void run();
    },
    idle: () => running ?? Promise.resolve(),
  };
}

function ownResult(raw: unknown, hostKey: string): boolean {
  const parsed = parseEntry(raw, signedResultSchema, ENTRY_LIMITS.result);
  return (
    parsed.ok &&
    parsed.value.signature.publicKey === hostKey &&
    verifyPayloadSignature('result', parsed.value.result, parsed.value.signature)
  );
}

function ownActionResult(raw: unknown, hostKey: string): boolean {
  const parsed = parseEntry(raw, signedActionResultSchema, ENTRY_LIMITS.actionResult);
  return (
    parsed.ok &&
    parsed.value.signature.publicKey === hostKey &&
    verifyPayloadSignature('action-result', parsed.value.result, parsed.value.signature)
  );
}

function ownStatus(raw: unknown, hostKey: string): boolean {
  const parsed = parseEntry(raw, signedStatusSchema, ENTRY_LIMITS.status);
  return (
    parsed.ok &&
    parsed.value.signature.publicKey === hostKey &&
    verifyPayloadSignature('status', parsed.value.status, parsed.value.signature)
  );
}

// Deletes from the status document everything this host's key did not sign — results, the
// current status, any other key or top-level type a peer wrote — so a flood into the document
// costs memory only until it is noticed: the document collects garbage, so deleted content is
// freed. Used when peers sent more than the document's budget; it changes nothing the host signed.
export function purgeForeignEntries(doc: Y.Doc, hostKey: string): number {
  let removed = 0;
  doc.transact((transaction) => {
    const results = resultsArray(doc);
    const values = results.toArray();
    for (let i = values.length - 1; i >= 0; i--) {
      if (ownResult(values[i], hostKey)) continue;
      results.delete(i, 1);
      removed += 1;
    }
    const actionResults = actionResultsArray(doc);
    const answers = actionResults.toArray();
    for (let i = answers.length - 1; i >= 0; i--) {
      if (ownActionResult(answers[i], hostKey)) continue;
      actionResults.delete(i, 1);
      removed += 1;
    }
    // Bundles stay only where an answer of this host names them by their digest.
    const named = new Map<string, string>();
    for (const raw of actionResults.toArray()) {
      const parsed = parseEntry(raw, signedActionResultSchema, ENTRY_LIMITS.actionResult);
      if (parsed.ok && parsed.value.result.bundleDigest)
        named.set(parsed.value.result.id, parsed.value.result.bundleDigest);
    }
    const bundles = collectBundlesMap(doc);
    for (const key of [...bundles.keys()]) {
      const parsed = parseEntry(bundles.get(key), collectBundleSchema, ENTRY_LIMITS.collectBundle);
      if (parsed.ok && named.get(key) === bundleDigest(parsed.value)) continue;
      bundles.delete(key);
      removed += 1;
    }
    const status = doc.getMap<unknown>(STATUS_MAP);
    for (const key of [...status.keys()]) {
      if (key === CURRENT_KEY && ownStatus(status.get(key), hostKey)) continue;
      status.delete(key);
      removed += 1;
    }
    // Top-level types the agent never uses: delete their items through Yjs' own item API.
    for (const [name, type] of doc.share) {
      if (name === RESULTS_KEY || name === STATUS_MAP || name === ACTION_RESULTS_KEY || name === COLLECT_BUNDLES_MAP)
        continue;
      for (const item of type._map.values())
        if (!item.deleted) {
          item.delete(transaction);
          removed += 1;
        }
      for (let item = type._start; item !== null; item = item.right)
        if (!item.deleted) {
          removed += item.length;
          item.delete(transaction);
        }
    }
  }, 'local');
  return removed;
}
