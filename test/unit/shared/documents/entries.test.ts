import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import { appendIntent, intentsArray, readIntentEntries } from '../../../../shared/documents/desired.js';
import {
  appendEnrollment,
  appendPolicy,
  readEnrollments,
  readPolicies,
  readPolicyEntries,
  readTimestamp,
  writeTimestamp,
} from '../../../../shared/documents/fleet.js';
import {
  appendResult,
  CURRENT_KEY,
  readCurrentStatus,
  readResults,
  resultsArray,
  STATUS_MAP,
  writeCurrentStatus,
} from '../../../../shared/documents/status.js';
import { NIX_BASE32_ALPHABET } from '../../../../shared/nix/base32.js';
import type { Intent, SignedIntent } from '../../../../shared/schemas/intent.js';
import type { Result, Status } from '../../../../shared/schemas/report.js';
import { intentDigest } from '../../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

// Signed entries travel inside Yjs documents: written by one peer, sent as a Yjs update, read by
// another. Every valid entry (with fields a newer version may add) arrives equal and still
// verifies under its signature; whatever else a writer of the document puts there is skipped and
// reported by the reader, never thrown.

const org = makeTestOrg();
const signers = [org.alice, org.bob, generateSigningKey('host-key')];

// Plain objects, as Yjs decodes them (fast-check's default records have no prototype).
function record<T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }): fc.Arbitrary<T> {
  return fc.record(model, { noNullPrototype: true }) as fc.Arbitrary<T>;
}
const hostId = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,62}$/);
const storePath = fc
  .tuple(
    fc.string({ unit: fc.constantFrom(...NIX_BASE32_ALPHABET), minLength: 32, maxLength: 32 }),
    fc.stringMatching(/^[A-Za-z0-9+\-._?=]{1,40}$/),
  )
  .map(([hash, name]) => `/nix/store/${hash}-${name}`);
const isoTime = fc
  .date({ min: new Date('2000-01-01T00:00:00Z'), max: new Date('2099-12-31T00:00:00Z'), noInvalidDate: true })
  .map((d) => d.toISOString());
const generation = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const seq = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
const text = (maxLength: number) => fc.string({ maxLength });
// Fields a newer version may add: kept (looseObject), so the signature still covers them.
const future = fc.dictionary(fc.stringMatching(/^future-[a-z]{1,8}$/), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 2 });

const intentArbitrary: fc.Arbitrary<Intent> = fc
  .record({
    kind: fc.constant('intent' as const),
    host: hostId,
    generation,
    closure: storePath,
    action: fc.constantFrom('switch' as const, 'boot' as const, 'test' as const),
    issuedAt: isoTime,
    expiresAt: isoTime,
    issuer: fc.string({ minLength: 1, maxLength: 128 }),
    policyVersion: fc.option(fc.integer({ min: 1, max: 1_000_000 }), { nil: undefined }),
  })
  .chain((intent) => future.map((extra) => ({ ...extra, ...intent })))
  .map((intent) => {
    const copy: Record<string, unknown> = { ...intent };
    if (copy.policyVersion === undefined) delete copy.policyVersion;
    return copy as Intent;
  });

const resultArbitrary: fc.Arbitrary<Result> = fc
  .record({
    kind: fc.constant('result' as const),
    host: hostId,
    seq,
    at: isoTime,
    outcome: fc.constantFrom('applied' as const, 'failed' as const, 'refused' as const, 'rolled-back' as const),
    generation,
    closure: storePath,
    action: fc.constantFrom('switch' as const, 'boot' as const, 'test' as const),
    intentDigest: fc.stringMatching(/^[0-9a-f]{64}$/),
    reason: text(300),
    outputTail: text(600),
  })
  .chain((result) => future.map((extra) => ({ ...extra, ...result })));

const generationRef = fc.option(record({ generation, closure: storePath }), { nil: null });
const statusArbitrary: fc.Arbitrary<Status> = record({
  kind: fc.constant('status' as const),
  host: hostId,
  phase: fc.constantFrom('idle' as const, 'downloading' as const, 'applied' as const, 'rolled-back' as const),
  applied: generationRef,
  target: generationRef,
  lastResultSeq: fc.option(seq, { nil: null }),
  agentVersion: text(64),
  seq,
  updatedAt: isoTime,
  trust: record({
    mode: fc.constantFrom('policy' as const, 'admin-keys' as const),
    policyVersion: fc.option(fc.integer({ min: 1, max: 1000 }), { nil: null }),
    frozen: fc.boolean(),
    lastTimestampAt: fc.option(isoTime, { nil: null }),
  }),
});

// What another peer holds after receiving the writer's document as one Yjs update.
function received(doc: Y.Doc): Y.Doc {
  const copy = new Y.Doc();
  Y.applyUpdate(copy, Y.encodeStateAsUpdate(doc));
  return copy;
}

