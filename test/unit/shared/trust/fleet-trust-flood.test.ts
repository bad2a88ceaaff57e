import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC } from '../../../../shared/documents/fleet.js';
import { createMemoryLogger } from '../../../../shared/node/log.js';
import {
  type FollowedDocument,
  MAX_POLICY_DOCUMENT_BYTES,
  MAX_TIMESTAMP_DOCUMENT_BYTES,
  openFleetTrust,
} from '../../../../shared/trust/fleet-trust.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';
import { waitFor } from '../../../harness/processes.js';

// Threat 11 for the documents every reader follows: a peer flooding fleet/policy or
// fleet/timestamp makes the reader drop its copy and follow the document afresh, keeping what it
// walked; it never holds more than the limit.
const org = makeTestOrg();

const MEGABYTE = 'x'.repeat(2 ** 20);
function junk(n: number): Uint8Array {
  const doc = new Y.Doc();
  doc.getArray('policies').push([{ junk: MEGABYTE, n }]);
  return Y.encodeStateAsUpdate(doc);
}

test('the documented limits', () => {
  assert.is(MAX_POLICY_DOCUMENT_BYTES, 64 * 2 ** 20);
  assert.is(MAX_TIMESTAMP_DOCUMENT_BYTES, 2 ** 20);
});

test('a flooded policy or timestamp document is dropped and followed afresh; the walked chain stays', async () => {
  const memory = createMemoryLogger('reader');
  const opened: Record<string, Y.Doc[]> = { [POLICY_DOC]: [], [TIMESTAMP_DOC]: [] };
  const follow = (name: string): FollowedDocument => {
    const doc = new Y.Doc({ gc: name === TIMESTAMP_DOC });
    opened[name]!.push(doc);
    return { doc, close: () => doc.destroy() };
  };
  let saved = '';
  const store = {
    where: 'memory',
    load: async (): Promise<string | null> => null,
    async save(text: string): Promise<void> {
      saved = text;
    },
  };
  const trust = await openFleetTrust({
    orgRootKeys: [org.root.publicKey],
    store,
    follow,
    freezeAfterMs: 60_000,
    logger: memory.logger,
  });
  try {
    const first = opened[POLICY_DOC]![0]!;
    appendPolicy(first, signPolicy(basePolicy(org), org.root));
    appendPolicy(first, signPolicy(basePolicy(org, { version: 2 }), org.root));
    await waitFor('version 2', () => trust.chain().at(-1)?.version === 2, 5000);
    // One entry out of bounds is skipped and reported, once.
    let deep: unknown = 'bottom';
    for (let i = 0; i < 4200; i++) deep = { x: deep };
    first.getArray('policies').push([{ policy: deep, signatures: [] }]);
    await waitFor(
      'the malformed entry to be reported',
      () => memory.events.some((e) => e.event === 'policy-malformed'),
      5000,
    );
    assert.match(
      String(memory.events.find((e) => e.event === 'policy-malformed')?.reason),
      /nested deeper than 32 levels/,
    );
    // 65 MiB, one more than the documented limit (MAX_POLICY_DOCUMENT_BYTES), from one megabyte string.
    for (let sent = 0; sent < 65 * 2 ** 20; sent += 2 ** 20) Y.applyUpdate(first, junk(sent), 'peer');
    const stamps = opened[TIMESTAMP_DOC]![0]!;
    stamps.getMap('elsewhere').set('junk', 'x'.repeat(2 ** 20 + 1));
    await waitFor('both drops', () => memory.events.filter((e) => e.event === 'document-too-large').length === 2, 5000);
    assert.equal(
      memory.events.filter((e) => e.event === 'document-too-large').map((e) => e.document),
      [POLICY_DOC, TIMESTAMP_DOC],
    );
    assert.is(trust.chain().at(-1)?.version, 2, 'what was walked is kept');
    assert.match(saved, /"version":2/);
    await waitFor(
      'both documents followed afresh',
      () => opened[POLICY_DOC]!.length === 2 && opened[TIMESTAMP_DOC]!.length === 2,
      5000,
    );
  } finally {
    await trust.close();
  }
});

test.run();
