import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderAppsTable } from '../../../admin/apps-render.js';
import { composePs } from '../../../agent/apps/app-monitor.js';
import { appStatusOf, fitToBudget, keepSince, sameApps } from '../../../agent/apps/app-state.js';
import { appStateOf, COMPOSE_PS_MAX_BYTES, parseComposePs } from '../../../agent/apps/compose-ps.js';
import { canonicalJson } from '../../../shared/crypto/canonical.js';
import { APP_LIMITS, type AppStatus, appsStatusSchema } from '../../../shared/schemas/apps.js';
import { statusContentSchema } from '../../../shared/schemas/report.js';
import { appStateCell } from '../../../shared/views/app-cells.js';
import type { HostView } from '../../../shared/views/host-view.js';

// What `docker compose ps --all --format json` prints, as compose 2.21+ does (one object per
// line) and as earlier 2.x did (one array), with the many fields the parser ignores.
const container = (service: string, state: string, extra: Record<string, unknown> = {}) => ({
  Command: '"/docker-entrypoint.sh nginx"',
  CreatedAt: '2026-12-02 10:00:00 +0000 UTC',
  ExitCode: 0,
  Health: '',
  ID: 'a1b2c3d4e5f6',
  Image: 'nginx:1.27',
  Labels: 'com.docker.compose.project=clinic',
  Name: `clinic-${service}-1`,
  Names: `clinic-${service}-1`,
  Networks: 'clinic_default',
  Ports: '',
  Project: 'clinic',
  Publishers: [{ URL: '0.0.0.0', TargetPort: 80, PublishedPort: 8080, Protocol: 'tcp' }],
  RunningFor: '2 hours ago',
  Service: service,
  Size: '0B',
  State: state,
  Status: state === 'running' ? 'Up 2 hours' : 'Exited (1) 5 minutes ago',
  ...extra,
});

const line = (service: string, state: string) => JSON.stringify(container(service, state));

const sample = [
  container('web', 'running', { Health: 'healthy' }),
  container('worker', 'exited', { ExitCode: 1 }),
  container('db', 'running'),
];

test('both docker output shapes give the same containers, problems first, then by state and name', () => {
  const perLine = parseComposePs(`${sample.map((c) => JSON.stringify(c)).join('\n')}\n`);
  const array = parseComposePs(JSON.stringify(sample, null, 2));
  assert.ok(perLine.ok && array.ok);
  assert.equal(perLine, array);
  if (!perLine.ok) return;
  assert.equal(perLine.containers, [
    { name: 'worker', state: 'exited', exitCode: 1 },
    { name: 'db', state: 'running' },
    { name: 'web', state: 'running', health: 'healthy' },
  ]);
  // The order docker printed does not matter (the status is only rewritten on change).
  assert.equal(parseComposePs(JSON.stringify([...sample].reverse())), array);
});

test('no containers: empty output (newer compose) or an empty array (older) is a stopped app', () => {
  for (const output of ['', '\n', '[]', ' [ ]\n']) {
    const parsed = parseComposePs(output);
    assert.equal(parsed, { ok: true, containers: [], omitted: 0 }, JSON.stringify(output));
    if (parsed.ok) assert.equal(appStateOf(parsed.containers), { state: 'stopped', reason: 'no containers' });
  }
});

test('garbage, truncated JSON, non-objects and oversized output are a reason, never a throw', () => {
  const cases: [string, RegExp][] = [
    ['Cannot connect to the Docker daemon at unix:///var/run/docker.sock', /line 1 is not JSON/],
    [`${JSON.stringify(sample[0])}\n{"Service": "web", "Sta`, /line 2 is not JSON/],
    [JSON.stringify(sample).slice(0, -5), /the output is not JSON/],
    ['[1, 2]', /container 1 is not a container/],
    ['"running"', /container 1 is not a container/],
    ['null', /container 1 is not a container/],
    ['{"a":1}[', /line 1 is not JSON/],
    [`[${'['.repeat(40)}${']'.repeat(40)}]`, /container 1: .* nested deeper than 16 levels/],
    [' '.repeat(COMPOSE_PS_MAX_BYTES + 1), /more than 262144 bytes/],
    [`[${'1,'.repeat(200_000)}1]`, /more than 262144 bytes/],
  ];
  for (const [output, reason] of cases) {
    const parsed = parseComposePs(output);
    assert.not.ok(parsed.ok, output.slice(0, 60));
    if (!parsed.ok) {
      assert.match(parsed.reason, reason);
      assert.ok(parsed.reason.length <= APP_LIMITS.reason);
    }
  }
});

