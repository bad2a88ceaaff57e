import type { z } from 'zod';
import { isKnownSshKeyType, type Login, parseSshPublicKey } from '../schemas/logins.js';
import { type Capability, type Group, type Policy, policySchema } from '../schemas/policy.js';
import { describeGroupWindows, groupWindowFields, hasWindows, windowOverlapNotes } from './group-windows.js';

// Edits of a draft policy as plain functions: each returns the edited policy, a one-line summary
// and notes for the operator, or throws saying what is wrong and how to fix it. Every result is
// validated whole with the schema every reader uses, so a file the CLI writes is one readers parse.
export interface Edited {
  policy: Policy;
  summary: string;
  notes: string[];
}

function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`).join('; ');
}

export const short = (key: string): string => `${key.slice(0, 12)}…`;

export function checkedPolicy(candidate: Policy): Policy {
  const parsed = policySchema.safeParse(candidate);
  if (!parsed.success)
    throw new Error(`the policy would be invalid, nothing was written: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

function refuseRevoked(policy: Policy, keys: string[], what: string): void {
  const revoked = keys.filter((k) => policy.revokedKeys.includes(k));
  if (revoked.length)
    throw new Error(
      `${what}: key ${revoked.map(short).join(', ')} is revoked in this policy and can never count again; use a new key (outpost keygen)`,
    );
}

function refuseUnknown(
  kind: 'group' | 'role' | 'login',
  names: string[],
  known: { name: string }[],
  what: string,
): void {
  const unknown = names.filter((n) => !known.some((k) => k.name === n));
  if (unknown.length)
    throw new Error(
      `${what} names unknown ${kind} ${unknown.join(', ')}; define it first with 'outpost policy add-${kind}'`,
    );
}

function upsert<T extends { name: string }>(list: T[], item: T): { list: T[]; replaced: boolean } {
  const index = list.findIndex((x) => x.name === item.name);
  if (index < 0) return { list: [...list, item], replaced: false };
  return { list: list.map((x, i) => (i === index ? item : x)), replaced: true };
}

const unique = <T>(items: T[]): T[] => [...new Set(items)];

// An existing admin gains the keys and roles: that is how an admin key is rotated (add the new
// key, then revoke-key the old one) without restating the admin's roles.
export function addAdmin(policy: Policy, admin: { name: string; keys: string[]; roles: string[] }): Edited {
  refuseRevoked(policy, admin.keys, `admin ${admin.name}`);
  refuseUnknown('role', admin.roles, policy.roles, `admin ${admin.name}`);
  const existing = policy.admins.find((a) => a.name === admin.name);
  const merged = {
    name: admin.name,
    keys: unique([...(existing?.keys ?? []), ...admin.keys]),
    roles: unique([...(existing?.roles ?? []), ...admin.roles]),
  };
  const notes =
    merged.roles.length === 0 ? [`admin ${admin.name} has no role yet, so no capability; give one with --role`] : [];
  return {
    policy: checkedPolicy({ ...policy, admins: upsert(policy.admins, merged).list }),
    summary: existing
      ? `admin ${admin.name} now has keys ${merged.keys.map(short).join(', ')} and roles ${merged.roles.join(', ') || '(none)'}`
      : `added admin ${admin.name} with roles ${merged.roles.join(', ') || '(none)'}`,
    notes,
  };
}

export function removeAdmin(policy: Policy, name: string): Edited {
  const admin = policy.admins.find((a) => a.name === name);
  if (!admin)
    throw new Error(
      `there is no admin ${name}; the admins are ${policy.admins.map((a) => a.name).join(', ') || '(none)'}`,
    );
  return {
    policy: checkedPolicy({ ...policy, admins: policy.admins.filter((a) => a.name !== name) }),
    summary: `removed admin ${name}`,
    // Removal only affects this version: intents naming an older version would still count.
    notes: admin.keys.length
      ? [
          `${name}'s keys are not revoked: an intent signed under an older policy version still counts; if a key is compromised, also run 'outpost policy revoke-key'`,
        ]
      : [],
  };
}

