import { pino, type Logger } from 'pino';

export type { Logger };

// One JSON event per line on stderr, so stdout stays free for command output (`status --json`).
export function createLogger(component: string, level: string = process.env.OUTPOST_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: `outpost-${component}`, level, base: { component } }, pino.destination({ fd: 2, sync: true }));
}
