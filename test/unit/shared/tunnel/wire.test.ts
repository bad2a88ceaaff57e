import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  hostsMessages,
  parseControlMessage,
  TUNNEL_CONTROL_MAX_BYTES,
  TUNNEL_HOSTS_BATCH,
  tunnelHostsSchema,
} from '../../../../shared/tunnel/wire.js';

// A relay's announcements of the hosts it reaches: a reset first, then changes, in batches that
// each fit a control message, so 10,000 hosts behind one relay still arrive.
const hosts = (n: number, prefix = 'host'): Set<string> =>
  new Set(Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(58, '0')}`));

test('a new link starts with a reset (even when empty); changes carry only what changed', () => {
  assert.equal(hostsMessages(null, new Set()), [{ type: 'hosts', reset: true, add: [], remove: [] }]);
  assert.equal(hostsMessages(new Set(['a', 'b']), new Set(['b', 'c'])), [
    { type: 'hosts', reset: false, add: ['c'], remove: ['a'] },
  ]);
  assert.equal(hostsMessages(new Set(['a']), new Set(['a'])), []);
});

test('10,000 hosts of 63 characters go out in batches, each under the control message bound, and add up to the set', () => {
  const all = hosts(10_000);
  const messages = hostsMessages(null, all);
  assert.is(messages.length, 10_000 / TUNNEL_HOSTS_BATCH);
  assert.ok(messages[0]!.reset);
  assert.ok(messages.slice(1).every((m) => !m.reset));
  const rebuilt = new Set<string>();
  for (const message of messages) {
    const text = JSON.stringify(message);
    assert.ok(text.length <= TUNNEL_CONTROL_MAX_BYTES, `${text.length} bytes`);
    const parsed = parseControlMessage(tunnelHostsSchema, text);
    for (const host of parsed!.add) rebuilt.add(host);
  }
  assert.equal(rebuilt, all);
});

test('oversized or malformed control messages parse as nothing', () => {
  assert.is(parseControlMessage(tunnelHostsSchema, 'x'.repeat(TUNNEL_CONTROL_MAX_BYTES + 1)), null);
  assert.is(parseControlMessage(tunnelHostsSchema, '{"type":"hosts"'), null);
  assert.is(parseControlMessage(tunnelHostsSchema, '{"type":"hosts","reset":true,"add":["../etc"],"remove":[]}'), null);
});

test.run();