export function addRole(
  policy: Policy,
  role: { name: string; capabilities: Capability[]; hosts: string[]; groups: string[] },
): Edited {
  refuseUnknown('group', role.groups, policy.groups, `role ${role.name}`);
  const entry = {
    name: role.name,
    capabilities: unique(role.capabilities),
    hosts: unique(role.hosts),
    groups: unique(role.groups),
  };
  const { list, replaced } = upsert(policy.roles, entry);
  const scope = [
    entry.hosts.length ? `hosts ${entry.hosts.join(', ')}` : '',
    entry.groups.length ? `groups ${entry.groups.join(', ')}` : '',
  ]
    .filter(Boolean)
    .join(' and ');
  return {
    policy: checkedPolicy({ ...policy, roles: list }),
    summary: `${replaced ? 'replaced' : 'added'} role ${role.name}: ${entry.capabilities.join(', ')} on ${scope || 'no host'}`,
    notes: scope ? [] : [`role ${role.name} names no --host or --group, so its capabilities cover no host`],
  };
}

// Replacing a group keeps its windows and time zone: changing who is in a group must not quietly
// lift the hours its hosts may be worked on (set-group-windows changes those).
export function addGroup(policy: Policy, group: { name: string; hosts: string[]; threshold: number }): Edited {
  const existing = policy.groups.find((g) => g.name === group.name);
  const entry: Group = {
    ...(existing ? groupWindowFields(existing) : {}),
    name: group.name,
    hosts: unique(group.hosts),
    threshold: group.threshold,
  };
  const { list, replaced } = upsert(policy.groups, entry);
  const edited = checkedPolicy({ ...policy, groups: list });
  const kept =
    existing && hasWindows(existing)
      ? [
          `group ${group.name} keeps its windows (${describeGroupWindows(existing)}); change them with 'outpost policy set-group-windows'`,
        ]
      : [];
  return {
    policy: edited,
    summary: `${replaced ? 'replaced' : 'added'} group ${group.name}: ${entry.hosts.join(', ')} (intents need ${entry.threshold} admin signature${entry.threshold === 1 ? '' : 's'})`,
    notes: [...kept, ...windowOverlapNotes(edited, entry.hosts)],
  };
}

export interface GroupWindowsEdit {
  name: string;
  maintenanceWindows: string[];
  rebootWindows: string[];
  timeZone?: string;
}

// Sets all of a group's windows and its time zone at once (the flags given are the whole new
// setting), so the command line always says exactly what the group ends up with.
export function setGroupWindows(policy: Policy, edit: GroupWindowsEdit): Edited {
  const existing = policy.groups.find((g) => g.name === edit.name);
  if (!existing)
    throw new Error(
      `there is no group ${edit.name}; the groups are ${policy.groups.map((g) => g.name).join(', ') || '(none)'}; define it first with 'outpost policy add-group'`,
    );
  const { maintenanceWindows: _m, rebootWindows: _r, timeZone: _z, ...rest } = existing;
  const entry: Group = {
    ...rest,
    ...(edit.maintenanceWindows.length ? { maintenanceWindows: unique(edit.maintenanceWindows) } : {}),
    ...(edit.rebootWindows.length ? { rebootWindows: unique(edit.rebootWindows) } : {}),
    ...(edit.timeZone !== undefined ? { timeZone: edit.timeZone } : {}),
  };
  const edited = checkedPolicy({ ...policy, groups: upsert(policy.groups, entry).list });
  const notes = [
    ...(hasWindows(entry)
      ? []
      : [
          `group ${edit.name} now has no windows: its hosts work and reboot at any time, unless their own --maintenance-window/--reboot-window say otherwise`,
        ]),
    ...(entry.timeZone === undefined && hasWindows(entry)
      ? [`no --timezone: each host reads these windows in its own --timezone, else its local time`]
      : []),
    `a host's own --maintenance-window/--reboot-window flags win over these; a host in several groups with windows works only when every one of them allows it`,
    ...windowOverlapNotes(edited, entry.hosts),
  ];
  return {
    policy: edited,
    summary: `group ${edit.name}: ${hasWindows(entry) ? describeGroupWindows(entry) : 'no windows'}`,
    notes,
  };
}

