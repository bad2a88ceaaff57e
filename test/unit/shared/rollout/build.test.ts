import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  defaultWaves,
  gatesFor,
  PlanningError,
  parseGateSpec,
  parseWaveSpec,
  planWaves,
  releaseManifestSchema,
} from '../../../../shared/rollout/build.js';
import { DEFAULT_GATE } from '../../../../shared/rollout/schemas.js';
import { policySchema } from '../../../../shared/schemas/policy.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// Authoring a plan: the release manifest, which host goes into which wave, gate specs.
const org = makeTestOrg();
const closure = (c: string) => `/nix/store/${c.repeat(32)}-nixos-system`;
const manifest = (hosts: string[]) =>
  releaseManifestSchema.parse({ release: 'r1', hosts: Object.fromEntries(hosts.map((h) => [h, closure('a')])) });
const policy = basePolicy(org, {
  groups: [
    { name: 'production', hosts: [], threshold: 1 },
    { name: 'canaries', hosts: ['c1', 'c2'], threshold: 1 },
    { name: 'critical', hosts: ['db1'], threshold: 2 },
  ],
  channels: [
    {
      name: 'prod',
      groups: ['canaries', 'critical'],
      hosts: ['web1', 'web2'],
      waves: [
        { name: 'first', groups: ['canaries'] },
        { name: 'last', hosts: ['db1'] },
      ],
    },
    { name: 'flat', hosts: ['web1', 'web2', 'web3'] },
  ],
});

test('manifests: host ids and store paths are checked, with the field named', () => {
  assert.not.ok(releaseManifestSchema.safeParse({ release: 'r', hosts: {} }).success);
  const bad = releaseManifestSchema.safeParse({ release: 'r', hosts: { Web_1: closure('a') } });
  assert.not.ok(bad.success);
  const path = releaseManifestSchema.safeParse({ release: 'r', hosts: { web1: '/tmp/x' } });
  assert.match(path.error?.issues[0]?.message ?? '', /Nix store path/);
  assert.not.ok(releaseManifestSchema.safeParse({ release: 'r', hosts: { web1: closure('a') }, extra: 1 }).success);
});

test("a channel's waves: its hosts the release names; a channel host in no wave goes to the last", () => {
  const result = planWaves({ policy, manifest: manifest(['c1', 'c2', 'db1', 'web1', 'other']), channel: 'prod' });
  assert.equal(result.waves, [
    { name: 'first', hosts: ['c1', 'c2'] },
    { name: 'last', hosts: ['db1', 'web1'] },
  ]);
  assert.equal(result.skipped.map((s) => s.host).sort(), ['other', 'web2']);
  assert.match(result.skipped.find((s) => s.host === 'web2')!.reason, /not in release r1/);
});

test('default waves: first/middle/final of about 10/30/60 %', () => {
  assert.equal(
    defaultWaves(Array.from({ length: 10 }, (_, i) => `h${i}`)).map((w) => w.hosts.length),
    [1, 3, 6],
  );
  assert.equal(
    defaultWaves(Array.from({ length: 1000 }, (_, i) => `h${i}`)).map((w) => w.hosts.length),
    [100, 300, 600],
  );
  assert.equal(defaultWaves(['b', 'a']), [
    { name: 'first', hosts: ['a'] },
    { name: 'final', hosts: ['b'] },
  ]);
  assert.equal(
    defaultWaves(['a', 'b', 'c']).map((w) => w.hosts),
    [['a'], ['b'], ['c']],
  );
  const flat = planWaves({ policy, manifest: manifest(['web1', 'web2', 'web3']), channel: 'flat' });
  assert.equal(
    flat.waves.map((w) => w.name),
    ['first', 'middle', 'final'],
  );
});

test('explicit waves: hosts and @groups, each host in one wave; errors say what to change', () => {
  const waves = ['canary=c1', 'rest=@canaries,web1'].map(parseWaveSpec);
  const planned = planWaves({ policy, manifest: manifest(['c1', 'c2', 'web1', 'web2']), waves });
  assert.equal(planned.waves, [
    { name: 'canary', hosts: ['c1'] },
    { name: 'rest', hosts: ['c2', 'web1'] },
  ]);
  assert.equal(planned.skipped, [{ host: 'web2', reason: 'in no --wave' }]);
  assert.throws(() => parseWaveSpec('nothing'), /expected NAME=HOST/);
  assert.throws(
    () => planWaves({ policy, manifest: manifest(['c1']), waves: ['a=c1', 'b=c1'].map(parseWaveSpec) }),
    /c1 is in wave a and in wave b/,
  );
  assert.throws(
    () => planWaves({ policy, manifest: manifest(['c1']), waves: [parseWaveSpec('a=zz')] }),
    (e: unknown) => e instanceof PlanningError && /zz is not in release r1/.test(e.message),
  );
  assert.throws(
    () => planWaves({ policy, manifest: manifest(['c1']), waves: [parseWaveSpec('a=@nope')] }),
    /no group nope/,
  );
  assert.throws(() => planWaves({ policy, manifest: manifest(['c1']), channel: 'none' }), /no channel none/);
});

test('gate specs: for every wave or one, later specs win, and bad ones are explained', () => {
  assert.equal(parseGateSpec('success=90,failures=2,soak=30m,approval'), {
    wave: null,
    gate: { minSuccessPercent: 90, maxFailures: 2, soakSeconds: 1800, approval: true },
  });
  assert.equal(parseGateSpec('first:soak=2h'), { wave: 'first', gate: { soakSeconds: 7200 } });
  assert.equal(parseGateSpec('failures=any').gate, { maxFailures: null });
  const gates = gatesFor(['first', 'final'], ['soak=10s', 'first:approval', 'final:soak=1m'].map(parseGateSpec));
  assert.equal(gates, [
    { ...DEFAULT_GATE, soakSeconds: 10, approval: true },
    { ...DEFAULT_GATE, soakSeconds: 60 },
  ]);
  assert.throws(() => parseGateSpec('success=120'), /percentage from 0 to 100/);
  assert.throws(() => parseGateSpec('soak=soon'), /duration/);
  assert.throws(() => parseGateSpec('speed=3'), /unknown setting "speed"/);
  assert.throws(() => gatesFor(['first'], [parseGateSpec('middle:soak=1m')]), /no wave middle/);
});

test('policy channels: optional, checked against groups, and a policy without them is unchanged', () => {
  const plain = basePolicy(org);
  assert.is('channels' in plain, false);
  const bad = policySchema.safeParse({ ...plain, channels: [{ name: 'x', groups: ['missing'] }] });
  assert.match(bad.error?.message ?? '', /channel x names unknown group missing/);
  const twice = policySchema.safeParse({ ...plain, channels: [{ name: 'x' }, { name: 'x' }] });
  assert.match(twice.error?.message ?? '', /declared twice/);
});

test.run();
