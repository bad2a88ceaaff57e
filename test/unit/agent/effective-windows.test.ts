import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { effectiveRules } from '../../../agent/effective-windows.js';
import { openIntentTrust } from '../../../agent/intent-trust.js';
import { createLogger } from '../../../shared/node/log.js';
import { groupWindowsFor } from '../../../shared/schedule/group-windows.js';
import { rulesAllow } from '../../../shared/schedule/window-rules.js';
import { parseWindow } from '../../../shared/schedule/windows.js';
import { policySchema } from '../../../shared/schemas/policy.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';

// The agent's effective windows: its own flags win over its policy groups' windows, kind by kind.
// Times are passed in; 2026-11-24 is a Tuesday.
const org = makeTestOrg();
const utc = (iso: string): number => Date.parse(iso);

function withGroups(groups: unknown[]): unknown {
  const base = basePolicy(org);
  return { ...base, groups: [...base.groups, ...groups] };
}

test("the host's own flags win over its groups' windows, kind by kind; group windows without a zone use --timezone", () => {
  const groups = groupWindowsFor(
    policySchema.parse(
      withGroups([
        { name: 'clinics', hosts: ['h1'], maintenanceWindows: ['01:00-05:00'], rebootWindows: ['02:00-04:00'] },
        { name: 'kinshasa', hosts: ['h1'], maintenanceWindows: ['00:00-03:00'], timeZone: 'Africa/Kinshasa' },
      ]),
    ),
    'h1',
  );
  const own = [parseWindow('Tue 12:00-13:00')];
  const maintenance = effectiveRules(own, 'UTC', groups.maintenance);
  assert.equal(
    maintenance.map((r) => r.source),
    ['agent flags'],
    '--maintenance-window replaces every group maintenance window',
  );
  assert.ok(rulesAllow(maintenance, utc('2026-11-24T12:30:00Z')), 'inside the host window, outside every group window');
  const reboot = effectiveRules([], 'UTC', groups.reboot);
  assert.equal(
    reboot.map((r) => [r.source, r.timeZone]),
    [['group clinics', 'UTC']],
    'no --reboot-window: the group reboot window, in the host --timezone',
  );
  const fromGroups = effectiveRules([], 'Asia/Tokyo', groups.maintenance);
  assert.equal(
    fromGroups.map((r) => [r.source, r.timeZone]),
    [
      ['group clinics', 'Asia/Tokyo'],
      ['group kinshasa', 'Africa/Kinshasa'],
    ],
    "a group's own zone wins over --timezone",
  );
  assert.equal(effectiveRules([], undefined, groups.maintenance)[0]!.timeZone, undefined, 'else the host-local time');
  assert.equal(effectiveRules([], undefined, []), [], 'no flags, no group windows: any time');
});

test('static admin keys: no policy, so no group windows', async () => {
  const trust = await openIntentTrust({
    host: 'h1',
    endpoints: ['ws://127.0.0.1:9'],
    identity: org.alice, // never used: static keys follow no document
    stateDir: '/nonexistent',
    orgRootKeys: [],
    adminKeys: [org.alice.publicKey],
    freezeAfterMs: 1000,
    logger: createLogger('test', 'error'),
  });
  assert.equal(trust.windowsFor('h1'), { maintenance: [], reboot: [] });
  await trust.close();
});

test.run();