export function addRelay(
  policy: Policy,
  relay: { name: string; key: string; hosts: string[]; groups: string[] },
): Edited {
  refuseRevoked(policy, [relay.key], `relay ${relay.name}`);
  // The schema does not check relay groups (roles' groups it does); a typo would silently serve nothing.
  refuseUnknown('group', relay.groups, policy.groups, `relay ${relay.name}`);
  const { list, replaced } = upsert(policy.relays, {
    name: relay.name,
    key: relay.key,
    hosts: unique(relay.hosts),
    groups: unique(relay.groups),
  });
  return {
    policy: checkedPolicy({ ...policy, relays: list }),
    summary: `${replaced ? 'replaced' : 'added'} relay ${relay.name} (${short(relay.key)})`,
    notes:
      relay.hosts.length + relay.groups.length
        ? []
        : [`relay ${relay.name} serves no host yet; give --host or --group`],
  };
}

export function addTimestampKey(policy: Policy, key: string): Edited {
  refuseRevoked(policy, [key], 'timestamp key');
  if (policy.timestampKeys.includes(key))
    throw new Error(`key ${short(key)} already is a timestamp key of this policy`);
  return {
    policy: checkedPolicy({ ...policy, timestampKeys: [...policy.timestampKeys, key] }),
    summary: `added timestamp key ${short(key)}`,
    notes: [],
  };
}

// A revoked key loses every power it had in this policy and can never count again, even for
// intents that name an older version.
export function revokeKey(policy: Policy, key: string): Edited {
  if (policy.root.keys.includes(key))
    throw new Error(
      `key ${short(key)} is a root key of this policy; replace it first with 'outpost policy rotate-root', then revoke it`,
    );
  if (policy.revokedKeys.includes(key)) throw new Error(`key ${short(key)} is already revoked`);
  const notes: string[] = [];
  const admins = policy.admins.map((a) => {
    if (!a.keys.includes(key)) return a;
    notes.push(
      `removed the key from admin ${a.name}${a.keys.length === 1 ? `, who now has no key; add a new one with 'outpost policy add-admin --name ${a.name} --key NEW'` : ''}`,
    );
    return { ...a, keys: a.keys.filter((k) => k !== key) };
  });
  const relays = policy.relays.filter((r) => r.key !== key);
  for (const r of policy.relays) if (r.key === key) notes.push(`removed relay ${r.name}`);
  if (policy.timestampKeys.includes(key)) notes.push('removed it from the timestamp keys');
  return {
    policy: checkedPolicy({
      ...policy,
      admins,
      relays,
      timestampKeys: policy.timestampKeys.filter((k) => k !== key),
      revokedKeys: [...policy.revokedKeys, key],
    }),
    summary: `revoked key ${short(key)}`,
    notes,
  };
}

// A login is replaced whole (like a role): the command line says exactly which keys it ends up
// with, so dropping one of a person's keys is the same command without it.
export function addLogin(
  policy: Policy,
  login: { name: string; account: string; sshKeys: string[]; hosts: string[]; groups: string[] },
): Edited {
  refuseUnknown('group', login.groups, policy.groups, `login ${login.name}`);
  for (const text of login.sshKeys) {
    const parsed = parseSshPublicKey(text);
    if (!parsed.ok) throw new Error(`login ${login.name}: ${parsed.reason}`);
    if (!isKnownSshKeyType(parsed.key.type))
      throw new Error(
        `login ${login.name}: key type ${parsed.key.type} is not one this outpost writes (ssh-ed25519, ecdsa-sha2-nistp256/384/521, sk-ssh-ed25519@openssh.com, sk-ecdsa-sha2-nistp256@openssh.com, ssh-rsa)`,
      );
  }
  const existing = policy.logins?.find((l) => l.name === login.name);
  const entry: Login = {
    name: login.name,
    account: login.account,
    sshKeys: unique(login.sshKeys),
    ...(login.hosts.length ? { hosts: unique(login.hosts) } : {}),
    ...(login.groups.length ? { groups: unique(login.groups) } : {}),
  };
  const { list, replaced } = upsert(policy.logins ?? [], entry);
  const scope = [
    entry.hosts ? `hosts ${entry.hosts.join(', ')}` : '',
    entry.groups ? `groups ${entry.groups.join(', ')}` : '',
  ]
    .filter(Boolean)
    .join(' and ');
  const keyOf = (text: string): string => text.split(' ').slice(0, 2).join(' ');
  const shared = (policy.logins ?? [])
    .filter((l) => l.name !== login.name && l.sshKeys.some((k) => entry.sshKeys.some((e) => keyOf(e) === keyOf(k))))
    .map((l) => l.name);
  const dropped = existing ? existing.sshKeys.filter((k) => !entry.sshKeys.some((e) => keyOf(e) === keyOf(k))) : [];
  return {
    policy: checkedPolicy({ ...policy, logins: list }),
    summary: `${replaced ? 'replaced' : 'added'} login ${login.name}: account ${entry.account} with ${entry.sshKeys.length} key${entry.sshKeys.length === 1 ? '' : 's'} on ${scope || 'no host'}`,
    notes: [
      ...(scope ? [] : [`login ${login.name} names no --host or --group, so it lets no one log in anywhere`]),
      ...(dropped.length
        ? [
            `login ${login.name} no longer has ${dropped.length} key${dropped.length === 1 ? '' : 's'} it had: hosts remove ${dropped.length === 1 ? 'it' : 'them'} when this version arrives`,
          ]
        : []),
      ...(shared.length ? [`the same key is also in login ${shared.join(', ')}`] : []),
      ...(existing && existing.account !== entry.account
        ? [`login ${login.name} moves from account ${existing.account} to ${entry.account}`]
        : []),
    ],
  };
}

