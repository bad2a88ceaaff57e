#!/usr/bin/env node
import { UsageError } from './options.js';

// Commands load their code only when run: `outpost status` need not load the agent or LevelDB.
type CommandRunner = (argv: string[]) => Promise<number>;
const commands: Record<string, { run: CommandRunner; summary: string }> = {
  keygen: {
    run: async (argv) => (await import('../admin/keygen.js')).runKeygenCommand(argv),
    summary: 'create an admin or host key',
  },
  coordinator: {
    run: async (argv) => (await import('../coordinator/cli.js')).runCoordinatorCommand(argv),
    summary: 'run the coordinator (sync server + update log)',
  },
  relay: {
    run: async (argv) => (await import('../relay/cli.js')).runRelayCommand(argv),
    summary: 'run a relay at a site (serves its agents, syncs with the upstream when it can, mirrors the cache)',
  },
  agent: {
    run: async (argv) => (await import('../agent/cli.js')).runAgentCommand(argv),
    summary: 'run the agent on a host',
  },
  deploy: {
    run: async (argv) => (await import('../admin/deploy.js')).runDeployCommand(argv),
    summary: 'sign and submit an intent for a host',
  },
  approve: {
    run: async (argv) => (await import('../admin/approve.js')).runApproveCommand(argv),
    summary: "co-sign another admin's intent where the host's group needs several admins",
  },
  rollback: {
    run: async (argv) => (await import('../admin/rollback.js')).runRollbackCommand(argv),
    summary: 'return a host to an earlier applied generation (as a new signed generation)',
  },
  action: {
    run: async (argv) => (await import('../admin/action.js')).runActionCommand(argv),
    summary: 'remote actions on a host: reboot, lock, unlock, collect, check',
  },
  status: {
    run: async (argv) => (await import('../admin/status.js')).runStatusCommand(argv),
    summary: 'show every host: desired, applied, phase, online, last result',
  },
  policy: {
    run: async (argv) => (await import('../admin/policy.js')).runPolicyCommand(argv),
    summary: 'write, sign, verify and publish the signed fleet policy',
  },
  audit: {
    run: async (argv) => (await import('../admin/audit.js')).runAuditCommand(argv),
    summary: 'replay and verify the fleet history: timelines, anomalies, offline bundles',
  },
  enroll: {
    run: async (argv) => (await import('../admin/enroll.js')).runEnrollCommand(argv),
    summary: 'enroll hosts: request, token, list, approve, clear',
  },
  rollout: {
    run: async (argv) => (await import('../admin/rollout.js')).runRolloutCommand(argv),
    summary:
      'roll a release out in waves with gates agents check: create, status, approve, pause, resume, abort, list, wait',
  },
  ssh: {
    run: async (argv) => (await import('../admin/ssh.js')).runSshCommand(argv),
    summary: "an SSH byte stream to a host's sshd through its agent's outbound link (ssh's ProxyCommand)",
  },
  web: {
    run: async (argv) => (await import('../admin/web.js')).runWebCommand(argv),
    summary:
      'serve the web editor from this installation on 127.0.0.1, forwarding to the coordinator (a compromised coordinator cannot change the page)',
  },
  bundle: {
    run: async (argv) =>
      (await import('../admin/bundle.js')).runBundleCommand(argv, async () => {
        const { applyToDataDir, readDataDir } = await import('../relay/bundle-log.js');
        return { apply: applyToDataDir, read: readDataDir };
      }),
    summary: 'carry updates and closures to a site with no link on a USB stick, and its results back: create, apply',
  },
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
  // Every signature this process checks goes through node:crypto, not tweetnacl in JS.
  (await import('../shared/node/ed25519.js')).installNodeEd25519();
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
    // Open sockets of finished commands must not keep the process alive: a one-shot command is
    // done, and a daemon has closed (or given up closing, runDaemon's bound) by the time it returns.
    setTimeout(() => process.exit(code), 50).unref();
  },
  (error: Error) => {
    console.error(error instanceof UsageError ? error.message : `outpost: ${error.message}`);
    process.exit(error instanceof UsageError ? 2 : 1);
  },
);