test('fields of unexpected types or values count as absent; the container still counts', () => {
  const parsed = parseComposePs(
    JSON.stringify([
      { Service: 42, Name: 'clinic-odd-1', State: ['running'], ExitCode: 'one' },
      { Service: 'api', State: 'Frozen' },
      { Service: 'job', State: 'exited', ExitCode: 300 },
      { Service: 'x'.repeat(500), State: 'RUNNING', Health: 'Unhealthy' },
    ]),
  );
  assert.ok(parsed.ok);
  if (!parsed.ok) return;
  assert.equal(parsed.containers, [
    { name: 'job', state: 'exited', exitCode: 255 },
    { name: 'api', state: 'unknown' },
    { name: 'clinic-odd-1', state: 'unknown' },
    { name: 'x'.repeat(128), state: 'running', health: 'unhealthy' },
  ]);
  // What the agent builds from it is what the status schema accepts.
  const app = appStatusOf({ name: 'clinic', rev: 'a'.repeat(40) }, parsed, '2026-12-02T10:00:00.000Z');
  assert.ok(appsStatusSchema.safeParse([app]).success);
  assert.is(app.state, 'degraded');
});

test('app state: running, degraded with the reason, stopped, one-shot services that finished', () => {
  assert.equal(appStateOf([{ name: 'web', state: 'running' }]), { state: 'running' });
  assert.equal(
    appStateOf([
      { name: 'web', state: 'running' },
      { name: 'migrate', state: 'exited', exitCode: 0 },
    ]),
    { state: 'running' },
    'a migration that finished is not a problem',
  );
  assert.equal(
    appStateOf([
      { name: 'web', state: 'running', health: 'unhealthy' },
      { name: 'db', state: 'restarting' },
    ]),
    { state: 'degraded', reason: 'web is unhealthy; db is restarting' },
  );
  assert.equal(appStateOf([{ name: 'web', state: 'exited', exitCode: 137 }]), {
    state: 'degraded',
    reason: 'web exited with code 137',
  });
  assert.equal(appStateOf([{ name: 'seed', state: 'exited', exitCode: 0 }]).state, 'stopped');
  const many = Array.from({ length: 5 }, (_, i) => ({ name: `s${i}`, state: 'dead' as const }));
  assert.match(appStateOf(many).reason!, /s0 is dead; s1 is dead; s2 is dead and 2 more$/);
  const unknown = appStatusOf({ name: 'clinic', rev: 'b'.repeat(40) }, { ok: false, reason: 'docker: not found' }, 'T');
  assert.equal(unknown, {
    name: 'clinic',
    rev: 'b'.repeat(40),
    state: 'unknown',
    reason: 'docker: not found',
    services: [],
    since: 'T',
  });
});

