import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ENROLLMENT_DOC, POLICY_DOC, TIMESTAMP_DOC } from '../../../../shared/documents/fleet.js';
import {
  desiredDocName,
  documentGarbageCollects,
  parseDocName,
  statusDocName,
} from '../../../../shared/documents/names.js';
import { rolloutDocName } from '../../../../shared/rollout/document.js';

// Document names carry who may write a document (a host's desired or status document): every
// host's names parse back to that host and role, and no other string parses to a name it is not.

const hostId = fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,62}$/);

test("a host's document names parse back to the host and the role", () => {
  fc.assert(
    fc.property(hostId, (host) => {
      assert.equal(parseDocName(desiredDocName(host)), { host, role: 'desired' });
      assert.equal(parseDocName(statusDocName(host)), { host, role: 'status' });
    }),
    { numRuns: 2000, seed: 51 },
  );
});

test('any other string is no document name, or exactly the name it parses to', () => {
  const names = fc.oneof(
    fc.string({ maxLength: 90 }),
    fc
      .tuple(fc.string({ maxLength: 70 }), fc.constantFrom('desired', 'status', 'Status', 'desired/'))
      .map(([host, role]) => `hosts/${host}/${role}`),
  );
  fc.assert(
    fc.property(names, (name) => {
      const parsed = parseDocName(name);
      if (parsed === null) return;
      const again = parsed.role === 'desired' ? desiredDocName(parsed.host) : statusDocName(parsed.host);
      assert.is(again, name);
    }),
    { numRuns: 5000, seed: 52 },
  );
  for (const bad of [
    'hosts/../desired',
    'hosts/H1/status',
    'hosts/h1/status/x',
    `hosts/${'a'.repeat(64)}/status`,
    'hosts//desired',
  ])
    assert.is(parseDocName(bad), null, bad);
});

// Issue 11: a server's copy of a document another writer may write and delete in without end
// holds what is present, not every entry ever written; the update log keeps the history.
test('host and fleet documents collect garbage; rollout documents keep their history', () => {
  for (const name of [desiredDocName('h1'), statusDocName('h1'), POLICY_DOC, TIMESTAMP_DOC, ENROLLMENT_DOC])
    assert.ok(documentGarbageCollects(name), name);
  assert.not.ok(documentGarbageCollects(rolloutDocName('r1')));
});

test.run();
