import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../../admin/fleet-view.js';
import { chooseRollbackTarget } from '../../../admin/rollback.js';
import { renderStatusTable } from '../../../admin/status.js';
import { createProgressTracker, crossedMilestone } from '../../../agent/download/progress.js';
import { renderNarinfo, transferCap } from '../../../agent/download/staging.js';
import { createThroughputGuard } from '../../../agent/download/throughput.js';
import {
  activationState,
  ensureLaunched,
  planActivation,
  systemdRunArgs,
  waitForActivation,
} from '../../../agent/nix/activation-runner.js';
import { rebootNeeded } from '../../../agent/nix/boot-change.js';
import { confirmHealth, systemRunningRequired } from '../../../agent/nix/health.js';
import { agentCommand, agentOptionsSchema } from '../../../agent/options.js';
import { rebuildFloor } from '../../../agent/pipeline/floor.js';
import { createProgressPublisher } from '../../../agent/progress-publisher.js';
import { parseFlags } from '../../../cli/flags.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { signPayload } from '../../../shared/crypto/signatures.js';
import { parseNarinfo } from '../../../shared/nix/narinfo.js';
import { nextAllowedStart } from '../../../shared/schedule/window-rules.js';
import { inWindow, parseWindow } from '../../../shared/schedule/windows.js';
import type { DownloadProgress, Result, SignedResult } from '../../../shared/schemas/report.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// Pure parts of the agent lifecycle with an injected clock, and the small process parts
// (activation runner, health checks) against stub commands.
const dir = temporaryDirectory('agent-units');
test.after(() => removeDirectory(dir));

const utc = (iso: string): number => Date.parse(iso);

test('windows: days, ranges past midnight, time zones; bad windows are refused with the fix', () => {
  const tuesday = [parseWindow('Tue 03:00-05:00')];
  // 2026-11-24 is a Tuesday.
  assert.ok(inWindow(tuesday, utc('2026-11-24T04:00:00Z'), 'UTC'));
  assert.not.ok(inWindow(tuesday, utc('2026-11-24T05:00:00Z'), 'UTC'), 'the end is exclusive');
  assert.not.ok(inWindow(tuesday, utc('2026-11-25T04:00:00Z'), 'UTC'), 'Wednesday');
  const nights = [parseWindow('Mon-Fri 22:00-06:00')];
  assert.ok(inWindow(nights, utc('2026-11-28T03:00:00Z'), 'UTC'), 'Saturday morning belongs to Friday night');
  assert.not.ok(inWindow(nights, utc('2026-11-28T23:00:00Z'), 'UTC'), 'Saturday night is not a start day');
  assert.not.ok(inWindow(nights, utc('2026-11-23T02:00:00Z'), 'UTC'), 'Monday morning belongs to Sunday night');
  const msf = [parseWindow('01:00-05:00')];
  assert.ok(inWindow(msf, utc('2026-11-24T00:30:00Z'), 'Africa/Kinshasa'), '01:30 in Kinshasa (UTC+1)');
  assert.not.ok(inWindow(msf, utc('2026-11-24T00:30:00Z'), 'UTC'));
  assert.ok(inWindow([], utc('2026-11-24T12:00:00Z')), 'no window: any time');
  assert.is(nextAllowedStart([], 0), null);
  assert.is(
    nextAllowedStart([{ source: 'flags', windows: tuesday, timeZone: 'UTC' }], utc('2026-11-24T05:30:00Z')),
    utc('2026-12-01T03:00:00Z'),
  );
  assert.is(
    nextAllowedStart([{ source: 'flags', windows: tuesday, timeZone: 'UTC' }], utc('2026-11-24T04:10:30Z')),
    utc('2026-11-24T04:10:30Z'),
    'inside: now',
  );
  // Europe/Berlin skips 02:00-03:00 on 2026-03-29: the next 02:30 is the day after.
  assert.is(
    nextAllowedStart(
      [{ source: 'flags', windows: [parseWindow('02:30-02:45')], timeZone: 'Europe/Berlin' }],
      utc('2026-03-28T23:00:00Z'),
    ),
    utc('2026-03-30T00:30:00Z'),
  );
  assert.throws(() => parseWindow('Tue 3:00-5:00'), /expected \[DAYS \]HH:MM-HH:MM/);
  assert.throws(() => parseWindow('Tus 03:00-05:00'), /unknown day "Tus"; use Mon/);
  assert.throws(() => parseWindow('03:00-03:00'), /is empty; for a whole day write 00:00-24:00/);
  assert.throws(() => parseWindow('25:00-26:00'), /25:00 is not a time of day/);
});

