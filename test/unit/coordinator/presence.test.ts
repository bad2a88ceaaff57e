import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { PresenceTable } from '../../../coordinator/presence.js';

// The own view (what a coordinator tells the other coordinators on a shared NATS log): its own
// awareness and its relays' summaries, never what other coordinators told it.

test('own changes cover local awareness and relay summaries, not other coordinators', () => {
  const table = new PresenceTable();
  const own: [string, boolean, number][] = [];
  table.onOwnChange((host, online, lastSeen) => own.push([host, online, lastSeen]));
  const relay = {};
  const peer = {};
  table.setLocal('a', true, 10);
  table.setRemote(relay, 'r', true, 20);
  table.setRemote(peer, 'p', true, 30, Infinity, true);
  assert.equal(own, [
    ['a', true, 10],
    ['r', true, 20],
  ]);
  assert.ok(table.get('p')?.online, 'a peer coordinator still counts for this one');
  assert.is(table.getOwn('p'), null);
  // Seen here too: the own view changes; gone here again: it changes back, though the peer still sees it.
  table.setLocal('p', true, 40);
  table.setLocal('p', false, 50);
  assert.equal(own.slice(2), [
    ['p', true, 40],
    ['p', false, 50],
  ]);
  assert.ok(table.get('p')?.online);
  // A relay's link ends: its hosts go offline in the own view; a peer stopping is not passed on.
  table.dropSource(relay, 60);
  table.dropSource(peer, 70);
  assert.equal(own.slice(4), [['r', false, 60]]);
  assert.equal(table.get('p'), { online: false, lastSeen: 70 });
  assert.equal(table.getOwn('r'), { online: false, lastSeen: 60 });
  assert.equal(table.getOwn('p'), { online: false, lastSeen: 50 });
});

test('an own change fires only when the own view flips', () => {
  const table = new PresenceTable();
  const own: boolean[] = [];
  table.onOwnChange((_host, online) => own.push(online));
  const relay = {};
  table.setLocal('h', true, 1);
  table.setRemote(relay, 'h', true, 2);
  table.setLocal('h', false, 3);
  table.setRemote(relay, 'h', false, 4);
  assert.equal(own, [true, false]);
});

test.run();
