#!/usr/bin/env node
import { UsageError } from './flags.js';
import { runKeygenCommand } from '../admin/keygen.js';
import { runDeployCommand } from '../admin/deploy.js';
import { runStatusCommand } from '../admin/status.js';
import { runPolicyCommand } from '../admin/policy.js';
import { runEnrollCommand } from '../admin/enroll.js';
import { runCoordinatorCommand } from '../../coordinator/cli.js';
import { runAgentCommand } from '../../agent/cli.js';

const commands: Record<string, { run: (argv: string[]) => Promise<number>; summary: string }> = {
  keygen: { run: runKeygenCommand, summary: 'create an admin or host key' },
  coordinator: { run: runCoordinatorCommand, summary: 'run the coordinator (sync server + update log)' },
  agent: { run: runAgentCommand, summary: 'run the agent on a host' },
  deploy: { run: runDeployCommand, summary: 'sign and submit an intent for a host' },
  status: { run: runStatusCommand, summary: 'show every host: desired, applied, phase, online, last result' },
  relay: { run: async (argv) => (await import('../../coordinator/relay-cli.js')).runRelayCommand(argv), summary: "run a relay at a site (serves its agents, syncs with the upstream when it can, mirrors the cache)" },
  policy: { run: runPolicyCommand, summary: 'write, sign, verify and publish the signed fleet policy' },
  enroll: { run: runEnrollCommand, summary: 'enroll hosts: request, token, list, approve' },
};

function usage(): string {
  const names = Object.keys(commands);
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    'outpost — offline-first fleet manager for NixOS',
    '',
    'Usage: outpost <command> [options]     (outpost <command> --help for its options)',
    '',
    'Commands:',
    ...names.map((n) => `  ${n.padEnd(width)}${commands[n]!.summary}`),
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`outpost: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return command.run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
    // Open sockets of finished one-shot commands must not keep the process alive.
    if (!['coordinator', 'agent'].includes(process.argv[2] ?? '')) setTimeout(() => process.exit(code), 50).unref();
  },
  (error: Error) => {
    console.error(error instanceof UsageError ? error.message : `outpost: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
