import { type DestinationStream, type Logger, pino } from 'pino';

export type { Logger };

// One JSON event per line on stderr, so stdout stays free for command output (`status --json`).
export function createLogger(
  component: string,
  level: string = process.env.OUTPOST_LOG_LEVEL ?? 'info',
  destination?: DestinationStream,
): Logger {
  return pino(
    { name: `outpost-${component}`, level, base: { component } },
    destination ?? pino.destination({ fd: 2, sync: true }),
  );
}

// Collects log events in memory, for tests that assert what was logged.
export function createMemoryLogger(component: string): { logger: Logger; events: Record<string, unknown>[] } {
  const events: Record<string, unknown>[] = [];
  const destination: DestinationStream = {
    write: (line: string) => void events.push(JSON.parse(line) as Record<string, unknown>),
  };
  return { logger: createLogger(component, 'debug', destination), events };
}
