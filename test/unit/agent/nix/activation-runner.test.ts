import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  activationState,
  ensureLaunched,
  planActivation,
  systemdRunArgs,
  waitForActivation,
} from '../../../../agent/nix/activation-runner.js';
import { removeDirectory, temporaryDirectory } from '../../../harness/processes.js';

const dir = temporaryDirectory('agent-units');
test.after(() => removeDirectory(dir));

test('activation runner: exit codes are recorded; a run killed from outside is "lost"; a planned run not launched is launched once', async () => {
  const tools = { dir: join(dir, 'activations') };
  const wait = (run: Awaited<ReturnType<typeof planActivation>>) =>
    waitForActivation(run, { ...tools, now: Date.now, stopping: () => false, pollMs: 20 });
  const exiting = await planActivation('exits-7', 'direct', 'sh -c exit 7', 10_000, Date.now);
  assert.equal(await activationState(exiting, tools), { state: 'not-started' });
  assert.is(
    await ensureLaunched(exiting, { ...tools, command: '/bin/sh', args: ['-c', 'echo done; exit 7'], env: {} }),
    false,
  );
  assert.is(
    await ensureLaunched(exiting, { ...tools, command: '/bin/sh', args: ['-c', 'exit 0'], env: {} }),
    true,
    'a second launch finds the first',
  );
  assert.equal(await wait(exiting), { kind: 'exited', code: 7, outputTail: 'done\n' });
  const killed = await planActivation('killed', 'direct', 'sleep', 10_000, Date.now);
  await ensureLaunched(killed, { ...tools, command: '/bin/sleep', args: ['30'], env: {} });
  const pid = Number(await fs.readFile(join(tools.dir, 'killed.pid'), 'utf8'));
  process.kill(-pid, 'SIGKILL');
  assert.is((await wait(killed)).kind, 'lost');
  const hung = await planActivation('hung', 'direct', 'sleep', 300, Date.now);
  await ensureLaunched(hung, { ...tools, command: '/bin/sleep', args: ['30'], env: {} });
  assert.is((await wait(hung)).kind, 'timed-out');
  assert.equal(await activationState(hung, tools), { state: 'lost' }, 'killed at its deadline');
  // On systemd hosts the same wrapper runs as a transient unit of its own, outside the agent's cgroup.
  const unit = systemdRunArgs('generation-7-switch', {
    command: '/nix/store/x/bin/switch-to-configuration',
    args: ['switch'],
    env: { OUTPOST_HOST: 'h' },
  });
  assert.equal(unit.slice(0, 5), [
    '--unit',
    'outpost-activation-generation-7-switch.service',
    '--collect',
    '--quiet',
    '--service-type=exec',
  ]);
  assert.ok(unit.includes('--setenv=OUTPOST_HOST=h'));
  assert.equal(unit.slice(-3), ['outpost-activation', '/nix/store/x/bin/switch-to-configuration', 'switch']);
});

test.run();
