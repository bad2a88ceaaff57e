import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { groupWindowsFor } from '../../../../shared/schedule/group-windows.js';
import { describeRules, nextAllowedStart, rulesAllow } from '../../../../shared/schedule/window-rules.js';
import { parseWindow } from '../../../../shared/schedule/windows.js';
import { type Policy, policySchema } from '../../../../shared/schemas/policy.js';
import { walkPolicyChain } from '../../../../shared/trust/policy-chain.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

// Maintenance and reboot windows of policy groups: the schema and how several groups combine (the
// agent's own flags: test/unit/agent/effective-windows.test.ts). Times are passed in; 2026-11-24 is a Tuesday.
const org = makeTestOrg();
const utc = (iso: string): number => Date.parse(iso);

// The base policy's own group (production, prod-1) stays: a role names it.
function withGroups(groups: unknown[]): unknown {
  const base = basePolicy(org);
  return { ...base, groups: [...base.groups, ...groups] };
}

const issuesOf = (candidate: unknown): string[] => {
  const parsed = policySchema.safeParse(candidate);
  return parsed.success ? [] : parsed.error.issues.map((i) => i.message);
};

test('schema: group windows and time zone are accepted; a bad window or zone is refused naming the group', () => {
  const policy = policySchema.parse(
    withGroups([
      {
        name: 'clinics',
        hosts: ['h1'],
        maintenanceWindows: ['Tue 03:00-05:00', 'Mon-Fri 22:00-06:00'],
        rebootWindows: ['01:00-05:00'],
        timeZone: 'Africa/Kinshasa',
      },
    ]),
  );
  assert.equal(
    policy.groups[1]!.maintenanceWindows,
    ['Tue 03:00-05:00', 'Mon-Fri 22:00-06:00'],
    'kept as the strings the root signs',
  );
  assert.is(policy.groups[1]!.timeZone, 'Africa/Kinshasa');
  const badWindow = issuesOf(
    withGroups([{ name: 'clinics', hosts: ['h1'], maintenanceWindows: ['01:00-05:00', 'Tuesday 3-5'] }]),
  );
  assert.equal(badWindow.length, 1, badWindow.join('; '));
  assert.match(badWindow[0]!, /^group clinics: maintenance window "Tuesday 3-5": expected \[DAYS \]HH:MM-HH:MM/);
  assert.match(
    issuesOf(withGroups([{ name: 'night', hosts: ['h1'], rebootWindows: ['Tus 01:00-05:00'] }]))[0]!,
    /^group night: reboot window "Tus 01:00-05:00": unknown day "Tus"/,
  );
  assert.match(
    issuesOf(
      withGroups([{ name: 'mars', hosts: ['h1'], maintenanceWindows: ['01:00-05:00'], timeZone: 'Mars/Olympus_Mons' }]),
    )[0]!,
    /^group mars: time zone "Mars\/Olympus_Mons": expected an IANA time zone/,
  );
  // Bounded: a signed policy is read by every host.
  assert.ok(
    issuesOf(
      withGroups([
        { name: 'many', hosts: ['h1'], maintenanceWindows: Array.from({ length: 17 }, () => '01:00-05:00') },
      ]),
    ).length > 0,
    'at most 16 windows a kind',
  );
  assert.ok(
    issuesOf(withGroups([{ name: 'long', hosts: ['h1'], maintenanceWindows: [`Mon${',Tue'.repeat(20)} 01:00-05:00`] }]))
      .length > 0,
    'a window is at most 64 characters',
  );
});

test('old policies without group windows parse to the same content, so their signatures still verify', () => {
  // Exactly what was signed before group windows existed: groups without any window field.
  const { groups, ...rest } = basePolicy(org);
  const old: Policy = { ...rest, groups: groups.map(({ name, hosts, threshold }) => ({ name, hosts, threshold })) };
  const stored = JSON.parse(JSON.stringify(signPolicy(old, org.root))) as ReturnType<typeof signPolicy>;
  const reparsed = policySchema.parse(stored.policy);
  assert.equal(reparsed, stored.policy, 'no defaults are added to groups');
  const walk = walkPolicyChain([], new Set([org.root.publicKey]), [
    { policy: reparsed, signatures: stored.signatures },
  ]);
  assert.is(walk.chain.length, 1, walk.refused.map((r) => r.reason).join('; '));
  assert.equal(groupWindowsFor(reparsed, 'prod-1'), { maintenance: [], reboot: [] }, 'no windows: any time');
});

test('several groups: a moment is allowed only when every group with windows allows it (intersection)', () => {
  const policy = policySchema.parse(
    withGroups([
      { name: 'weekend', hosts: ['h1', 'h2'], maintenanceWindows: ['Sat-Sun 00:00-24:00'], timeZone: 'UTC' },
      {
        name: 'nights',
        hosts: ['h1'],
        maintenanceWindows: ['01:00-05:00'],
        rebootWindows: ['02:00-03:00'],
        timeZone: 'UTC',
      },
      { name: 'plain', hosts: ['h1'] },
    ]),
  );
  const h1 = groupWindowsFor(policy, 'h1');
  assert.equal(
    h1.maintenance.map((r) => r.source),
    ['group weekend', 'group nights'],
    'groups without windows add no rule',
  );
  assert.equal(
    h1.reboot.map((r) => r.source),
    ['group nights'],
  );
  assert.not.ok(
    rulesAllow(h1.maintenance, utc('2026-11-24T02:00:00Z')),
    'Tuesday night: nights allows, weekend does not',
  );
  assert.not.ok(
    rulesAllow(h1.maintenance, utc('2026-11-28T12:00:00Z')),
    'Saturday noon: weekend allows, nights does not',
  );
  assert.ok(rulesAllow(h1.maintenance, utc('2026-11-28T02:00:00Z')), 'Saturday night: both');
  assert.is(nextAllowedStart(h1.maintenance, utc('2026-11-24T12:00:00Z')), utc('2026-11-28T01:00:00Z'));
  assert.ok(
    rulesAllow(groupWindowsFor(policy, 'h2').maintenance, utc('2026-11-28T12:00:00Z')),
    'h2 is only in weekend',
  );
  assert.equal(groupWindowsFor(policy, 'h9'), { maintenance: [], reboot: [] }, 'a host in no group: any time');
  assert.equal(groupWindowsFor(undefined, 'h1'), { maintenance: [], reboot: [] }, 'no policy yet: any time');
  assert.match(
    describeRules(h1.maintenance),
    /^group weekend: Sat-Sun 00:00-24:00 \(UTC\) AND group nights: 01:00-05:00 \(UTC\)$/,
  );
  // Windows that never overlap leave no start within a week: said, never worked around.
  const disjoint = [
    { source: 'group a', windows: [parseWindow('Mon 01:00-02:00')], timeZone: 'UTC' },
    { source: 'group b', windows: [parseWindow('Tue 01:00-02:00')], timeZone: 'UTC' },
  ];
  assert.is(nextAllowedStart(disjoint, utc('2026-11-24T12:00:00Z')), null);
  const long = Array.from({ length: 60 }, (_, i) => ({
    source: `group g${i}`,
    windows: [parseWindow('Mon-Fri 01:00-05:00')],
    timeZone: 'America/Argentina/Buenos_Aires',
  }));
  assert.ok(describeRules(long).length <= 1000, 'fits the status field');
});

test.run();
