import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { OUTPOST_CLI, removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { startSshFleet } from '../harness/ssh-fleet.js';
import { sshThroughOutpost } from '../harness/sshd.js';

// `outpost ssh` as a ProxyCommand: what it costs against its peers in the same run.
// - time to first byte: spawning `outpost ssh h1` until sshd's banner arrives on its stdout, against
//   a bare `node -e ''` start (the floor any Node ProxyCommand pays) and a direct TCP connect;
// - a whole `ssh … true` through coordinator → relay → agent against ssh straight to sshd;
// - scp of 32 MB through the tunnel against scp straight to sshd.
// Run: npm run -s build && nice -n 10 node dist/test/bench/ssh-tunnel.js
const RUNS = 7;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function timeProcess(command: string, args: string[], untilStdout?: RegExp): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    let done = false;
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString('latin1');
      if (untilStdout && !done && untilStdout.test(out)) {
        done = true;
        resolve(performance.now() - started);
        child.kill('SIGTERM');
      }
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (done) return;
      if (code !== 0 && !untilStdout) return reject(new Error(`${command} exited ${code}`));
      if (untilStdout) return reject(new Error(`${command} ended before ${untilStdout}`));
      resolve(performance.now() - started);
    });
    if (!untilStdout) child.stdin.end();
  });
}

function tcpBanner(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('data', () => {
      resolve(performance.now() - started);
      socket.destroy();
    });
    socket.once('error', reject);
  });
}

async function series(what: string, run: () => Promise<number>): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < RUNS; i++) values.push(await run());
  const m = median(values);
  console.log(
    `${what.padEnd(48)} median ${m.toFixed(0).padStart(6)} ms  (${values.map((v) => v.toFixed(0)).join(' ')})`,
  );
  return m;
}

async function main(): Promise<void> {
  const dir = temporaryDirectory('bench-ssh-tunnel');
  const fleet = await startSshFleet(dir);
  try {
    const { sshd } = fleet;
    const direct = [
      '-i',
      sshd.userKey,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
    ];
    const tunnel = (command: string[]) =>
      sshThroughOutpost({
        sshd,
        knownHosts: fleet.knownHosts,
        coordinator: fleet.coordinator.url,
        keyFile: fleet.keyFiles.alice,
        host: 'h1',
        command,
      });
    const nodeStart = await series("node -e '' (process start, the floor)", () =>
      timeProcess(process.execPath, ['-e', '']),
    );
    const tcp = await series('TCP connect to sshd, banner', () => tcpBanner(sshd.port));
    const firstByte = await series('outpost ssh h1: spawn to banner (via relay)', () =>
      timeProcess(
        process.execPath,
        [OUTPOST_CLI, 'ssh', 'h1', '--coordinator', fleet.coordinator.url, '--key', fleet.keyFiles.alice],
        /^SSH-2\.0-/,
      ),
    );
    const sshDirect = await series('ssh … true, straight to sshd', () =>
      timeProcess('ssh', [...direct, '-p', String(sshd.port), 'root@127.0.0.1', 'true']),
    );
    const sshTunnel = await series('ssh … true, through outpost ssh', () => timeProcess('ssh', tunnel(['true'])));
    const payload = join(dir, 'payload.bin');
    await fs.writeFile(payload, Buffer.alloc(32 * 1024 * 1024, 1));
    const scpDirect = await series('scp 32 MB, straight to sshd', () =>
      timeProcess('scp', ['-q', ...direct, '-P', String(sshd.port), payload, `root@127.0.0.1:${join(dir, 'a.bin')}`]),
    );
    const scpTunnel = await series('scp 32 MB, through outpost ssh', () =>
      timeProcess('scp', ['-q', ...tunnel([]).slice(0, -1), payload, `root@h1:${join(dir, 'b.bin')}`]),
    );
    console.log('');
    console.log(
      `outpost ssh time to first byte: ${firstByte.toFixed(0)} ms = ${(firstByte / nodeStart).toFixed(1)} × a bare node start (${tcp.toFixed(1)} ms for TCP alone)`,
    );
    console.log(`ssh … true through the tunnel: ${(sshTunnel / sshDirect).toFixed(2)} × direct`);
    console.log(
      `scp 32 MB through the tunnel: ${(scpTunnel / scpDirect).toFixed(2)} × direct (${((32 / scpTunnel) * 1000).toFixed(1)} MB/s)`,
    );
  } finally {
    await fleet.close();
    removeDirectory(dir);
  }
}

main().then(
  () => process.exit(0),
  (error: Error) => {
    console.error(error);
    process.exit(1);
  },
);
