import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { OUTPOST_CLI, waitFor } from './processes.js';

// A real OpenSSH server (Debian openssh-server) on a loopback port for the `outpost ssh` tests:
// its own host key, one throwaway user key in its authorized keys, public key login only, logging
// every connection to stderr (-D -e). And a counting TCP proxy in front of it: the agent's
// --ssh-port points at the proxy, so a test can say how many connections reached sshd at all.
export interface TestSshd {
  port: number;
  dir: string;
  userKey: string;
  // "HOST ssh-ed25519 AAAA…" lines for a known_hosts file: ssh checks the real host key.
  knownHostsLine(host: string): string;
  logs(): string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

// `authorizedKeysFile` replaces the test's own file, e.g. with an agent's DIR/%u (docs/access.md).
export async function startSshd(dir: string, options: { authorizedKeysFile?: string } = {}): Promise<TestSshd> {
  mkdirSync(dir, { recursive: true });
  const hostKey = join(dir, 'ssh_host_ed25519_key');
  const userKey = join(dir, 'user_ed25519');
  for (const file of [hostKey, userKey])
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'outpost-test', '-f', file]);
  const authorized = join(dir, 'authorized_keys');
  writeFileSync(authorized, readFileSync(`${userKey}.pub`), { mode: 0o600 });
  // Privilege separation needs its empty directory (the Debian package makes it at boot).
  mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const config = join(dir, 'sshd_config');
  const writeConfig = (port: number) =>
    writeFileSync(
      config,
      [
        'ListenAddress 127.0.0.1',
        `Port ${port}`,
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${options.authorizedKeysFile ?? authorized}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PermitRootLogin prohibit-password',
        'StrictModes no',
        'UsePAM no',
        'LogLevel VERBOSE',
        // scp speaks SFTP since OpenSSH 9.
        'Subsystem sftp /usr/lib/openssh/sftp-server',
        '',
      ].join('\n'),
    );
  // The port is picked free and released before sshd binds it, so another test's listener may take
  // it meanwhile: sshd then exits at once, and the start is tried again on another port.
  const launch = async (): Promise<{ port: number; child: ChildProcess; logs: () => string }> => {
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      writeConfig(port);
      const child = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
      let text = '';
      child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
      const listening = () => text.includes('Server listening') && child.exitCode === null;
      await waitFor('sshd to listen or exit', () => listening() || child.exitCode !== null, 10_000);
      if (listening()) return { port, child, logs: () => text };
      if (attempt === 3) throw new Error(`sshd did not start on 127.0.0.1:${port} (the third port tried):\n${text}`);
    }
  };
  const { port, child, logs } = await launch();
  const publicHostKey = readFileSync(`${hostKey}.pub`, 'utf8').trim().split(' ').slice(0, 2).join(' ');
  return {
    port,
    dir,
    userKey,
    knownHostsLine: (host) => `${host} ${publicHostKey}`,
    logs,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

// Counts the TCP connections made to it and passes each on to `targetPort`.
export interface CountingProxy {
  port: number;
  connections(): number;
  close(): Promise<void>;
}

export async function startCountingProxy(targetPort: number): Promise<CountingProxy> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    count += 1;
    const upstream = connect({ host: '127.0.0.1', port: targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as { port: number }).port,
    connections: () => count,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

// The argv of `ssh … USER@HOST COMMAND` through `outpost ssh` as ProxyCommand, checking the host
// key against knownHosts (StrictHostKeyChecking=yes) and logging in with the throwaway user key.
export function sshThroughOutpost(options: {
  sshd: TestSshd;
  knownHosts: string;
  coordinator: string;
  keyFile: string;
  host: string;
  command: string[];
}): string[] {
  const proxy = `${process.execPath} ${OUTPOST_CLI} ssh %h --coordinator ${options.coordinator} --key ${options.keyFile}`;
  return [
    '-i',
    options.sshd.userKey,
    '-o',
    'IdentitiesOnly=yes',
    '-o',
    'BatchMode=yes',
    '-o',
    'StrictHostKeyChecking=yes',
    '-o',
    `UserKnownHostsFile=${options.knownHosts}`,
    '-o',
    'LogLevel=ERROR',
    '-o',
    `ProxyCommand=${proxy}`,
    `root@${options.host}`,
    ...options.command,
  ];
}
