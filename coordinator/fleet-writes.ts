import * as Y from 'yjs';
import type { DocumentHost } from './hosted-documents.js';

// What to do to a fleet document, decided from its current state: an outcome for the caller and,
// when something must change, the change.
export interface FleetChange<T> {
  outcome: T;
  write?: (doc: Y.Doc) => void;
}

// The coordinator's own writes into a fleet document (entries it has verified). `decide` runs in
// the document's queue on the live document (read it, never change it), so what it read is still
// true when the write lands. The write is made on a copy so it travels the same path as any peer's
// update — applied, logged with fsync, broadcast; nothing is copied when nothing is to be written.
export async function decideFleetWrite<T>(
  host: DocumentHost,
  name: string,
  principal: string,
  decide: (live: Y.Doc) => FleetChange<T>,
): Promise<T> {
  const document = await host.pin(name);
  return document.run(async () => {
    const { outcome, write } = decide(document.doc);
    if (!write) return outcome;
    const copy = new Y.Doc({ gc: document.doc.gc });
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(document.doc));
    const before = Y.encodeStateVector(copy);
    write(copy);
    // New items since `before`, plus the copy's whole delete set (deletions included).
    const update = Y.encodeStateAsUpdate(copy, before);
    copy.destroy();
    await host.acceptUpdate(document, update, principal, null);
    return outcome;
  });
}

// A write decided without reading the document first.
export function writeFleetDocument(
  host: DocumentHost,
  name: string,
  principal: string,
  change: (doc: Y.Doc) => void,
): Promise<void> {
  return decideFleetWrite(host, name, principal, () => ({ outcome: undefined, write: change }));
}
