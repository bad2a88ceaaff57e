import type { Policy } from '../schemas/policy.js';

// Which hosts a site is (issue 16: "a relay id, a policy group or a host list"), from the policy
// in force as walked from the pinned org root: a relay's hosts and groups, a group's members, and
// hosts named outright. A relay serving '*' serves every host the fleet knows: every group member
// and every enrolled host.

export interface SiteSelection {
  hosts: readonly string[];
  // By the relay's name in the policy, or its public key.
  relays: readonly string[];
  groups: readonly string[];
}

export type SiteHosts = { ok: true; hosts: string[]; notes: string[] } | { ok: false; reason: string };

function list(names: string[]): string {
  if (names.length === 0) return 'none';
  return names.slice(0, 20).join(', ') + (names.length > 20 ? ', …' : '');
}

export function siteHosts(policy: Policy, enrolledHosts: Iterable<string>, selection: SiteSelection): SiteHosts {
  const hosts = new Set(selection.hosts);
  const notes: string[] = [];
  const groupMembers = (name: string): string[] | null => policy.groups.find((g) => g.name === name)?.hosts ?? null;
  const everyHost = (): string[] => [...new Set([...policy.groups.flatMap((g) => g.hosts), ...enrolledHosts])];
  for (const wanted of selection.relays) {
    const relay = policy.relays.find((r) => r.name === wanted || r.key === wanted);
    if (!relay)
      return {
        ok: false,
        reason: `policy version ${policy.version} (walked from --org-root) has no relay named ${wanted} (relays: ${list(policy.relays.map((r) => r.name))}); check the name with 'outpost policy show', or name the hosts with --host`,
      };
    const served = new Set<string>();
    for (const host of relay.hosts) {
      if (host === '*') for (const h of everyHost()) served.add(h);
      else served.add(host);
    }
    for (const group of relay.groups) {
      const members = groupMembers(group);
      if (members) for (const h of members) served.add(h);
      else
        notes.push(`relay ${relay.name} names group ${group}, which policy version ${policy.version} does not define`);
    }
    if (relay.hosts.includes('*'))
      notes.push(`relay ${relay.name} serves every host ('*'): every group member and enrolled host is bundled`);
    notes.push(`relay ${relay.name}: ${served.size} host${served.size === 1 ? '' : 's'} (${list([...served].sort())})`);
    for (const h of served) hosts.add(h);
  }
  for (const group of selection.groups) {
    const members = groupMembers(group);
    if (!members)
      return {
        ok: false,
        reason: `policy version ${policy.version} (walked from --org-root) has no group named ${group} (groups: ${list(policy.groups.map((g) => g.name))}); check the name with 'outpost policy show', or name the hosts with --host`,
      };
    notes.push(
      `group ${group}: ${members.length} host${members.length === 1 ? '' : 's'} (${list([...members].sort())})`,
    );
    for (const h of members) hosts.add(h);
  }
  if (hosts.size === 0)
    return {
      ok: false,
      reason: `the site has no hosts under policy version ${policy.version} (${[...selection.relays.map((r) => `relay ${r}`), ...selection.groups.map((g) => `group ${g}`)].join(', ')}): add hosts to the policy, or name them with --host`,
    };
  return { ok: true, hosts: [...hosts].sort(), notes };
}
