import { type Capability, isCapability, type Policy } from '../schemas/policy.js';

export interface PolicyAdmin {
  name: string;
  keys: string[];
  roles: string[];
}

// The admin a key belongs to under this policy, unless the key is revoked.
export function adminForKey(policy: Policy, key: string): PolicyAdmin | null {
  if (policy.revokedKeys.includes(key)) return null;
  return policy.admins.find((admin) => admin.keys.includes(key)) ?? null;
}

export function groupsOfHost(policy: Policy, host: string): string[] {
  return policy.groups.filter((group) => group.hosts.includes(host)).map((group) => group.name);
}

export function capabilitiesFor(policy: Policy, admin: PolicyAdmin, host: string): Set<Capability> {
  const groups = new Set(groupsOfHost(policy, host));
  const capabilities = new Set<Capability>();
  for (const role of policy.roles) {
    if (!admin.roles.includes(role.name)) continue;
    const covers = role.hosts.includes('*') || role.hosts.includes(host) || role.groups.some((g) => groups.has(g));
    if (covers) for (const capability of role.capabilities) if (isCapability(capability)) capabilities.add(capability);
  }
  return capabilities;
}

// An admin reads a host's documents live when a role gives them any capability on that host but
// `audit`: `read` scoped to h1 reads h1, not h2 (deploy or rollback on a host imply reading what
// they act on).
export function mayReadHost(policy: Policy, admin: PolicyAdmin, host: string): boolean {
  return [...capabilitiesFor(policy, admin, host)].some((capability) => capability !== 'audit');
}

// An admin reads a host's logged history with `audit` on it, or with live read access: whoever
// reads the documents live could have kept every change anyway. `audit` alone opens no live
// document, so an auditor can be given the history without a view into (or a hand on) the fleet.
export function mayAuditHost(policy: Policy, admin: PolicyAdmin, host: string): boolean {
  return capabilitiesFor(policy, admin, host).has('audit') || mayReadHost(policy, admin, host);
}

// Every host, including hosts not enrolled yet: a role of the admin covers '*'.
export function mayAuditEveryHost(policy: Policy, admin: PolicyAdmin): boolean {
  return policy.roles.some((role) => admin.roles.includes(role.name) && role.hosts.includes('*'));
}

// "production needs 2 of N admins": the strictest group a host is in decides.
export function signatureThreshold(policy: Policy, host: string): number {
  return policy.groups
    .filter((group) => group.hosts.includes(host))
    .reduce((max, group) => Math.max(max, group.threshold), 1);
}

export function relayServesHost(policy: Policy, relayKey: string, host: string): boolean {
  const groups = new Set(groupsOfHost(policy, host));
  return policy.relays.some(
    (relay) =>
      relay.key === relayKey &&
      (relay.hosts.includes('*') || relay.hosts.includes(host) || relay.groups.some((g) => groups.has(g))),
  );
}