test('deployedRev: the commit the unit brought up, said next to the state when it is not the declared one', () => {
  const rev = '1'.repeat(40);
  const at = '2026-12-02T10:00:00.000Z';
  const ps = parseComposePs(line('web', 'running'));
  const current = appStatusOf({ name: 'clinic', rev }, ps, at, rev);
  assert.is(current.deployedRev, rev);
  assert.is(appStateCell(current), 'running');
  const older = appStatusOf({ name: 'clinic', rev }, ps, at, '2'.repeat(40));
  assert.is(
    appStateCell(older),
    'running (111111111111 NOT BROUGHT UP: 222222222222 runs; journalctl -u outpost-app-clinic)',
  );
  const never = appStatusOf({ name: 'clinic', rev }, { ok: true, containers: [], omitted: 0 }, at, null);
  assert.match(appStateCell(never), /^stopped: no containers \(111111111111 NOT BROUGHT UP YET; /);
  assert.not.ok('deployedRev' in appStatusOf({ name: 'clinic', rev }, ps, at), 'unknown: not claimed either way');
  assert.ok(appsStatusSchema.safeParse([current, older, never]).success);
});

test('since is kept while nothing else changes, so an unchanged check publishes nothing', () => {
  const rev = 'c'.repeat(40);
  const ps = parseComposePs(JSON.stringify(sample));
  const first = keepSince([appStatusOf({ name: 'clinic', rev }, ps, '2026-12-02T10:00:00.000Z')], null);
  const again = keepSince([appStatusOf({ name: 'clinic', rev }, ps, '2026-12-02T10:01:00.000Z')], first);
  assert.ok(sameApps(first, again));
  assert.is(again[0]!.since, '2026-12-02T10:00:00.000Z');
  const fixed = parseComposePs(JSON.stringify([sample[0], sample[2]]));
  const changed = keepSince([appStatusOf({ name: 'clinic', rev }, fixed, '2026-12-02T10:02:00.000Z')], again);
  assert.not.ok(sameApps(changed, again));
  assert.equal([changed[0]!.state, changed[0]!.since], ['running', '2026-12-02T10:02:00.000Z']);
});

test('the apps of a status stay within budget: containers are cut, problems kept, and the status entry fits', () => {
  const longName = (i: number) => `service-${i}-${'n'.repeat(100)}`;
  const containers = Array.from({ length: 200 }, (_, i) =>
    container(longName(i), i % 50 === 0 ? 'exited' : 'running', { ExitCode: i % 50 === 0 ? 2 : 0 }),
  );
  const ps = parseComposePs(JSON.stringify(containers));
  const apps = Array.from({ length: APP_LIMITS.apps }, (_, i) =>
    appStatusOf({ name: `app-${i}`, rev: 'd'.repeat(40) }, ps, '2026-12-02T10:00:00.000Z'),
  );
  assert.is(apps[0]!.services.length, APP_LIMITS.servicesPerApp);
  assert.is(apps[0]!.servicesOmitted, 200 - APP_LIMITS.servicesPerApp);
  const fitted = fitToBudget(apps);
  assert.ok(canonicalJson(fitted).length <= APP_LIMITS.statusBytes, `${canonicalJson(fitted).length} bytes`);
  assert.ok(fitted.every((a) => (a.servicesOmitted ?? 0) + a.services.length === 200));
  assert.ok(
    fitted[0]!.services.length > 0 && fitted[0]!.services.every((s) => s.state === 'exited'),
    'the failed ones are what stays listed',
  );
  const status = statusContentSchema.safeParse({
    kind: 'status',
    host: 'clinic-1',
    phase: 'idle',
    applied: null,
    target: null,
    lastResultSeq: null,
    agentVersion: '0.2.0',
    apps: fitted,
  });
  assert.ok(status.success, status.error?.message);
  // Worst case, no container listed: 32 apps with the longest reasons still fit.
  const worst = Array.from({ length: APP_LIMITS.apps }, (_, i) =>
    appStatusOf(
      { name: `${'a'.repeat(58)}-${i}`, rev: 'e'.repeat(40) },
      { ok: false, reason: 'r'.repeat(APP_LIMITS.reason) },
      '2026-12-02T10:00:00.000Z',
    ),
  );
  assert.ok(canonicalJson(fitToBudget(worst)).length <= APP_LIMITS.statusBytes);
});

test('composePs: a docker that is not installed, or answers, through the command runner', async () => {
  const settings = { manifest: '', intervalMs: 1000, timeoutMs: 5000 };
  const missing = await composePs({ ...settings, docker: '/nonexistent/outpost-test/docker' }, 'clinic');
  assert.not.ok(missing.ok);
  if (!missing.ok)
    assert.match(missing.reason, /^cannot run \/nonexistent\/outpost-test\/docker \(install docker .*ENOENT/);
  const dir = mkdtempSync(join(tmpdir(), 'outpost-compose-ps-'));
  try {
    const docker = join(dir, 'docker');
    writeFileSync(
      docker,
      `#!/bin/sh\n[ "$*" = "compose -p clinic ps --all --format json" ] || exit 9\necho '${line('web', 'running')}'\n`,
      {
        mode: 0o755,
      },
    );
    assert.equal(await composePs({ ...settings, docker }, 'clinic'), {
      ok: true,
      containers: [{ name: 'web', state: 'running' }],
      omitted: 0,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('outpost status --apps: a row per app, problems in capitals, silent hosts named', () => {
  const view = (host: string, apps: AppStatus[] | null, online = true) =>
    ({ host, apps, online }) as unknown as HostView;
  const rev = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
  const text = renderAppsTable([
    view('clinic-1', [
      {
        name: 'clinic',
        rev,
        state: 'degraded',
        reason: 'worker exited with code 1',
        services: [
          { name: 'worker', state: 'exited', exitCode: 1 },
          { name: 'web', state: 'running', health: 'healthy' },
        ],
        since: '2026-12-02T10:00:00.000Z',
      },
    ]),
    view('clinic-2', [{ name: 'clinic', rev, state: 'running', services: [], servicesOmitted: 3, since: 'T' }], false),
    view('clinic-3', null),
  ]);
  assert.match(
    text,
    /clinic-1 +clinic +4b825dc642cb +DEGRADED: worker exited with code 1 +2026-12-02T10:00:00\.000Z +worker exited 1; web running, healthy/,
  );
  assert.match(
    text,
    /clinic-2 +clinic +4b825dc642cb +running \(host offline: as last reported\) +T +3 more not listed/,
  );
  assert.match(text, /no apps reported by clinic-3/);
  assert.match(text, /2 apps: 1 running, 1 degraded, 0 stopped, 0 unknown$/);
});

test.run();
