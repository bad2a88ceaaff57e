import { randomBytes } from 'node:crypto';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { signTunnelRequest } from '../../shared/tunnel/request.js';
import { removeDirectory, runCli, temporaryDirectory, waitFor } from '../harness/processes.js';
import { openRawTunnel, type SshFleet, startSshFleet } from '../harness/ssh-fleet.js';

// Issue 17, `outpost ssh`, from the attackers' real positions against real agents behind a real
// relay: an admin of the policy without `ssh` (carol) through the real CLI; a stranger's key; and
// whoever holds a copy of a signed request (a coordinator or relay on its path, a log) replaying it,
// using it after it expired, or delivering h2's request to h1 (the hub routes by the name in the
// URL; only the agent compares it with the signed host). Each is refused with its reason, and the
// counting proxy in front of sshd shows that no TCP connection reached sshd.
const dir = temporaryDirectory('attack-ssh-tunnel');
let fleet: SshFleet;

function request(key: SigningKey, host: string, issuedOffsetMs = 0, lifetimeMs = 60_000) {
  const issued = Date.now() + issuedOffsetMs;
  return signTunnelRequest(
    {
      kind: 'ssh-tunnel',
      host,
      nonce: randomBytes(16).toString('hex'),
      issuedAt: new Date(issued).toISOString(),
      expiresAt: new Date(issued + lifetimeMs).toISOString(),
    },
    key,
  );
}

const connections = (): { h1: number; h2: number } => ({
  h1: fleet.hosts.h1.proxy.connections(),
  h2: fleet.hosts.h2.proxy.connections(),
});

test.before(async () => {
  fleet = await startSshFleet(dir);
});

test.after(async () => {
  await fleet?.close();
  removeDirectory(dir);
});

test('carol, an admin with read but no ssh on h1, is refused by h1 with the reason, before any byte reaches sshd', async () => {
  const before = connections();
  const sshdLogBefore = fleet.sshd.logs().length;
  const result = await runCli(['ssh', 'h1', '--coordinator', fleet.coordinator.url, '--key', fleet.keyFiles.carol]);
  assert.is(result.code, 1);
  assert.match(result.stderr, /outpost ssh: h1 refused the tunnel: admin carol has no role granting ssh on h1/);
  assert.is(result.stdout, '', 'not one byte of SSH came back');
  assert.equal(connections(), before, 'no TCP connection reached sshd');
  assert.not.match(fleet.sshd.logs().slice(sshdLogBefore), /Connection from/);
  assert.match(fleet.hosts.h1.agent.logs(), /"event":"tunnel-refused".*admin carol has no role granting ssh/);
});

test("a stranger's key is turned away by the hub: no agent sees it, nothing reaches sshd", async () => {
  const before = connections();
  const result = await runCli(['ssh', 'h1', '--coordinator', fleet.coordinator.url, '--key', fleet.keyFiles.stranger]);
  assert.is(result.code, 1);
  assert.match(result.stderr, /refused the tunnel: the request is not signed by an admin of the policy/);
  assert.equal(connections(), before);
  assert.not.match(fleet.hosts.h1.agent.logs(), new RegExp(fleet.stranger.publicKey.replace(/[+/]/g, '.')));
});

test('the same signed request twice: the first opens a session to sshd, the copy is refused (nonce spent), also after an agent restart', async () => {
  const signed = request(fleet.org.alice, 'h1');
  const before = connections();
  const first = await openRawTunnel(fleet.coordinator.url, 'h1', signed);
  assert.ok(first.ok, first.reason);
  assert.match(first.firstBytes, /^SSH-2\.0-OpenSSH/, "sshd's banner came through the tunnel");
  assert.is(connections().h1, before.h1 + 1);
  const replay = await openRawTunnel(fleet.coordinator.url, 'h1', signed);
  assert.is(replay.ok, false);
  assert.match(replay.reason, /this request was used before \(its nonce is spent\)/, replay.reason);
  assert.is(connections().h1, before.h1 + 1, 'the replay reached no sshd');
  // The nonce is on disk: a restarted agent refuses the copy too.
  await fleet.restartAgent('h1');
  const afterRestart = await openRawTunnel(fleet.coordinator.url, 'h1', signed);
  assert.is(afterRestart.ok, false);
  assert.match(afterRestart.reason, /nonce is spent/, afterRestart.reason);
  assert.is(connections().h1, before.h1 + 1, 'the replay after the restart reached no sshd');
});

test('an expired request (issued 10 min ago, expired 6 min ago) is refused; nothing reaches sshd', async () => {
  const before = connections();
  const expired = request(fleet.org.alice, 'h1', -10 * 60_000, 4 * 60_000);
  const result = await openRawTunnel(fleet.coordinator.url, 'h1', expired);
  assert.is(result.ok, false);
  assert.match(result.reason, /the request expired at .*run outpost ssh again for a fresh one/, result.reason);
  assert.equal(connections(), before);
});

test('a request for h2 delivered to h1 is refused by h1 (it names another host); nothing reaches either sshd', async () => {
  const before = connections();
  // alice may ssh to h2: only the host check stands between this request and h1's sshd.
  const forH2 = request(fleet.org.alice, 'h2');
  const misrouted = await openRawTunnel(fleet.coordinator.url, 'h1', forH2);
  assert.is(misrouted.ok, false);
  assert.match(misrouted.reason, /the request names host h2, but this is h1/, misrouted.reason);
  assert.equal(connections(), before);
  // The same request where it belongs works (and proves the request itself was good).
  const proper = await openRawTunnel(fleet.coordinator.url, 'h2', forH2);
  assert.ok(proper.ok, proper.reason);
  await waitFor('the connection to count', () => connections().h2 === before.h2 + 1, 5_000);
  assert.is(connections().h1, before.h1);
});

test.run();
