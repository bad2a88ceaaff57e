import * as Y from 'yjs';

// What `outpost bundle apply` did to one document: the target already had everything (a second
// apply, an older bundle), took it, or refused it (its reason).
export type BundleOutcome = { kind: 'had' } | { kind: 'changed' } | { kind: 'refused'; reason: string };

// Applies a bundle's updates to a stopped server's data directory (relay/bundle-log.ts); handed
// to the admin command by the entry point, as admin/ imports no relay or coordinator code.
export type DataDirApply = (
  dataDir: string,
  updates: ReadonlyMap<string, Uint8Array>,
  principal: string,
) => Promise<Map<string, BundleOutcome>>;

// Reads a stopped server's data directory for a return bundle (relay/bundle-log.ts): the whole
// state of each document `wanted` selects, every document's state vector, and the store paths
// its cache mirror holds whole.
export type DataDirRead = (dataDir: string, wanted: (name: string) => boolean) => Promise<ReturnData>;

export interface ReturnData {
  states: Map<string, Uint8Array>;
  vectors: Map<string, Uint8Array>;
  storePaths: string[];
}

export interface DataDirAccess {
  apply: DataDirApply;
  read: DataDirRead;
}

// Whether `doc` already holds everything `update` carries (items and deletions).
export function holds(doc: Y.Doc, update: Uint8Array): boolean {
  try {
    return Y.snapshotContainsUpdate(Y.snapshot(doc), update);
  } catch {
    return false;
  }
}
