import * as Y from 'yjs';
import type { DocumentHost } from './hosted-documents.js';

// The coordinator's own writes into a fleet document (entries it has verified): made on a copy so
// they travel the same path as any peer's update — applied, logged with fsync, broadcast. `change`
// runs inside the document's queue, so what it reads is still true when its write lands; when it
// changes nothing, nothing is stored. Returns what `change` returned.
export async function writeFleetDocument<T>(
  host: DocumentHost,
  name: string,
  principal: string,
  change: (doc: Y.Doc) => T,
): Promise<T> {
  const document = await host.pin(name);
  return document.run(async () => {
    const copy = new Y.Doc({ gc: document.doc.gc });
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(document.doc));
    const before = Y.encodeStateVector(copy);
    const outcome = change(copy);
    // New items since `before`, plus the copy's whole delete set (deletions included).
    const update = Y.encodeStateAsUpdate(copy, before);
    copy.destroy();
    await host.acceptUpdate(document, update, principal, null);
    return outcome;
  });
}
