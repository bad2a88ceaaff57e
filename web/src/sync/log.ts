import type { LogFn, Logger } from '../../../shared/log.js';

// The core's logging surface on the browser console (warnings and errors only: the page shows
// what matters itself).
const quiet: LogFn = () => undefined;
const toConsole =
  (method: 'warn' | 'error'): LogFn =>
  (fieldsOrMessage: object | string, message?: string) => {
    if (typeof fieldsOrMessage === 'string') console[method](fieldsOrMessage);
    else console[method](message ?? '', fieldsOrMessage);
  };

export const consoleLogger: Logger = {
  trace: quiet,
  debug: quiet,
  info: quiet,
  warn: toConsole('warn'),
  error: toConsole('error'),
  fatal: toConsole('error'),
  child: () => consoleLogger,
};
