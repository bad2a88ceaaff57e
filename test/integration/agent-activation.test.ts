import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { runRollbackCommand } from '../../admin/rollback.js';
import type { BinaryCacheServer } from '../harness/cache-server.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { activations, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import {
  type HostResult,
  type LifecycleFleet,
  logEvents,
  readAgentState,
  readLines,
  startLifecycleFleet,
  utcWindow,
} from '../harness/lifecycle-fleet.js';
import { runCommand } from '../harness/nix-fixtures.js';
import { type DaemonProcess, removeDirectory, runCli, temporaryDirectory, waitFor } from '../harness/processes.js';
import { buildSystemClosure, SWITCH_SCRIPTS } from '../harness/system-closures.js';

// Issue 4, activation side, with real Nix, real processes and real websockets: test closures
// whose switch succeeds, fails, hangs, kills the agent or cuts the network each end in the
// documented phase, on a working generation, with a signed result that says why.
let fleet: LifecycleFleet;
let cache: BinaryCacheServer;
const closures: Record<string, string> = {};

test.before(async () => {
  fleet = await startLifecycleFleet(temporaryDirectory('agent-activation'));
  const builds: [string, Parameters<typeof buildSystemClosure>[0]][] = [
    ['good1', { name: 'nixos-system-good1', extraPaths: 1 }],
    ['good2', { name: 'nixos-system-good2', extraPaths: 1 }],
    ['fails', { name: 'nixos-system-fails', switchScript: SWITCH_SCRIPTS.fails }],
    ['hangs', { name: 'nixos-system-hangs', switchScript: SWITCH_SCRIPTS.hangs }],
    ['killsTheAgent', { name: 'nixos-system-kills-agent', switchScript: SWITCH_SCRIPTS.killsTheAgent }],
    ['cutsTheNetwork', { name: 'nixos-system-cuts-network', switchScript: SWITCH_SCRIPTS.cutsTheNetwork }],
    ['kernel1', { name: 'nixos-system-kernel1', kernel: '6.1.1' }],
    ['kernel2', { name: 'nixos-system-kernel2', kernel: '6.6.6' }],
    [
      'systemManager',
      {
        name: 'system-manager-1',
        activateScript:
          'if [ -n "$OUTPOST_TEST_ACTIVATION_LOG" ]; then echo "activate $OUTPOST_SYSTEM" >> "$OUTPOST_TEST_ACTIVATION_LOG"; fi',
      },
    ],
  ];
  for (const [key, options] of builds) {
    closures[key] = await buildSystemClosure(options);
    await fleet.publish(closures[key]!);
  }
  cache = await fleet.serveCache();
});

