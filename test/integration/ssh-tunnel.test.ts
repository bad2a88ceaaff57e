import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import { removeDirectory, runCli, temporaryDirectory, waitFor } from '../harness/processes.js';
import { type SshFleet, startSshFleet } from '../harness/ssh-fleet.js';
import { sshThroughOutpost } from '../harness/sshd.js';

// Issue 17, `outpost ssh`: real ssh and scp, with `outpost ssh` as ProxyCommand, through a real
// coordinator and relay to the agent's outbound tunnel link and on to a real sshd on loopback.
// SSH checks the host key (StrictHostKeyChecking=yes against the sshd's real key) and the user key
// end to end; the session shows in h1's signed status.
const dir = temporaryDirectory('ssh-tunnel');
let fleet: SshFleet;

function run(
  command: string,
  args: string[],
  input?: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(input ?? '');
  });
}

const ssh = (keyFile: string, host: string, command: string[]) =>
  run(
    'ssh',
    sshThroughOutpost({
      sshd: fleet.sshd,
      knownHosts: fleet.knownHosts,
      coordinator: fleet.coordinator.url,
      keyFile,
      host,
      command,
    }),
  );

async function hostView(host: string): Promise<HostView> {
  const result = await runCli([
    'status',
    '--coordinator',
    fleet.coordinator.url,
    '--key',
    fleet.keyFiles.alice,
    '--org-root',
    fleet.org.root.publicKey,
    '--json',
    '--host',
    host,
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]!;
}

test.before(async () => {
  fleet = await startSshFleet(dir);
});

test.after(async () => {
  await fleet?.close();
  removeDirectory(dir);
});

test('ssh through the coordinator and the relay runs a command on h1; the host key is checked end to end', async () => {
  const before = fleet.hosts.h1.proxy.connections();
  const result = await ssh(fleet.keyFiles.alice, 'h1', ['echo', 'hello']);
  assert.is(result.code, 0, result.stderr);
  assert.is(result.stdout, 'hello\n');
  assert.is(fleet.hosts.h1.proxy.connections(), before + 1, 'one TCP connection reached sshd');
  assert.match(fleet.sshd.logs(), /Accepted publickey for root from 127\.0\.0\.1/);
  assert.match(fleet.hosts.h1.agent.logs(), /"event":"tunnel-opened".*"admin":"alice"/);
});

test('a wrong host key in known_hosts makes ssh itself refuse (the tunnel carries SSH, it does not vouch for the host)', async () => {
  const wrong = join(dir, 'known_hosts_wrong');
  // h1's entry names another key: the real sshd's key then does not match.
  const other = join(dir, 'other_key');
  await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
  const otherKey = (await fs.readFile(`${other}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  await fs.writeFile(wrong, `h1 ${otherKey}\n`);
  const result = await run(
    'ssh',
    sshThroughOutpost({
      sshd: fleet.sshd,
      knownHosts: wrong,
      coordinator: fleet.coordinator.url,
      keyFile: fleet.keyFiles.alice,
      host: 'h1',
      command: ['echo', 'hello'],
    }),
  );
  assert.is.not(result.code, 0);
  assert.match(result.stderr, /HOST IDENTIFICATION HAS CHANGED|Host key verification failed/);
  assert.is(result.stdout, '');
});

test('scp copies a 3 MB file to h1 and back through the tunnel, byte for byte', async () => {
  const local = join(dir, 'payload.bin');
  const payload = Buffer.alloc(3 * 1024 * 1024);
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 2654435761) >>> 24;
  await fs.writeFile(local, payload);
  const remote = join(dir, 'remote-copy.bin');
  const back = join(dir, 'back.bin');
  const options = sshThroughOutpost({
    sshd: fleet.sshd,
    knownHosts: fleet.knownHosts,
    coordinator: fleet.coordinator.url,
    keyFile: fleet.keyFiles.alice,
    host: 'h1',
    command: [],
  }).slice(0, -1);
  const up = await run('scp', ['-q', ...options, local, `root@h1:${remote}`]);
  assert.is(up.code, 0, up.stderr);
  const down = await run('scp', ['-q', ...options, `root@h1:${remote}`, back]);
  assert.is(down.code, 0, down.stderr);
  assert.ok(Buffer.compare(await fs.readFile(back), payload) === 0, 'the copy came back unchanged');
});

test("h1's signed status lists the sessions (who, when opened and closed, bytes each way); outpost status and the audit timeline show them", async () => {
  const view = await waitFor(
    "h1's status to show closed sessions",
    async () => {
      const v = await hostView('h1');
      const sessions = v.sshSessions ?? [];
      return sessions.length >= 3 && sessions.every((s) => s.closedAt !== null) ? v : null;
    },
    30_000,
    500,
  );
  assert.ok(view.statusSignatureValid, "the status is signed by h1's enrolled key");
  const sessions = view.sshSessions ?? [];
  for (const session of sessions) {
    assert.is(session.admin, 'alice');
    assert.is(session.key, fleet.org.alice.publicKey);
    assert.ok(session.bytesIn > 0 && session.bytesOut > 0);
  }
  assert.ok(
    sessions.some((s) => s.bytesIn > 3 * 1024 * 1024),
    'the scp upload is counted',
  );
  const text = await runCli([
    'status',
    '--coordinator',
    fleet.coordinator.url,
    '--key',
    fleet.keyFiles.alice,
    '--host',
    'h1',
  ]);
  assert.match(text.stdout, /ssh: .*alice/);
  // The audit timeline replays every status version: each session's opening and closing is there.
  const audit = await runCli([
    'audit',
    'timeline',
    '--coordinator',
    fleet.coordinator.url,
    '--key',
    fleet.keyFiles.alice,
    '--org-root',
    fleet.org.root.publicKey,
    '--host',
    'h1',
  ]);
  assert.is(audit.code, 0, audit.stderr);
  assert.match(audit.stdout, /ssh session opened by alice \(request [0-9a-f]{8}…\)/);
  assert.match(audit.stdout, /ssh session of alice \(request [0-9a-f]{8}…\) .* to .*bytes in/);
});

test('the idle timeout closes a silent session (--ssh-idle-timeout)', async () => {
  await fleet.restartAgent('h1', ['--ssh-idle-timeout', '2']);
  const started = Date.now();
  // `sleep 30` sends nothing for 30 s: the agent ends the session after 2 s of silence.
  const result = await ssh(fleet.keyFiles.alice, 'h1', ['sleep', '30']);
  assert.is.not(result.code, 0);
  assert.ok(Date.now() - started < 20_000, `ended after ${Date.now() - started} ms, not after the 30 s sleep`);
  await waitFor(
    'the idle close in the agent log',
    () => /"event":"tunnel-closed".*idle for 2 s/.test(fleet.hosts.h1.agent.logs()),
    10_000,
  );
  await fleet.restartAgent('h1');
});

test.run();
