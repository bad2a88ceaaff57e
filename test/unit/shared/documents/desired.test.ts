import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { appendIntent, intentsArray, signedIntentsInUpdate } from '../../../../shared/documents/desired.js';
import type { Intent } from '../../../../shared/schemas/intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';

// Reading the signed intents an update carries without applying it (for checks done ahead on a
// tentative update): intents in the order the update has them, junk skipped, at most `limit`.

const admin = generateSigningKey('alice');
const now = Date.now();

function intent(host: string, generation: number): Intent {
  return {
    kind: 'intent',
    host,
    generation,
    closure: `/nix/store/${'a'.repeat(32)}-nixos-system`,
    action: 'switch',
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'test',
    policyVersion: 1,
  };
}

// What a writer's append sends: the update between the document's states before and after.
function appended(doc: Y.Doc, change: () => void): Uint8Array {
  const before = Y.encodeStateVector(doc);
  change();
  return Y.encodeStateAsUpdate(doc, before);
}

test("an append's update carries its signed intent; junk values are skipped", () => {
  const doc = new Y.Doc();
  const first = signIntent(intent('h1', 1), admin);
  const second = signIntent(intent('h1', 2), admin);
  appendIntent(doc, first);
  const update = appended(doc, () => {
    intentsArray(doc).push([{ not: 'an intent' }, 'text', 7]);
    appendIntent(doc, second);
  });
  assert.equal(signedIntentsInUpdate(update, 4), [second]);
  assert.equal(signedIntentsInUpdate(Y.encodeStateAsUpdate(doc), 4), [first, second]);
});

test('at most `limit` intents are read', () => {
  const doc = new Y.Doc();
  const update = appended(doc, () => {
    for (let generation = 1; generation <= 10; generation += 1)
      appendIntent(doc, signIntent(intent('h1', generation), admin));
  });
  assert.equal(
    signedIntentsInUpdate(update, 3).map((s) => s.intent.generation),
    [1, 2, 3],
  );
});

test('an update Yjs cannot decode throws (the caller skips the check ahead)', () => {
  assert.throws(() => signedIntentsInUpdate(Uint8Array.of(200, 1, 2), 4));
});

test.run();
