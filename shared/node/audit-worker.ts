import { parentPort } from 'node:worker_threads';
import { auditHistory } from '../audit/history.js';
import { useEd25519Verifier } from '../crypto/signatures.js';
import { unpackDocument, type WorkerAnswer, type WorkerTask } from './audit-workers.js';
import { nodeEd25519Verify } from './ed25519.js';

// One part of a split audit (audit-workers.ts): the fleet documents for context, a run of hosts.
parentPort?.once('message', (task: WorkerTask) => {
  let answer: WorkerAnswer;
  try {
    useEd25519Verifier(nodeEd25519Verify);
    const byDocument = new Map(task.documents.map((d) => [d.name, unpackDocument(d)]));
    const report = auditHistory(
      { documents: [...byDocument.keys()], entries: (name) => byDocument.get(name) ?? [] },
      {
        orgRootKeys: task.orgRootKeys,
        hosts: task.hosts,
        keptHeads: task.keptHeads,
        contextOnly: task.contextOnly,
        keepEvent: task.keepEvents ? () => true : () => false,
      },
    );
    answer = { ok: true, report };
  } catch (error) {
    answer = { ok: false, error: (error as Error).message };
  }
  parentPort?.postMessage(answer);
});
