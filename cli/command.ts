import type { z } from 'zod';
import type { Logger } from '../shared/log.js';
import { type Command, commandJson, parseOptions, renderHelp, UsageError } from './options.js';

// The one shape of every `outpost` command: parse the flags (common admin settings fall back to
// the environment, then the admin config file), answer --help (or --help --json), else run with
// the parsed options and return the exit code.
export async function runCommand<S extends z.ZodObject>(
  command: Command<S>,
  argv: string[],
  action: (options: z.output<S>) => Promise<number>,
): Promise<number> {
  const parsed = parseOptions(command, argv);
  if (parsed.help) {
    console.log(parsed.json ? JSON.stringify(commandJson(command), null, 2) : renderHelp(command));
    return 0;
  }
  return action(parsed.value);
}

export interface Daemon {
  close(): Promise<void>;
}

// The one shape of every daemon (agent, coordinator, relay) once started: say where it listens
// (the first stdout line is machine-readable, so scripts and tests find a port chosen with
// --port 0), then run until SIGINT or SIGTERM and close cleanly. A second signal while closing
// takes its default action and ends the process at once.
export async function runDaemon(
  name: string,
  logger: Logger,
  daemon: Daemon,
  listening?: { url: string; port: number },
  closeTimeoutMs = DAEMON_CLOSE_TIMEOUT_MS,
): Promise<number> {
  if (listening) console.log(JSON.stringify({ event: 'listening', url: listening.url, port: listening.port }));
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    const onSignal = (received: NodeJS.Signals): void => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      resolve(received);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  logger.info({ event: `${name}-stopping`, signal }, 'stopping');
  // Closing is bounded: a daemon that never finishes closing would hold its port, its store lock
  // and the test or unit that stopped it until something kills it harder.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), closeTimeoutMs);
  });
  try {
    const outcome = await Promise.race([daemon.close().then(() => 'closed' as const), deadline]);
    if (outcome === 'timeout') {
      logger.error(
        { event: `${name}-stop-timeout`, timeoutMs: closeTimeoutMs },
        `closing took longer than ${closeTimeoutMs / 1000} s; exiting without waiting for the rest`,
      );
      return 1;
    }
    return 0;
  } catch (error) {
    logger.error({ event: `${name}-stop-failed`, err: error }, 'closing failed');
    return 1;
  } finally {
    clearTimeout(timer);
  }
}

// Long enough for the agent to save its state and the coordinator to flush its log under load.
export const DAEMON_CLOSE_TIMEOUT_MS = 20_000;

// Commands with subcommands (`outpost policy sign`, `outpost enroll approve`): each subcommand is
// a Command named "<group> <sub>", so every message and help page names it fully.
export interface Subcommand {
  command: Command;
  run(argv: string[]): Promise<number>;
}

export interface CommandGroup {
  name: string;
  summary: string;
  subcommands: Subcommand[];
  notes?: string[];
}

export function subcommand<S extends z.ZodObject>(
  command: Command<S>,
  action: (options: z.output<S>) => Promise<number>,
): Subcommand {
  return { command, run: (argv) => runCommand(command, argv, action) };
}

const subName = (group: CommandGroup, sub: Subcommand): string => sub.command.name.slice(group.name.length + 1);

export function renderGroupHelp(group: CommandGroup): string {
  const names = group.subcommands.map((s) => subName(group, s));
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    `outpost ${group.name} — ${group.summary}`,
    '',
    `Usage: outpost ${group.name} <subcommand> [options]     (outpost ${group.name} <subcommand> --help for its options)`,
    '',
    'Subcommands:',
    ...group.subcommands.map((s, i) => `  ${names[i]!.padEnd(width)}${s.command.summary}`),
    ...(group.notes?.length ? ['', ...group.notes] : []),
  ].join('\n');
}

export async function runGroup(group: CommandGroup, argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(
      rest.includes('--json')
        ? JSON.stringify(
            {
              command: group.name,
              summary: group.summary,
              subcommands: group.subcommands.map((s) => commandJson(s.command)),
            },
            null,
            2,
          )
        : renderGroupHelp(group),
    );
    return 0;
  }
  if (!name) {
    console.error(renderGroupHelp(group));
    return 2;
  }
  const found = group.subcommands.find((s) => subName(group, s) === name);
  if (!found) {
    const known = group.subcommands.map((s) => subName(group, s)).join(', ');
    throw new UsageError(
      `outpost ${group.name}: unknown subcommand '${name}'; expected one of ${known}. Run 'outpost ${group.name} --help'.`,
    );
  }
  return found.run(rest);
}
