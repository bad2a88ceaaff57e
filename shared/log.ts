// The logging surface the core needs, so it runs where pino does not (the browser): pino's Logger
// satisfies it, and the Node implementation lives in node/log.ts. Calls take a fields object
// first (event, host, document, generation…), then a message, as pino does.
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}

export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

// Discards everything: for core code run without a log (the browser bundle test, one-shot reads).
export const silentLogger: Logger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: () => undefined,
  error: () => undefined,
  fatal: () => undefined,
  child: () => silentLogger,
};
