import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { addGroup, setGroupWindows } from '../../../admin/policy-edit.js';
import { renderPolicy } from '../../../admin/policy-render.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';

// Editing a policy's group windows (outpost policy set-group-windows / add-group).
const org = makeTestOrg();

test('policy edits: set-group-windows replaces all three settings; add-group keeps them; groups that never overlap are pointed out', () => {
  let policy = setGroupWindows(basePolicy(org), {
    name: 'production',
    maintenanceWindows: ['Sat 01:00-05:00'],
    rebootWindows: ['Sat 02:00-03:00'],
    timeZone: 'UTC',
  }).policy;
  assert.equal(policy.groups[0], {
    name: 'production',
    hosts: ['prod-1'],
    threshold: 2,
    maintenanceWindows: ['Sat 01:00-05:00'],
    rebootWindows: ['Sat 02:00-03:00'],
    timeZone: 'UTC',
  });
  assert.match(
    renderPolicy(policy).join('\n'),
    /production {2}threshold 2 {2}hosts: prod-1 {2}windows: maintenance Sat 01:00-05:00; reboot Sat 02:00-03:00 \(UTC\)/,
  );
  const moved = addGroup(policy, { name: 'production', hosts: ['prod-1', 'prod-2'], threshold: 2 });
  assert.equal(
    moved.policy.groups[0]!.maintenanceWindows,
    ['Sat 01:00-05:00'],
    'changing the members keeps the windows',
  );
  assert.ok(moved.notes.some((n) => /keeps its windows/.test(n)));
  policy = addGroup(moved.policy, { name: 'weekdays', hosts: ['prod-2'], threshold: 1 }).policy;
  const clash = setGroupWindows(policy, {
    name: 'weekdays',
    maintenanceWindows: ['Mon-Fri 01:00-05:00'],
    rebootWindows: [],
  });
  assert.ok(
    clash.notes.some((n) =>
      /host prod-2 is in group production and group weekdays, whose maintenance windows never overlap/.test(n),
    ),
    clash.notes.join('\n'),
  );
  const cleared = setGroupWindows(clash.policy, { name: 'production', maintenanceWindows: [], rebootWindows: [] });
  assert.equal(
    cleared.policy.groups[0],
    { name: 'production', hosts: ['prod-1', 'prod-2'], threshold: 2 },
    'no flags: the fields are gone, not empty',
  );
  assert.throws(
    () => setGroupWindows(policy, { name: 'nope', maintenanceWindows: [], rebootWindows: [] }),
    /there is no group nope; the groups are production, weekdays/,
  );
});

test.run();
