import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { sleep } from '../../../../shared/time/sleep.js';

test('sleep waits, and an abort ends it at once', async () => {
  const started = Date.now();
  await sleep(20);
  assert.ok(Date.now() - started >= 15);
  const controller = new AbortController();
  const long = sleep(60_000, controller.signal);
  controller.abort();
  await long;
  await sleep(60_000, controller.signal); // already aborted: returns at once
  assert.ok(Date.now() - started < 5_000);
});

test.run();