test.after(async () => {
  await fleet?.close();
  if (fleet && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(fleet.dir);
});

// A host that already runs good1 as generation 1 (the rollback target of every failure case).
async function hostOnGood1(
  id: string,
  extraArgs: string[] = [],
  options: { coordinators?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<{ host: SimulatedHost; agent: DaemonProcess }> {
  const host = await fleet.host(id);
  const agent = fleet.startAgent(host, cache.url, extraArgs, options);
  await fleet.deploy(id, closures.good1!);
  const result = await fleet.nextResult(id, 0);
  assert.is(result.outcome, 'applied', result.reason);
  return { host, agent };
}

async function deployAndWait(host: SimulatedHost, closure: string): Promise<HostResult> {
  const before = await fleet.lastSeq(host.host);
  await fleet.deploy(host.host, closure);
  return fleet.nextResult(host.host, before);
}

async function assertBackOnGood1(host: SimulatedHost, result: HostResult, reason: RegExp): Promise<void> {
  assert.is(result.outcome, 'rolled-back', result.reason);
  assert.match(result.reason, reason);
  assert.match(result.reason, /returned to generation 1$/);
  assert.ok(result.signatureValid, 'the result is signed by the host');
  assert.is((await fleet.settledView(host.host)).phase, 'rolled-back');
  assert.is(await profileTarget(host), closures.good1, 'the profile points at the previous generation again');
  assert.is(
    (await activations(host)).at(-1),
    `switch ${closures.good1}`,
    'the previous generation was re-activated last',
  );
}

async function storeHas(host: SimulatedHost, path: string): Promise<boolean> {
  return (await runCommand('nix-store', ['--store', host.storeRoot, '--check-validity', path])).code === 0;
}

test('switch succeeds: applied only after a fresh sync with the coordinator; current and previous survive a garbage collection', async () => {
  const { host, agent } = await hostOnGood1('ok');
  const result = await deployAndWait(host, closures.good2!);
  assert.is(result.outcome, 'applied', result.reason);
  assert.match(result.reason, /^switch succeeded; confirmed: a fresh sync with a sync peer/);
  assert.ok(result.signatureValid);
  assert.is((await fleet.settledView('ok')).phase, 'applied');
  assert.is(await profileTarget(host), closures.good2);
  assert.equal(await activations(host), [`switch ${closures.good1}`, `switch ${closures.good2}`]);
  assert.ok(logEvents(agent, 'download-plan').length >= 2, 'the agent logged its download plans');

  // nix-collect-garbage -d: old profile generations go, then the store is collected. The agent's
  // own roots keep the rollback target (generation 1) alive. The agent pins them after it has
  // reported the result and published the applied status (finish() in agent/status-publish.ts,
  // one nix-store call per root), so they are waited for, not read once.
  const root = (name: string) => fs.readlink(join(host.stateDir, 'gcroots', name)).catch(() => null);
  await waitFor(
    'the agent to pin generation 2 as current and generation 1 as previous',
    async () => (await root('current')) === closures.good2 && (await root('previous')) === closures.good1,
    30_000,
    200,
  ).catch(() => undefined);
  assert.is(await root('previous'), closures.good1);
  assert.is(await root('current'), closures.good2);
  const deleted = await runCommand('nix-env', [
    '--store',
    host.storeRoot,
    '--profile',
    host.profile,
    '--delete-generations',
    'old',
  ]);
  assert.is(deleted.code, 0, deleted.stderr);
  const gc = await runCommand('nix-store', ['--store', host.storeRoot, '--gc']);
  assert.is(gc.code, 0, gc.stderr);
  assert.ok(await storeHas(host, closures.good1!), 'the previous generation is still in the store after the GC');
  assert.ok(await storeHas(host, closures.good2!), 'the current generation is still in the store after the GC');
});

test('switch fails: the previously active generation is re-activated; rolled-back with the exit code and output tail', async () => {
  const { host } = await hostOnGood1('fails');
  const result = await deployAndWait(host, closures.fails!);
  await assertBackOnGood1(host, result, /^switch-to-configuration switch exited with code 3; /);
  assert.match(result.outputTail, /broken-db\.service/);
  assert.equal(await activations(host), [
    `switch ${closures.good1}`,
    `switch ${closures.fails}`,
    `switch ${closures.good1}`,
  ]);
});

test('switch hangs: killed at the activation timeout, then rolled back; nothing of it keeps running', async () => {
  const { host } = await hostOnGood1('hangs', ['--activation-timeout', '3']);
  const result = await deployAndWait(host, closures.hangs!);
  await assertBackOnGood1(host, result, /^switch-to-configuration switch did not finish within 3 s and was killed; /);
  assert.match(result.outputTail, /starting broken-db\.service/);
  const ps = await runCommand('ps', ['-eo', 'args']);
  assert.not.ok(ps.stdout.includes(closures.hangs!), 'the hung activation was killed');
});

test('switch kills the agent: the activation finishes on its own; the restarted agent resumes and reports applied', async () => {
  const { host, agent } = await hostOnGood1('killer');
  const before = await fleet.lastSeq('killer');
  await fleet.deploy('killer', closures.killsTheAgent!);
  await agent.exited;
  assert.is(agent.child.signalCode, 'SIGKILL', 'the switch killed the agent');
  assert.is((await readAgentState(host)).phase, 'activating', 'the agent died while activating');
  const restarted = fleet.startAgent(host, cache.url);
  const result = await fleet.nextResult('killer', before);
  assert.is(result.outcome, 'applied', result.reason);
  assert.ok(
    logEvents(restarted, 'resume-activation').length === 1,
    'the restarted agent picked up the running activation instead of starting it again',
  );
  assert.is(await profileTarget(host), closures.killsTheAgent);
  assert.equal(
    await activations(host),
    [`switch ${closures.good1}`, `switch ${closures.killsTheAgent}`],
    'the switch ran exactly once',
  );
  assert.is((await fleet.settledView('killer')).phase, 'applied');
});

test('switch cuts the network: no fresh sync within the confirm timeout, rolled back, and the signed failure arrives once the network is back', async () => {
  const cutFile = join(fleet.dir, 'network-cut');
  const proxy: FaultProxy = await startFaultProxy(fleet.coordinator.port);
  // The switch script "cuts the network" by creating the file; the previous generation's script
  // removes it again. The proxy between agent and coordinator follows the file.
  const watcher = setInterval(() => (existsSync(cutFile) ? proxy.cut() : proxy.restore()), 50);
  try {
    const { host } = await hostOnGood1('netcut', ['--confirm-timeout', '4'], {
      coordinators: [proxy.url()],
      env: { OUTPOST_TEST_NETWORK_CUT: cutFile },
    });
    const result = await deployAndWait(host, closures.cutsTheNetwork!);
    await assertBackOnGood1(
      host,
      result,
      /^not confirmed within the confirm timeout: no fresh sync with a sync peer: /,
    );
    assert.not.ok(existsSync(cutFile), 're-activating generation 1 restored the network');
  } finally {
    clearInterval(watcher);
    await proxy.close();
  }
});

test('agent restarted during confirming: it resumes confirming and reaches applied; a check that keeps failing rolls back', async () => {
  const healthy = join(fleet.dir, 'confirm-healthy');
  const check = ['--health-check', `test -e ${healthy}`];
  const host = await fleet.host('confirm');
  const first = fleet.startAgent(host, cache.url, [...check, '--confirm-timeout', '60']);
  await fleet.deploy('confirm', closures.good1!);
  await waitFor('the agent to be confirming', async () => (await readAgentState(host)).phase === 'confirming', 30_000);
  first.child.kill('SIGKILL');
  await first.exited;
  const second = fleet.startAgent(host, cache.url, [...check, '--confirm-timeout', '60']);
  await waitFor(
    'the restarted agent to resume confirming',
    () => logEvents(second, 'resume').some((e) => e.phase === 'confirming'),
    20_000,
  );
  await fs.writeFile(healthy, '');
  const applied = await fleet.nextResult('confirm', 0);
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.match(applied.reason, /1 health check\(s\) passed/);
  assert.equal(await activations(host), [`switch ${closures.good1}`], 'the switch was not run again after the restart');

  await second.stop();
  await fs.rm(healthy);
  const third = fleet.startAgent(host, cache.url, [...check, '--confirm-timeout', '3']);
  const result = await deployAndWait(host, closures.good2!);
  await assertBackOnGood1(
    host,
    result,
    /^not confirmed within the confirm timeout: health check "test -e .*confirm-healthy" exited with 1; /,
  );
  await third.stop();
});

test('kernel change: switch becomes boot, the reboot waits for the reboot window, and the host comes back on the new generation', async () => {
  const booted = join(fleet.dir, 'kernel-booted-system');
  const rebootLog = join(fleet.dir, 'kernel-reboots.log');
  const host = await fleet.host('kernel');
  // The reboot stub records the call and "boots" the new system by pointing the booted-system link at it.
  const rebootCommand = `echo "reboot $OUTPOST_CLOSURE" >> ${rebootLog}; ln -sfn "$OUTPOST_STORE_ROOT$OUTPOST_CLOSURE" ${booted}`;
  const common = ['--booted-system', booted, '--reboot-command', rebootCommand, '--timezone', 'UTC'];
  const outside = fleet.startAgent(host, cache.url, [...common, '--reboot-window', utcWindow(120, 180)]);
  await fleet.deploy('kernel', closures.kernel1!);
  assert.is((await fleet.nextResult('kernel', 0)).outcome, 'applied');
  await fs.symlink(join(host.storeRoot, closures.kernel1!), booted);

  await fleet.deploy('kernel', closures.kernel2!);
  const waiting = await waitFor(
    'the host to wait for its reboot window',
    async () => {
      const view = await fleet.view('kernel');
      return view.phase === 'waiting-for-window' ? view : null;
    },
    30_000,
    300,
  );
  assert.is(waiting.window?.waitingFor, 'reboot');
  assert.ok(
    waiting.window?.nextStart && Date.parse(waiting.window.nextStart) > Date.now() + 60 * 60_000,
    'the next reboot window starts in about two hours',
  );
  assert.equal(
    await activations(host),
    [`switch ${closures.kernel1}`, `boot ${closures.kernel2}`],
    'switch became boot',
  );
  assert.equal(await readLines(rebootLog), [], 'no reboot outside the window');
  assert.is(await profileTarget(host), closures.kernel2, 'the new generation is the boot default');

  await outside.stop();
  fleet.startAgent(host, cache.url, [...common, '--reboot-window', utcWindow(-5, 30)]);
  const result = await fleet.nextResult('kernel', 1);
  assert.is(result.outcome, 'applied', result.reason);
  assert.match(result.reason, /^the kernel or initrd changed: installed with boot and rebooted; confirmed/);
  assert.equal(await readLines(rebootLog), [`reboot ${closures.kernel2}`]);
});

test('maintenance window: outside it the host waits (and says until when) without downloading; a newer intent replaces the waiting one; inside the window the work starts', async () => {
  const host = await fleet.host('window');
  const waitingAgent = fleet.startAgent(host, cache.url, [
    '--maintenance-window',
    `Mon-Sun ${utcWindow(120, 150)}`,
    '--timezone',
    'UTC',
  ]);
  await fleet.deploy('window', closures.good1!);
  const waiting = await waitFor(
    'the host to wait for its maintenance window',
    async () => {
      const view = await fleet.view('window');
      return view.phase === 'waiting-for-window' ? view : null;
    },
    30_000,
    300,
  );
  assert.is(waiting.window?.waitingFor, 'download');
  assert.match(waiting.window?.windows ?? '', /UTC/);
  assert.is(waiting.target?.generation, 1);
  assert.not.ok(await storeHas(host, closures.good1!), 'nothing was downloaded outside the window');
  // A newer intent replaces the one still waiting: nothing on the host has changed yet.
  await fleet.deploy('window', closures.good2!);
  await waitFor(
    'the waiting target to become generation 2',
    async () => (await fleet.view('window')).target?.generation === 2,
    30_000,
    300,
  );
  await waitingAgent.stop();
  fleet.startAgent(host, cache.url, ['--maintenance-window', utcWindow(-5, 30), '--timezone', 'UTC']);
  const result = await fleet.nextResult('window', 0);
  assert.is(result.outcome, 'applied', result.reason);
  assert.is(result.generation, 2);
  assert.equal(await activations(host), [`switch ${closures.good2}`], 'generation 1 was never activated');
});

test('system-manager profile: bin/activate is run; boot is refused because such profiles have no boot entries', async () => {
  const host = await fleet.host('sysmgr');
  fleet.startAgent(host, cache.url, ['--profile-type', 'system-manager']);
  await fleet.deploy('sysmgr', closures.systemManager!);
  const result = await fleet.nextResult('sysmgr', 0);
  assert.is(result.outcome, 'applied', result.reason);
  assert.equal(await activations(host), [`activate ${closures.systemManager}`]);
  assert.is(await profileTarget(host), closures.systemManager);
  const before = await fleet.lastSeq('sysmgr');
  await fleet.deploy('sysmgr', closures.good2!, ['--action', 'boot']);
  const refused = await fleet.nextResult('sysmgr', before);
  assert.is(refused.outcome, 'failed');
  assert.match(refused.reason, /system-manager profile has no boot entries/);
  assert.is(await profileTarget(host), closures.systemManager, 'nothing changed');
});

test('manual rollback: a new signed generation pointing at the previous closure; the floor never goes down', async () => {
  // Host "ok" runs good2 as generation 2 after good1 as generation 1.
  const host = await fleet.view('ok');
  assert.is(host.applied?.generation, 2);
  const before = host.lastResult?.seq ?? 0;
  // Through the real CLI once (`outpost rollback`), in process for the rest.
  const cli = await runCli([
    'rollback',
    '--coordinator',
    fleet.coordinator.url,
    '--key',
    fleet.adminKeyFile,
    '--host',
    'ok',
  ]);
  assert.is(cli.code, 0, cli.stderr);
  assert.match(cli.stdout, /generation 3/);
  const back = await fleet.nextResult('ok', before);
  assert.is(back.outcome, 'applied', back.reason);
  assert.is(back.generation, 3, 'a rollback is a new, higher generation');
  assert.is(back.closure, closures.good1);
  // The next rollback reads what the host's signed status says it runs, and the agent publishes
  // that status after it has signed the result (finish() in agent/status-publish.ts): until
  // then the status still names generation 2, whose closure the rollback would "already run".
  await waitFor(
    'the status of ok to name generation 3 applied',
    async () => (await fleet.view('ok')).applied?.generation === back.generation,
    30_000,
    300,
  );
  assert.is(
    await runRollbackCommand([
      '--coordinator',
      fleet.coordinator.url,
      '--key',
      fleet.adminKeyFile,
      '--host',
      'ok',
      '--to-generation',
      '2',
    ]),
    0,
  );
  const forward = await fleet.nextResult('ok', back.seq);
  assert.is(forward.generation, 4);
  assert.is(forward.closure, closures.good2);
  assert.is(
    await runRollbackCommand([
      '--coordinator',
      fleet.coordinator.url,
      '--key',
      fleet.adminKeyFile,
      '--host',
      'ok',
      '--to-generation',
      '9',
    ]),
    1,
    'an unknown generation is refused',
  );
});

test.run();
