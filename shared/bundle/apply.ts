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

// Whether `update` leaves something pending on top of `doc`: items whose origins, or deletions
// whose items, the document does not hold. A --since bundle (or one from a state file claiming more than the site holds) made for a
// site that lacks updates from before that time is like this; Yjs would keep it aside until the
// missing updates arrive, so the document would not show it. Such an update is refused with that
// reason instead of applied and never seen.
export function missingDependencies(doc: Y.Doc, update: Uint8Array): boolean {
  const scratch = new Y.Doc({ gc: false });
  try {
    Y.applyUpdate(scratch, Y.encodeStateAsUpdate(doc));
    const pending = (): boolean => scratch.store.pendingStructs !== null || scratch.store.pendingDs !== null;
    // A document already waiting for something cannot tell what this update adds to the wait.
    if (pending()) return false;
    Y.applyUpdate(scratch, update);
    return pending();
  } catch {
    return false;
  } finally {
    scratch.destroy();
  }
}

export const MISSING_DEPENDENCIES_REASON =
  "it builds on earlier updates this site does not have (the bundle was made with a --since later than the site last heard from HQ, or from a --since-state file claiming more than this site holds: another site's, or one from before the site's data was restored); nothing of it was applied: ask HQ for a bundle with an earlier --since, the last return bundle's --since-state, or neither";
