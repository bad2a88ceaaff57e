import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { holds, missingDependencies } from '../../../../shared/bundle/apply.js';

// `bundle apply` (shared/bundle/apply.ts): whether an update adds nothing (holds), and whether it
// builds on items the target lacks (missingDependencies: a --since later than the site's last news).

// HQ's document after generations 1, 2 and 3, each pushed by a new writer (each CLI run is a new
// Yjs client), as intents are: its whole state and state vector after each.
function hq(): { doc: Y.Doc; states: Uint8Array[]; vectors: Uint8Array[] } {
  const doc = new Y.Doc();
  const states: Uint8Array[] = [];
  const vectors: Uint8Array[] = [];
  for (const generation of [1, 2, 3]) {
    const writer = new Y.Doc();
    Y.applyUpdate(writer, Y.encodeStateAsUpdate(doc));
    writer.getArray('intents').push([{ generation }]);
    Y.applyUpdate(doc, Y.encodeStateAsUpdate(writer));
    states.push(Y.encodeStateAsUpdate(doc));
    vectors.push(Y.encodeStateVector(doc));
  }
  return { doc, states, vectors };
}

const siteWith = (state: Uint8Array): Y.Doc => {
  const site = new Y.Doc();
  Y.applyUpdate(site, state);
  return site;
};

test('a diff since what the site holds, or the whole state, integrates', () => {
  const { doc, states, vectors } = hq();
  const site = siteWith(states[0]!);
  assert.is(missingDependencies(site, Y.encodeStateAsUpdate(doc, vectors[0])), false);
  assert.is(missingDependencies(site, Y.encodeStateAsUpdate(doc)), false);
  Y.applyUpdate(site, Y.encodeStateAsUpdate(doc, vectors[0]));
  assert.equal(
    site
      .getArray('intents')
      .toJSON()
      .map((i: { generation: number }) => i.generation),
    [1, 2, 3],
  );
  assert.ok(holds(site, Y.encodeStateAsUpdate(doc)));
});

test('a diff since a state the site never reached builds on what it lacks', () => {
  const { doc, states, vectors } = hq();
  // The site has generation 1; the bundle carries only what came after generation 2.
  const site = siteWith(states[0]!);
  const tooLate = Y.encodeStateAsUpdate(doc, vectors[1]);
  assert.is(missingDependencies(site, tooLate), true);
  // The check leaves the target alone.
  assert.equal(Y.encodeStateVector(site), vectors[0]);
  assert.not.ok(holds(site, tooLate));
  // Applied anyway, Yjs keeps it aside: the site would not show generation 3.
  Y.applyUpdate(site, tooLate);
  assert.is(site.getArray('intents').length, 1);
});

test('a target already waiting for something is not judged', () => {
  const { doc, states, vectors } = hq();
  const site = siteWith(states[0]!);
  Y.applyUpdate(site, Y.encodeStateAsUpdate(doc, vectors[1]));
  assert.ok(site.store.pendingStructs);
  assert.is(missingDependencies(site, Y.encodeStateAsUpdate(doc, vectors[1])), false);
});

test.run();
