import type * as Y from 'yjs';
import { type DocumentHost, withPinned } from './hosted-documents.js';

// What to do to a fleet document, decided from its current state: an outcome for the caller and,
// when something must change, the change.
export interface FleetChange<T> {
  outcome: T;
  write?: (doc: Y.Doc) => void;
}

// The coordinator's own writes into a fleet document (entries it has verified). `decide` runs in
// the document's queue on the live document (read it, never change it), so what it read is still
// true when the write lands. The write is made on the live document in that same turn and travels
// the path of any peer's update — logged with fsync, then broadcast (host.acceptChange); nothing
// is written when nothing is to be. (It was made on a copy of the whole document: for a 1,000-host
// rollout's document, a copy per batch of evidence.)
export async function decideFleetWrite<T>(
  host: DocumentHost,
  name: string,
  principal: string,
  decide: (live: Y.Doc) => FleetChange<T>,
): Promise<T> {
  return withPinned(host, name, (document) =>
    document.run(async () => {
      const { outcome, write } = decide(document.doc);
      if (write) await host.acceptChange(document, write, principal);
      return outcome;
    }),
  );
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
