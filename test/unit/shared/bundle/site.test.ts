import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { siteHosts } from '../../../../shared/bundle/site.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// `bundle create --relay / --group` (shared/bundle/site.ts): the site's hosts from the policy.
const org = makeTestOrg();
const relayKey = `${'A'.repeat(43)}=`;
const policy = basePolicy(org, {
  groups: [
    { name: 'production', hosts: ['prod-1'], threshold: 2 },
    { name: 'clinic', hosts: ['c1', 'c2'], threshold: 1 },
  ],
  relays: [
    { name: 'clinic-relay', key: relayKey, hosts: ['c3'], groups: ['clinic'] },
    { name: 'everything', key: `${'B'.repeat(43)}=`, hosts: ['*'], groups: [] },
  ],
});
const none = { hosts: [], relays: [], groups: [] };

test('a relay by name or key: its hosts and its groups, combined with --host and deduplicated', () => {
  const byName = siteHosts(policy, [], { ...none, relays: ['clinic-relay'], hosts: ['c1', 'x9'] });
  assert.equal(byName.ok && byName.hosts, ['c1', 'c2', 'c3', 'x9']);
  const byKey = siteHosts(policy, [], { ...none, relays: [relayKey] });
  assert.equal(byKey.ok && byKey.hosts, ['c1', 'c2', 'c3']);
});

test("a relay serving '*' serves every group member and enrolled host, and says so", () => {
  const all = siteHosts(policy, ['e1'], { ...none, relays: ['everything'] });
  assert.ok(all.ok);
  if (!all.ok) return;
  assert.equal(all.hosts, ['c1', 'c2', 'e1', 'prod-1']);
  assert.match(all.notes.join('\n'), "serves every host ('*')");
});

test('a group: its members; unknown relays and groups are refused by name', () => {
  const group = siteHosts(policy, [], { ...none, groups: ['production'] });
  assert.equal(group.ok && group.hosts, ['prod-1']);
  const relay = siteHosts(policy, [], { ...none, relays: ['nope'] });
  assert.is(relay.ok, false);
  assert.match(!relay.ok ? relay.reason : '', 'no relay named nope (relays: clinic-relay, everything)');
  const unknownGroup = siteHosts(policy, [], { ...none, groups: ['nope'] });
  assert.match(!unknownGroup.ok ? unknownGroup.reason : '', 'no group named nope (groups: production, clinic)');
});

test.run();
