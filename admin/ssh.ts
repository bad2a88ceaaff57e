import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { closeQuietly, pipeStreamAndSocket } from '../shared/node/tunnel-stream.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { signTunnelRequest, TUNNEL_MAX_LIFETIME_MS, type TunnelRequest } from '../shared/tunnel/request.js';
import {
  parseControlMessage,
  TUNNEL_MAX_MESSAGE,
  TUNNEL_OPEN_PATH,
  tunnelVerdictSchema,
} from '../shared/tunnel/wire.js';
import { adminKeyOption, coordinatorOption, reachingCoordinator, type WithCoordinator } from './common-options.js';

// `outpost ssh HOST`: one SSH byte stream to HOST's local sshd on stdin/stdout, through the
// coordinator (and relays) and the agent's own outbound link, for ssh's ProxyCommand. It signs one
// fresh request per run (docs/access.md, `outpost ssh`); the host's agent decides on it. SSH then
// checks the host key and the user key end to end, as over any other transport.
export const sshCommand = defineCommand({
  name: 'ssh',
  summary: "a byte stream to a host's sshd through its agent's outbound link, for ssh's ProxyCommand",
  usage: 'outpost ssh HOST --coordinator URL --key FILE [--expires DURATION]',
  options: z.object({
    host: option(hostIdSchema, {
      placeholder: 'ID',
      description: 'the host (also the first argument: outpost ssh HOST)',
    }),
    coordinator: coordinatorOption,
    key: adminKeyOption('your admin key file; a role of yours must grant ssh on the host'),
    expires: option(
      durationSchema.prefault('60s').refine((seconds) => seconds > 0 && seconds * 1000 <= TUNNEL_MAX_LIFETIME_MS, {
        message: `expected at most ${TUNNEL_MAX_LIFETIME_MS / 1000} s`,
      }),
      {
        placeholder: 'DURATION',
        description: 'the signed request is good for this long (it opens one session, once)',
      },
    ),
    timeout: option(durationSchema.prefault('30s'), {
      placeholder: 'DURATION',
      description: "how long to wait for the host's answer",
      common: 'timeout',
    }),
  }),
  examples: [
    "ssh -o ProxyCommand='outpost ssh %h --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key' root@clinic-1",
    'Host *.outpost\n      ProxyCommand outpost ssh %n --coordinator wss://fleet.example.org   (~/.ssh/config; %n is the name as typed)',
    'rsync -e "ssh -o ProxyCommand=\'outpost ssh %h\'" -a ./site/ root@clinic-1:/srv/site/',
  ],
});

type SshOptions = WithCoordinator<z.output<typeof sshCommand.options>>;

export function runSshCommand(argv: string[]): Promise<number> {
  // `outpost ssh HOST …`: the first argument, when not a flag, is the host.
  const args = argv[0] !== undefined && !argv[0].startsWith('-') ? ['--host', argv[0], ...argv.slice(1)] : argv;
  return runCommand(sshCommand, args, reachingCoordinator(runSsh));
}

async function runSsh(options: SshOptions): Promise<number> {
  const key = await readKeyFile(options.key);
  const now = Date.now();
  const request: TunnelRequest = {
    kind: 'ssh-tunnel',
    host: options.host,
    nonce: randomBytes(16).toString('hex'),
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + options.expires * 1000).toISOString(),
  };
  const signed = signTunnelRequest(request, key);
  const url = `${options.coordinator.replace(/\/+$/, '')}/${TUNNEL_OPEN_PATH}?host=${options.host}`;
  const ws = new WebSocket(url, { handshakeTimeout: options.timeout * 1000, maxPayload: TUNNEL_MAX_MESSAGE });
  return new Promise<number>((resolve) => {
    let stage: 'connecting' | 'waiting' | 'open' | 'done' = 'connecting';
    const finish = (code: number, message?: string): void => {
      if (stage === 'done') return;
      stage = 'done';
      clearTimeout(answerTimer);
      if (message) process.stderr.write(`outpost ssh: ${message}\n`);
      resolve(code);
    };
    const answerTimer = setTimeout(() => {
      finish(1, `no answer from ${options.host} within ${options.timeout} s (through ${options.coordinator})`);
      ws.terminate();
    }, options.timeout * 1000);
    ws.on('unexpected-response', (_req, res) =>
      finish(
        1,
        `${options.coordinator} refused the tunnel (HTTP ${res.statusCode}); is it an outpost coordinator or relay?`,
      ),
    );
    ws.on('error', (error) => finish(1, `cannot reach ${options.coordinator}: ${error.message}`));
    ws.once('open', () => {
      stage = 'waiting';
      ws.send(JSON.stringify(signed));
    });
    ws.once('message', (data, isBinary) => {
      const verdict = isBinary ? null : parseControlMessage(tunnelVerdictSchema, data.toString());
      if (!verdict) {
        ws.terminate();
        return finish(1, 'the server answered something other than a tunnel verdict');
      }
      if (!verdict.ok) {
        closeQuietly(ws, 1000, 'refused');
        return finish(1, `${options.host} refused the tunnel: ${verdict.reason}`);
      }
      clearTimeout(answerTimer);
      stage = 'open';
      pipeStreamAndSocket(process.stdin, process.stdout, ws, {
        activity: () => undefined,
        onError: (problem) => {
          ws.terminate();
          finish(1, `protocol error from the server: ${problem}`);
        },
      });
      // ssh closed its end: the session is over.
      process.stdin.once('end', () => closeQuietly(ws, 1000, 'the ssh client closed'));
    });
    ws.on('close', (code, reason) => {
      if (stage === 'open') return finish(0);
      finish(1, `the server closed the connection before the host answered (${code} ${reason.toString()})`);
    });
  });
}