test('agent flags: windows, sizes and time zones are validated at start with the flag named', () => {
  const base = [
    '--host',
    'h',
    '--key',
    'k',
    '--coordinator',
    'ws://x',
    '--admin-key',
    `${'A'.repeat(43)}=`,
    '--substituter',
    'http://c',
    '--trusted-cache-key',
    `c-1:${'B'.repeat(43)}=`,
  ];
  const parsed = parseFlags(
    agentCommand,
    [...base, '--maintenance-window', 'Tue 03:00-05:00', '--max-closure-size', '64G', '--min-free-space', '512M'],
    agentOptionsSchema,
  );
  assert.ok(!parsed.help);
  if (!parsed.help) {
    assert.is(parsed.value.maxClosureSize, 64 * 2 ** 30);
    assert.is(parsed.value.minFreeSpace, 512 * 2 ** 20);
    assert.is(parsed.value.maintenanceWindow[0]?.startMinute, 180);
    assert.is(parsed.value.requireSystemRunning, 'auto');
  }
  assert.throws(
    () => parseFlags(agentCommand, [...base, '--maintenance-window', 'Tuesday 3-5'], agentOptionsSchema),
    /--maintenance-window: window "Tuesday 3-5"/,
  );
  assert.throws(
    () => parseFlags(agentCommand, [...base, '--timezone', 'Mars/Olympus'], agentOptionsSchema),
    /--timezone: expected an IANA time zone/,
  );
  assert.throws(
    () => parseFlags(agentCommand, [...base, '--max-closure-size', 'lots'], agentOptionsSchema),
    /--max-closure-size: expected a byte count/,
  );
});

test('throughput rule: a transfer below the minimum over a full window fails; one that keeps up does not', () => {
  const rule = { minBytesPerSecond: 1000, windowMs: 10_000 };
  const slow = createThroughputGuard(rule, 0);
  for (let t = 1000; t <= 20_000; t += 1000) slow.record((t / 1000) * 100, t);
  assert.is(slow.check(5000), null, 'not judged before the first full window');
  assert.match(slow.check(20_000) ?? '', /^100 B\/s over the last 10 s is below the minimum throughput of 1000 B\/s/);
  const fast = createThroughputGuard(rule, 0);
  for (let t = 1000; t <= 20_000; t += 1000) fast.record((t / 1000) * 5000, t);
  assert.is(fast.check(20_000), null);
  const silent = createThroughputGuard(rule, 0);
  assert.match(silent.check(10_000) ?? '', /^0 B\/s/, 'a silent connection fails too');
  assert.is(createThroughputGuard({ minBytesPerSecond: 0, windowMs: 1 }, 0).check(1e9), null, '0 turns the rule off');
});

