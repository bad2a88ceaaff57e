import * as Y from 'yjs';
import type { DocumentHost } from './hosted-documents.js';

// The coordinator's own writes into a fleet document (entries it has verified): made on a copy so
// they travel the same path as any peer's update — applied, logged with fsync, broadcast.
export async function writeFleetDocument(
  host: DocumentHost,
  name: string,
  principal: string,
  change: (doc: Y.Doc) => void,
): Promise<void> {
  const document = await host.pin(name);
  await document.run(async () => {
    const copy = new Y.Doc({ gc: document.doc.gc });
    Y.applyUpdate(copy, Y.encodeStateAsUpdate(document.doc));
    const before = Y.encodeStateVector(copy);
    change(copy);
    const update = Y.encodeStateAsUpdate(copy, before);
    copy.destroy();
    await host.acceptUpdate(document, update, principal, null);
  });
}
