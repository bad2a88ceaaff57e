import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { publishStatus } from '../../../agent/pipeline/report.js';
import { purgeForeignEntries } from '../../../agent/status-store.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { signPayload } from '../../../shared/crypto/signatures.js';
import {
  appendResult,
  CURRENT_KEY,
  readOwnCurrentStatus,
  readOwnResults,
  readResults,
  resultsArray,
  STATUS_MAP,
} from '../../../shared/documents/status.js';
import type { Result, Status, StatusContent } from '../../../shared/schemas/report.js';

const host = generateSigningKey('h1');
const mallory = generateSigningKey('mallory');
const closure = `/nix/store/${'a'.repeat(32)}-nixos-system`;
const content: StatusContent = {
  kind: 'status',
  host: 'h1',
  phase: 'idle',
  applied: null,
  target: null,
  lastResultSeq: null,
  agentVersion: 'test',
};
const result = (seq: number): Result => ({
  kind: 'result',
  host: 'h1',
  seq,
  at: '2026-11-22T12:00:00.000Z',
  outcome: 'applied',
  generation: seq,
  closure,
  action: 'switch',
  intentDigest: 'a'.repeat(64),
  reason: '',
  outputTail: '',
});

test("publishStatus: another key's status with seq = MAX_SAFE_INTEGER is replaced, never counted", () => {
  const doc = new Y.Doc();
  const forged: Status = { ...content, seq: Number.MAX_SAFE_INTEGER, updatedAt: new Date().toISOString() };
  doc.getMap(STATUS_MAP).set(CURRENT_KEY, { status: forged, signature: signPayload('status', forged, mallory) });
  const written = publishStatus(doc, content, 3, host);
  assert.is(written?.seq, 3);
  assert.is(readOwnCurrentStatus(doc, host.publicKey)?.status.seq, 3);
  assert.is(publishStatus(doc, content, 4, host), null, 'unchanged content is not written again');
});

test('the status document readers skip entries nested too deep or too large, and report them by index', () => {
  const doc = new Y.Doc();
  let deep: unknown = 1;
  for (let i = 0; i < 4200; i++) deep = { x: deep };
  resultsArray(doc).push([
    { result: { ...result(1), extra: deep }, signature: signPayload('result', result(1), host) },
  ]);
  appendResult(doc, { result: result(2), signature: signPayload('result', result(2), host) });
  resultsArray(doc).push([{ junk: 'x'.repeat(100_000) }]);
  const read = readResults(doc);
  assert.equal(
    read.results.map((r) => r.result.seq),
    [2],
  );
  assert.equal(
    read.malformedEntries.map((m) => [m.index, m.error.replace(/(\.x)+/, '.x…')]),
    [
      [0, 'result.extra.x… is nested deeper than 32 levels'],
      [2, 'larger than 65536 bytes of JSON'],
    ],
  );
});

test('purgeForeignEntries deletes everything the host key did not sign and keeps what it did', () => {
  const doc = new Y.Doc({ gc: true });
  appendResult(doc, { result: result(1), signature: signPayload('result', result(1), host) });
  appendResult(doc, { result: result(9), signature: signPayload('result', result(9), mallory) });
  appendResult(doc, { result: result(2), signature: { publicKey: host.publicKey, signature: `${'A'.repeat(86)}==` } });
  appendResult(doc, { result: result(3), signature: signPayload('result', result(3), host) });
  resultsArray(doc).push([{ junk: 'x'.repeat(1000) }]);
  publishStatus(doc, content, 1, host);
  doc.getMap(STATUS_MAP).set('other', 'junk');
  doc.getArray('elsewhere').push(['junk', 'junk']);
  doc.getMap('another').set('k', 'v');
  const removed = purgeForeignEntries(doc, host.publicKey);
  assert.is(removed, 7);
  assert.equal(
    readOwnResults(doc, host.publicKey).map((r) => r.result.seq),
    [1, 3],
  );
  assert.is(resultsArray(doc).length, 2);
  assert.is(readOwnCurrentStatus(doc, host.publicKey)?.status.seq, 1);
  assert.equal([...doc.getMap(STATUS_MAP).keys()], [CURRENT_KEY]);
  assert.is(doc.getArray('elsewhere').length, 0);
  assert.is(doc.getMap('another').size, 0);
});

test.run();
