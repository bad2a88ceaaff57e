import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer } from 'ws';
import type { Logger } from '../../../../shared/log.js';
import { connectDocument } from '../../../../shared/node/connect.js';
import type { ConnectionRetry } from '../../../../shared/sync/connect.js';
import { createRetryLogState, logConnectionRetry } from '../../../../shared/sync/retry-log.js';

// Why a connection ended reaches the daemon's log with the server's close code, once per reason
// and document, not once per reconnect during an outage.

function recordingLogger(): { logger: Logger; lines: { level: string; fields: Record<string, unknown> }[] } {
  const lines: { level: string; fields: Record<string, unknown> }[] = [];
  const at =
    (level: string) =>
    (fields: object | string): void => {
      lines.push({ level, fields: typeof fields === 'string' ? { msg: fields } : (fields as Record<string, unknown>) });
    };
  const logger: Logger = {
    trace: at('trace'),
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    fatal: at('fatal'),
    child: () => logger,
  };
  return { logger, lines };
}

const retry = (reason: string, code: number | null, document = 'hosts/h1/status'): ConnectionRetry => ({
  document,
  url: 'ws://127.0.0.1:1',
  delayMs: 2_000,
  code,
  reason,
});

test('a refusal is a warning with its code; the same reason again is counted, not logged, until the repeat interval', () => {
  const { logger, lines } = recordingLogger();
  const state = createRetryLogState();
  const quota = retry('closed with 4429: writer quota (--max-writer-bytes-per-hour) used up', 4429);
  assert.ok(logConnectionRetry(state, logger, quota, 0));
  for (let t = 1; t <= 50; t++) assert.not.ok(logConnectionRetry(state, logger, quota, t * 1_000));
  assert.is(lines.length, 1);
  assert.is(lines[0]!.level, 'warn');
  assert.is(lines[0]!.fields.event, 'connection-refused');
  assert.is(lines[0]!.fields.code, 4429);
  // Another document, or another reason, is news.
  assert.ok(logConnectionRetry(state, logger, retry('closed with 1006', 1006, 'hosts/h1/desired'), 60_000));
  assert.ok(logConnectionRetry(state, logger, retry('connect ECONNREFUSED 127.0.0.1:1', null), 61_000));
  assert.is(lines[1]!.level, 'info');
  assert.is(lines[1]!.fields.event, 'connection-lost');
  // After the interval the repeat is logged with how many were not.
  assert.ok(logConnectionRetry(state, logger, quota, 62_000));
  assert.not.ok(logConnectionRetry(state, logger, quota, 63_000));
  assert.ok(logConnectionRetry(state, logger, quota, 62_000 + 600_000));
  assert.is(lines.at(-1)!.fields.notLoggedSince, 1);
});

test('a real connection closed by the server with 4403 tells onRetry the code and the reason', async () => {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  server.on('connection', (socket) => socket.close(4403, 'host key not enrolled for h1'));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const retries: ConnectionRetry[] = [];
  const connection = connectDocument(url, 'hosts/h1/status', {
    identity: null,
    baseBackoffMs: 20,
    maxBackoffMs: 50,
    onRetry: (r) => retries.push(r),
  });
  try {
    const deadline = Date.now() + 5_000;
    while (retries.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(retries.length >= 2, `${retries.length} retries`);
    assert.is(retries[0]!.document, 'hosts/h1/status');
    assert.is(retries[0]!.code, 4403);
    assert.is(retries[0]!.reason, 'closed with 4403: host key not enrolled for h1');
  } finally {
    connection.close();
    for (const client of server.clients) client.terminate();
    await new Promise((r) => server.close(r));
  }
});

test.run();