test('signed intents arrive equal, with the same digest, and still verify', () => {
  fc.assert(
    fc.property(intentArbitrary, fc.subarray(signers, { minLength: 1 }), (intent, keys) => {
      const signed: SignedIntent = { intent, signatures: keys.map((k) => signPayload('intent', intent, k)) };
      const doc = new Y.Doc();
      appendIntent(doc, signed);
      const { entries, malformed } = readIntentEntries(received(doc));
      assert.equal(malformed, []);
      assert.equal(entries, [{ index: 0, signed }]);
      assert.is(intentDigest(entries[0]!.signed), intentDigest(signed));
      for (const signature of entries[0]!.signed.signatures)
        assert.ok(verifyPayloadSignature('intent', entries[0]!.signed.intent, signature));
    }),
    { numRuns: 50, seed: 71 },
  );
});

test('signed results and statuses arrive equal and still verify', () => {
  fc.assert(
    fc.property(fc.array(resultArbitrary, { minLength: 1, maxLength: 3 }), statusArbitrary, (results, status) => {
      const key = signers[2]!;
      const doc = new Y.Doc();
      const signedResults = results.map((result) => ({ result, signature: signPayload('result', result, key) }));
      for (const signed of signedResults) appendResult(doc, signed);
      const signedStatus = { status, signature: signPayload('status', status, key) };
      writeCurrentStatus(doc, signedStatus);
      const copy = received(doc);
      const read = readResults(copy);
      assert.equal(read.results, signedResults);
      assert.is(read.malformed, 0);
      for (const r of read.results) assert.ok(verifyPayloadSignature('result', r.result, r.signature));
      const current = readCurrentStatus(copy);
      assert.equal(current, signedStatus);
      assert.ok(verifyPayloadSignature('status', current!.status, current!.signature));
    }),
    { numRuns: 30, seed: 72 },
  );
});

test('policies, enrollments and timestamps arrive equal and still verify', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1_000_000 }), isoTime, hostId, seq, (version, at, host, counter) => {
      const policy = signPolicy(basePolicy(org, { version, issuedAt: at }), org.root);
      const enrollment = {
        kind: 'enrollment' as const,
        host,
        hostKey: signers[2]!.publicKey,
        approvedAt: at,
        policyVersion: version,
      };
      const signedEnrollment = { enrollment, signatures: [signPayload('enrollment', enrollment, org.alice)] };
      const timestamp = { kind: 'timestamp' as const, at, seq: counter, policyVersion: version };
      const signedTimestamp = { timestamp, signature: signPayload('timestamp', timestamp, org.timestamp) };
      const doc = new Y.Doc();
      appendPolicy(doc, policy);
      appendEnrollment(doc, signedEnrollment);
      writeTimestamp(doc, signedTimestamp);
      const copy = received(doc);
      assert.equal(readPolicies(copy), [policy]);
      assert.ok(verifyPayloadSignature('policy', readPolicies(copy)[0]!.policy, policy.signatures[0]!));
      assert.equal(readEnrollments(copy), [signedEnrollment]);
      assert.equal(readTimestamp(copy), signedTimestamp);
    }),
    { numRuns: 25, seed: 73 },
  );
});

// Entries a hostile writer of the document may store: any JSON, and near-misses of real entries.
const hostileEntry = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  record({ intent: fc.jsonValue({ maxDepth: 2 }), signatures: fc.jsonValue({ maxDepth: 2 }) }),
  record({ result: fc.jsonValue({ maxDepth: 2 }), signature: fc.jsonValue({ maxDepth: 2 }) }),
  record({ policy: fc.jsonValue({ maxDepth: 2 }), signatures: fc.jsonValue({ maxDepth: 2 }) }),
);

test('whatever else a writer stores is skipped and reported by index, never thrown', () => {
  fc.assert(
    fc.property(fc.array(hostileEntry, { maxLength: 8 }), hostileEntry, (entries, single) => {
      const doc = new Y.Doc();
      intentsArray(doc).push(entries);
      resultsArray(doc).push(entries);
      doc.getArray('policies').push(entries);
      doc.getMap(STATUS_MAP).set(CURRENT_KEY, single);
      doc.getMap('timestamp').set('current', single);
      const copy = received(doc);
      const intents = readIntentEntries(copy);
      assert.is(intents.entries.length + intents.malformed.length, entries.length);
      for (const m of intents.malformed) assert.ok(m.error.length > 0 && m.index < entries.length);
      const results = readResults(copy);
      assert.is(results.results.length + results.malformed, entries.length);
      const policies = readPolicyEntries(copy);
      assert.is(policies.entries.length + policies.malformed.length, entries.length);
      assert.is(readCurrentStatus(copy), null);
      assert.is(readTimestamp(copy), null);
    }),
    { numRuns: 800, seed: 74 },
  );
});

test.run();
