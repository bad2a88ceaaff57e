import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openTunnelStore } from '../../../agent/tunnel-store.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The agent's memory of spent `outpost ssh` nonces and of its sessions, across restarts.
const dir = temporaryDirectory('tunnel-store');
const nonce = (n: number): string => n.toString(16).padStart(32, '0');
let clock = Date.parse('2026-12-02T12:00:00.000Z');
const now = (): number => clock;

test.after(() => removeDirectory(dir));

test('a nonce is spent once, also for a store opened again (an agent restart), until it may be forgotten', async () => {
  const store = await openTunnelStore(dir, now);
  assert.equal(await store.claim(nonce(1), clock + 60_000), { ok: true });
  const again = await store.claim(nonce(1), clock + 60_000);
  assert.is(again.ok, false);
  const reopened = await openTunnelStore(dir, now);
  assert.is((await reopened.claim(nonce(1), clock + 60_000)).ok, false, 'the restarted agent refuses it too');
  clock += 61_000;
  assert.equal(
    await reopened.claim(nonce(1), clock + 60_000),
    { ok: true },
    'past its keep-until the request is dead anyway',
  );
});

test('two copies arriving together: only one is accepted', async () => {
  const store = await openTunnelStore(dir, now);
  const [a, b] = await Promise.all([store.claim(nonce(2), clock + 60_000), store.claim(nonce(2), clock + 60_000)]);
  assert.equal([a.ok, b.ok].sort(), [false, true]);
});

test('sessions open when the agent stopped are closed at the restart; a damaged file refuses to open', async () => {
  const store = await openTunnelStore(dir, now);
  const key = `${'A'.repeat(43)}=`;
  await store.update({
    nonce: nonce(3),
    admin: 'alice',
    key,
    openedAt: new Date(clock).toISOString(),
    closedAt: null,
    bytesIn: 1,
    bytesOut: 2,
  });
  const reopened = await openTunnelStore(dir, now);
  const session = reopened.sessions().find((s) => s.nonce === nonce(3));
  assert.is(session?.closeReason, 'the agent stopped');
  assert.ok(session?.closedAt);
  await fs.writeFile(join(dir, 'ssh-tunnels.json'), '{"nonces": 5}');
  try {
    await openTunnelStore(dir, now);
    assert.unreachable('a damaged store must not open (it could let a replay through)');
  } catch (error) {
    assert.match((error as Error).message, /ssh-tunnels.json is invalid .* move it away/);
  }
});

test.run();
