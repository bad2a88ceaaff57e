import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { confirmHealth, systemRunningRequired } from '../../../../agent/nix/health.js';
import { removeDirectory, temporaryDirectory } from '../../../harness/processes.js';

const dir = temporaryDirectory('agent-units');
test.after(() => removeDirectory(dir));

test('health: degraded fails with the failed units; running passes; auto requires systemd', async () => {
  const stub = async (state: string): Promise<string> => {
    const path = join(dir, `systemctl-${state}`);
    await fs.writeFile(
      path,
      `#!/bin/sh\nif [ "$1" = is-system-running ]; then echo ${state}; [ ${state} = running ]; exit $?; fi\necho "broken-db.service loaded failed failed"\n`,
      { mode: 0o755 },
    );
    return path;
  };
  const base = {
    checks: ['true'],
    requireSystemRunning: 'true' as const,
    probePeer: async () => null,
    now: Date.now,
    stopping: () => false,
    retryDelayMs: 100,
  };
  const degraded = await confirmHealth({ ...base, systemctl: await stub('degraded'), deadline: Date.now() + 500 });
  assert.is(degraded.ok, false);
  if (degraded.ok === false) {
    assert.match(degraded.reason, /systemctl is-system-running says "degraded", not "running"/);
    assert.match(degraded.outputTail, /broken-db\.service/);
  }
  const running = await confirmHealth({ ...base, systemctl: await stub('running'), deadline: Date.now() + 500 });
  assert.equal(running, {
    ok: true,
    detail: 'a fresh sync with a sync peer, system running, 1 health check(s) passed',
  });
  const unreachable = await confirmHealth({
    ...base,
    requireSystemRunning: 'false',
    systemctl: 'false',
    probePeer: async () => 'no sync within 100 ms',
    deadline: Date.now() + 300,
  });
  assert.is(unreachable.ok, false, 'a confirmation that times out is never a success');
  assert.not.ok(systemRunningRequired('auto', join(dir, 'no-systemd-here')));
  assert.ok(systemRunningRequired('auto', dir));
});

test.run();