test('progress: rate over the last seconds; the document gets at most one write per 10 %', () => {
  let now = 0;
  const tracker = createProgressTracker({ paths: 4, bytes: 1000 }, () => now, 0);
  now = 1000;
  tracker.addBytes(100);
  now = 2000;
  tracker.addBytes(100);
  tracker.pathDone();
  const snapshot = tracker.snapshot();
  assert.equal(
    { ...snapshot, startedAt: undefined },
    { pathsDone: 1, pathsTotal: 4, bytesDone: 200, bytesTotal: 1000, bytesPerSecond: 100, startedAt: undefined },
  );
  assert.ok(crossedMilestone(null, 0));
  assert.not.ok(crossedMilestone(10, 19));
  assert.ok(crossedMilestone(19, 20));
  const milestones: number[] = [];
  const awareness: number[] = [];
  const publisher = createProgressPublisher({
    now: () => now,
    awareness: (p) => awareness.push(p.bytesDone),
    log: () => undefined,
    milestone: (p) => milestones.push(p.bytesDone),
  });
  const progress = (bytesDone: number): DownloadProgress => ({
    pathsDone: 0,
    pathsTotal: 4,
    bytesDone,
    bytesTotal: 1000,
    bytesPerSecond: 1,
    startedAt: new Date(0).toISOString(),
  });
  for (let b = 0; b <= 990; b += 10) {
    now += 100;
    publisher.publish(progress(b));
  }
  assert.equal(milestones, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
  assert.ok(awareness.length <= 11, `awareness at most once a second (${awareness.length})`);
});

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

test('reboot decision: a changed kernel or initrd needs a reboot; an unchanged one and no booted system do not', async () => {
  const root = join(dir, 'store-root');
  const system = async (name: string, kernel: string): Promise<string> => {
    const path = join(root, 'nix', 'store', name);
    await fs.mkdir(path, { recursive: true });
    await fs.symlink(`/nix/store/${'k'.repeat(32)}-linux-${kernel}/bzImage`, join(path, 'kernel'));
    await fs.symlink(`/nix/store/${'i'.repeat(32)}-initrd-${kernel}/initrd`, join(path, 'initrd'));
    return `/nix/store/${name}`;
  };
  const old = await system(`${'a'.repeat(32)}-nixos-system-old`, '6.1');
  const same = await system(`${'b'.repeat(32)}-nixos-system-same`, '6.1');
  const next = await system(`${'c'.repeat(32)}-nixos-system-next`, '6.6');
  const booted = join(dir, 'booted-system');
  await fs.symlink(join(root, old), booted);
  assert.equal(await rebootNeeded(root, same, booted), { reboot: false, why: 'kernel and initrd are unchanged' });
  const decision = await rebootNeeded(root, next, booted);
  assert.ok(decision.reboot);
  assert.match(decision.why, /^kernel, initrd changed from the booted system \/nix\/store\/a+-nixos-system-old$/);
  assert.is((await rebootNeeded(root, next, join(dir, 'nothing-booted'))).reboot, false);
});

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

test('staging: the narinfo Nix reads back carries the signed fields unchanged, with a local URL; byte caps follow the declared sizes', () => {
  const text = [
    `StorePath: /nix/store/${'a'.repeat(32)}-x`,
    'URL: nar/abc.nar.xz',
    'Compression: xz',
    `FileHash: sha256:${'1'.repeat(52)}`,
    'FileSize: 300',
    `NarHash: sha256:${'0'.repeat(52)}`,
    'NarSize: 1000',
    `References: ${'b'.repeat(32)}-y`,
    'Deriver: unknown-deriver',
    'Sig: cache-1:sig',
  ].join('\n');
  const info = parseNarinfo(text, 'test');
  const staged = parseNarinfo(renderNarinfo(info), 'staged');
  assert.equal({ ...staged, url: '' }, { ...info, url: '' });
  assert.is(staged.url, `nar/${'a'.repeat(32)}.nar`);
  assert.is(transferCap(info), 300);
  assert.is(transferCap({ ...info, fileSize: undefined, compression: 'none' }), 1000);
  assert.ok(transferCap({ ...info, fileSize: undefined }) < 1000 + 70_000);
});

test('manual rollback picks the last applied generation before the current one, or a named applied one', () => {
  const result = (seq: number, generation: number, closure: string, outcome = 'applied') =>
    ({ result: { seq, generation, closure, outcome }, signatureValid: true }) as unknown as HostView['results'][number];
  const c = (n: number): string => `/nix/store/${String(n).repeat(32)}-system`;
  const view = {
    host: 'h',
    applied: { generation: 4, closure: c(4) },
    results: [result(1, 1, c(1)), result(2, 2, c(2)), result(3, 3, c(3), 'rolled-back'), result(4, 4, c(4))],
  };
  assert.equal(
    chooseRollbackTarget(view),
    { ok: true, generation: 2, closure: c(2) },
    'generation 3 was never applied',
  );
  assert.equal(chooseRollbackTarget(view, 1), { ok: true, generation: 1, closure: c(1) });
  assert.match(
    (chooseRollbackTarget(view, 3) as { reason: string }).reason,
    /never reported generation 3 as applied \(applied: 1, 2, 4\)/,
  );
  const forged = { ...view, results: view.results.map((r) => ({ ...r, signatureValid: r.result.generation !== 2 })) };
  assert.equal(
    chooseRollbackTarget(forged),
    { ok: true, generation: 1, closure: c(1) },
    'results whose signature fails do not count',
  );
});

test('outpost status: a progress bar on a terminal, plain numbers in a pipe, and why a host waits', () => {
  const view = {
    host: 'clinic-1',
    desired: null,
    applied: null,
    phase: 'downloading',
    target: { generation: 2, closure: '/nix/store/x' },
    statusSignatureValid: true,
    hostKey: null,
    online: true,
    lastSeen: null,
    lastResult: null,
    results: [],
    window: null,
    trust: null,
    progress: {
      pathsDone: 3,
      pathsTotal: 7,
      bytesDone: 512 * 1024,
      bytesTotal: 1024 * 1024,
      bytesPerSecond: 2048,
      startedAt: new Date(0).toISOString(),
      live: true,
    },
  } as HostView;
  const tty = renderStatusTable([view], { progressBars: true });
  assert.match(tty, /downloading 50%/);
  assert.match(tty, /\n {2}\[##########----------\] 50% 3\/7 paths, 512\.0 KiB\/1\.0 MiB, 2\.0 KiB\/s/);
  assert.not.match(renderStatusTable([view]), /\[#/);
  const waiting = renderStatusTable([
    {
      ...view,
      phase: 'waiting-for-window',
      progress: null,
      window: { waitingFor: 'reboot', windows: '01:00-05:00 (UTC)', nextStart: '2026-11-24T01:00:00.000Z' },
    },
  ]);
  assert.match(waiting, /waiting-for-window \(reboot; next 2026-11-24T01:00:00\.000Z\)/);
});

test('trust flags: --org-root or --admin-key (not both, not neither), a token only with a policy, backoff bounds', () => {
  const base = [
    '--host',
    'h',
    '--key',
    'k',
    '--coordinator',
    'ws://x',
    '--substituter',
    'http://c',
    '--trusted-cache-key',
    `c-1:${'B'.repeat(43)}=`,
  ];
  const key = `${'A'.repeat(43)}=`;
  const parsed = parseFlags(
    agentCommand,
    [...base, '--org-root', key, '--enroll-token', 't.json', '--freeze-after', '3600', '--backoff-max', '600'],
    agentOptionsSchema,
  );
  assert.ok(
    !parsed.help &&
      parsed.value.orgRoot[0] === key &&
      parsed.value.freezeAfter === 3600 &&
      parsed.value.backoffMax === 600 &&
      parsed.value.backoffBase === 1,
  );
  assert.throws(
    () => parseFlags(agentCommand, base, agentOptionsSchema),
    /--org-root: give --org-root .* or, without a policy, at least one --admin-key/,
  );
  assert.throws(
    () => parseFlags(agentCommand, [...base, '--org-root', key, '--admin-key', key], agentOptionsSchema),
    /--admin-key: give --org-root or --admin-key, not both/,
  );
  assert.throws(
    () => parseFlags(agentCommand, [...base, '--admin-key', key, '--enroll-token', 't.json'], agentOptionsSchema),
    /--enroll-token: an enrollment token needs --org-root/,
  );
  assert.throws(
    () =>
      parseFlags(
        agentCommand,
        [...base, '--admin-key', key, '--backoff-base', '60', '--backoff-max', '30'],
        agentOptionsSchema,
      ),
    /--backoff-base: must not exceed --backoff-max/,
  );
});

test("floor rebuild (threat 14): from the host's own signed results only, refusals do not raise it, epochs rank first, the running system sets applied", () => {
  const hostKey = generateSigningKey('h1');
  const stranger = generateSigningKey('stranger');
  const admin = generateSigningKey('alice');
  const closure = (c: string): string => `/nix/store/${c.repeat(32)}-nixos-system`;
  const intent = (generation: number, c: string, policyVersion: number) =>
    signIntent(
      {
        kind: 'intent',
        host: 'h1',
        generation,
        closure: closure(c),
        action: 'switch',
        issuedAt: new Date(0).toISOString(),
        expiresAt: new Date(1e13).toISOString(),
        issuer: 'alice',
        policyVersion,
      },
      admin,
    );
  const intents = [intent(1, 'a', 1), intent(2, 'b', 1), intent(1, 'c', 2), intent(50, 'd', 1)];
  const result = (
    seq: number,
    outcome: Result['outcome'],
    signed: (typeof intents)[number],
    key = hostKey,
  ): SignedResult => {
    const r: Result = {
      kind: 'result',
      host: 'h1',
      seq,
      at: new Date(0).toISOString(),
      outcome,
      generation: signed.intent.generation,
      closure: signed.intent.closure,
      action: 'switch',
      intentDigest: intentDigest(signed),
      reason: '',
      outputTail: '',
    };
    return { result: r, signature: signPayload('result', r, key) };
  };
  const epochOf = (signed: (typeof intents)[number]): number => (signed.intent.policyVersion === 2 ? 1 : 0);
  const results = [
    result(1, 'applied', intents[0]!),
    result(2, 'applied', intents[1]!),
    result(3, 'refused', intents[3]!),
    result(4, 'applied', intents[2]!),
    result(9, 'applied', intents[3]!, stranger),
  ];
  const rebuilt = rebuildFloor({ hostKey: hostKey.publicKey, results, intents, epochOf, running: closure('c') });
  assert.is(rebuilt.floorEpoch, 1, 'the epoch-1 intent ranks above every epoch-0 generation');
  assert.is(rebuilt.floorGeneration, 1);
  assert.is(rebuilt.resultSeq, 4, "only own results count (the stranger's #9 does not)");
  assert.equal(rebuilt.applied, { generation: 1, closure: closure('c'), digest: intentDigest(intents[2]!) });
  assert.equal(rebuilt.previous?.closure, closure('b'));
  assert.is(rebuilt.handledDigests.length, 4);
  const withoutEpochs = rebuildFloor({
    hostKey: hostKey.publicKey,
    results: results.slice(0, 3),
    intents,
    epochOf,
    running: closure('b'),
  });
  assert.is(withoutEpochs.floorGeneration, 2, 'a refused generation 50 does not raise the floor');
  assert.is(withoutEpochs.applied?.generation, 2);
  const forged = { ...results[1]!, result: { ...results[1]!.result, generation: 40 } };
  assert.is(
    rebuildFloor({ hostKey: hostKey.publicKey, results: [results[0]!, forged], intents, epochOf, running: null })
      .floorGeneration,
    1,
    'a result whose signature fails does not count',
  );
});

test.run();