export function removeLogin(policy: Policy, name: string): Edited {
  const existing = policy.logins?.find((l) => l.name === name);
  if (!existing)
    throw new Error(
      `there is no login ${name}; the logins are ${(policy.logins ?? []).map((l) => l.name).join(', ') || '(none)'}`,
    );
  return {
    policy: checkedPolicy({ ...policy, logins: (policy.logins ?? []).filter((l) => l.name !== name) }),
    summary: `removed login ${name} (account ${existing.account}, ${existing.sshKeys.length} key${existing.sshKeys.length === 1 ? '' : 's'})`,
    notes: [
      `hosts remove ${name}'s keys when this version arrives; the signed status of each host says which policy version its login keys come from ('outpost status --host ID')`,
    ],
  };
}

export function rotateRoot(policy: Policy, root: Policy['root']): Edited {
  refuseRevoked(policy, root.keys, 'root');
  const keys = unique(root.keys);
  return {
    policy: checkedPolicy({ ...policy, root: { keys, threshold: root.threshold } }),
    summary: `version ${policy.version} now has root ${root.threshold} of ${keys.map(short).join(', ')} (was ${policy.root.threshold} of ${policy.root.keys.map(short).join(', ')})`,
    notes: [
      `version ${policy.version} must be signed by the threshold of BOTH the previous version's root and the new root (${root.threshold} of ${keys.length} key${keys.length === 1 ? '' : 's'}): readers walking from version ${policy.version - 1} refuse it otherwise`,
      `check with 'outpost policy verify --policy FILE --previous PREVIOUS-FILE' before pushing`,
    ],
  };
}

// The web editor's root form: keys separated by spaces or commas, and the threshold (empty: the
// current one). Refused with what to type, never a policy the schema would reject later.
export function parseRootForm(keysText: string, thresholdText: string, current: Policy['root']): Policy['root'] {
  const keys = unique(
    keysText
      .split(/[\s,]+/)
      .map((k) => k.trim())
      .filter(Boolean),
  );
  if (keys.length === 0)
    throw new Error('name the new root keys (base64 Ed25519 public keys, separated by spaces or commas)');
  const threshold = thresholdText.trim() === '' ? current.threshold : Number(thresholdText.trim());
  if (!Number.isInteger(threshold) || threshold < 1 || threshold > keys.length)
    throw new Error(
      `the threshold must be a whole number from 1 to ${keys.length} (the number of root keys named); got ${JSON.stringify(thresholdText.trim() || String(current.threshold))}`,
    );
  return { keys, threshold };
}

// The next version keeps the content: the edits that follow say what changes.
export function nextVersion(policy: Policy, now: Date, raiseEpoch: boolean): Policy {
  return checkedPolicy({
    ...policy,
    version: policy.version + 1,
    epoch: policy.epoch + (raiseEpoch ? 1 : 0),
    issuedAt: now.toISOString(),
  });
}
