import type * as Y from 'yjs';
import { canonicalJson } from '../../shared/crypto/canonical.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendResult, readOwnCurrentStatus, readResults, writeCurrentStatus } from '../../shared/documents/status.js';
import type { Result, SignedResult, Status, StatusContent } from '../../shared/schemas/report.js';

// Appends a signed result unless one with this seq is already there (a crash between writing the
// result and saving the agent state must not produce two results for one attempt). Only results
// this key validly signed count: a copy under this key with a junk signature, placed by a peer,
// must not suppress the real one.
export function appendSignedResult(doc: Y.Doc, result: Result, key: SigningKey): boolean {
  return appendOwnResult(doc, { result, signature: signPayload('result', result, key) }, key.publicKey);
}

// The same for a result signed before (a reserved one, written again after a restart).
export function appendOwnResult(doc: Y.Doc, signed: SignedResult, hostKey: string): boolean {
  const existing = readResults(doc).results.some(
    (r) =>
      r.result.seq === signed.result.seq &&
      r.signature.publicKey === hostKey &&
      verifyPayloadSignature('result', r.result, r.signature),
  );
  if (existing) return false;
  appendResult(doc, signed);
  return true;
}

function contentOf(status: Status): StatusContent {
  const { seq: _seq, updatedAt: _updatedAt, ...content } = status;
  return content;
}

// Rewrites the one status value only when something other than its counter and time changed, so
// the status document does not grow with every loop of the agent. Only a current status this
// host's key signed counts: whatever another writer put there (a seq of MAX_SAFE_INTEGER, say) is
// simply replaced, never used to compute the next counter.
export function publishStatus(doc: Y.Doc, content: StatusContent, nextSeq: number, key: SigningKey): Status | null {
  const seq = nextStatusSeq(doc, content, nextSeq - 1, key.publicKey);
  return seq === null ? null : writeStatus(doc, content, seq, key);
}

// The number a status with `content` takes (after `counter` and this key's current status), or
// null when the current status already says it.
export function nextStatusSeq(doc: Y.Doc, content: StatusContent, counter: number, hostKey: string): number | null {
  const current = readOwnCurrentStatus(doc, hostKey);
  if (current && canonicalJson(contentOf(current.status)) === canonicalJson(content)) return null;
  return Math.max(counter, current?.status.seq ?? 0) + 1;
}

export function writeStatus(doc: Y.Doc, content: StatusContent, seq: number, key: SigningKey): Status {
  const status: Status = { ...content, seq, updatedAt: new Date().toISOString() };
  doc.transact(() => writeCurrentStatus(doc, { status, signature: signPayload('status', status, key) }), 'local');
  return status;
}
