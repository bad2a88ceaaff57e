import type * as Y from 'yjs';
import { canonicalJson } from '../../shared/crypto/canonical.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendResult, readCurrentStatus, readResults, writeCurrentStatus } from '../../shared/documents/status.js';
import type { Result, Status, StatusContent } from '../../shared/schemas/report.js';

// Appends a signed result unless one with this seq is already there (a crash between writing the
// result and saving the agent state must not produce two results for one attempt).
export function appendSignedResult(doc: Y.Doc, result: Result, key: SigningKey): boolean {
  const existing = readResults(doc).results.some(
    (r) => r.result.seq === result.seq && r.signature.publicKey === key.publicKey,
  );
  if (existing) return false;
  appendResult(doc, { result, signature: signPayload('result', result, key) });
  return true;
}

function contentOf(status: Status): StatusContent {
  const { seq: _seq, updatedAt: _updatedAt, ...content } = status;
  return content;
}

// Rewrites the one status value only when something other than its counter and time changed, so
// the status document does not grow with every loop of the agent.
export function publishStatus(doc: Y.Doc, content: StatusContent, nextSeq: number, key: SigningKey): Status | null {
  const current = readCurrentStatus(doc);
  if (
    current &&
    current.signature.publicKey === key.publicKey &&
    canonicalJson(contentOf(current.status)) === canonicalJson(content)
  )
    return null;
  const status: Status = {
    ...content,
    seq: Math.max(nextSeq, (current?.status.seq ?? 0) + 1),
    updatedAt: new Date().toISOString(),
  };
  writeCurrentStatus(doc, { status, signature: signPayload('status', status, key) });
  return status;
}
