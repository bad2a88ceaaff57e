import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runDaemon } from '../../../cli/command.js';
import type { Logger } from '../../../shared/log.js';

// runDaemon: a signal closes the daemon; closing is bounded, so a daemon stuck in close() still
// ends (the process exits once runDaemon returns) and says why.

function recordingLogger(): { logger: Logger; events: string[] } {
  const events: string[] = [];
  const log = (fields: object | string): void => {
    if (typeof fields === 'object' && 'event' in fields) events.push(String(fields.event));
  };
  const logger: Logger = {
    trace: log,
    debug: log,
    info: log,
    warn: log,
    error: log,
    fatal: log,
    child: () => logger,
  };
  return { logger, events };
}

// Delivers SIGTERM to runDaemon's listener without signalling the test process itself.
function sendSigterm(): void {
  setTimeout(() => process.emit('SIGTERM', 'SIGTERM'), 10);
}

test('a daemon that closes ends with 0', async () => {
  const { logger, events } = recordingLogger();
  let closed = false;
  sendSigterm();
  const code = await runDaemon('thing', logger, {
    close: async () => {
      closed = true;
    },
  });
  assert.is(code, 0);
  assert.ok(closed);
  assert.equal(events, ['thing-stopping']);
});

test('a daemon stuck in close() ends with 1 after the bound, naming the timeout', async () => {
  const { logger, events } = recordingLogger();
  sendSigterm();
  const started = Date.now();
  const code = await runDaemon('thing', logger, { close: () => new Promise<void>(() => undefined) }, undefined, 100);
  assert.is(code, 1);
  assert.ok(Date.now() - started < 5_000);
  assert.equal(events, ['thing-stopping', 'thing-stop-timeout']);
});

test('a daemon whose close() fails ends with 1', async () => {
  const { logger, events } = recordingLogger();
  sendSigterm();
  const code = await runDaemon('thing', logger, {
    close: async () => {
      throw new Error('disk gone');
    },
  });
  assert.is(code, 1);
  assert.equal(events, ['thing-stopping', 'thing-stop-failed']);
});

test.run();
