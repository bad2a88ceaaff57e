import { groupWindowsFor } from '../schedule/group-windows.js';
import { nextAllowedStart, type WindowSet } from '../schedule/window-rules.js';
import type { Group, Policy } from '../schemas/policy.js';

// How `outpost policy` shows and checks a group's maintenance and reboot windows.

export function groupWindowFields(group: Group): Pick<Group, 'maintenanceWindows' | 'rebootWindows' | 'timeZone'> {
  return {
    ...(group.maintenanceWindows ? { maintenanceWindows: group.maintenanceWindows } : {}),
    ...(group.rebootWindows ? { rebootWindows: group.rebootWindows } : {}),
    ...(group.timeZone !== undefined ? { timeZone: group.timeZone } : {}),
  };
}

export function hasWindows(group: Group): boolean {
  return (group.maintenanceWindows?.length ?? 0) + (group.rebootWindows?.length ?? 0) > 0;
}

// "maintenance Tue 03:00-05:00, Mon 16:00-18:00; reboot 01:00-05:00 (Africa/Kinshasa)"
export function describeGroupWindows(group: Group): string {
  const parts = [
    group.maintenanceWindows?.length ? `maintenance ${group.maintenanceWindows.join(', ')}` : '',
    group.rebootWindows?.length ? `reboot ${group.rebootWindows.join(', ')}` : '',
  ].filter(Boolean);
  if (!parts.length) return group.timeZone ? `no windows (time zone ${group.timeZone})` : 'no windows';
  return `${parts.join('; ')} (${group.timeZone ?? "each host's local time"})`;
}

// Windows of several groups combine by intersection (shared/schedule/window-rules.ts), so two
// groups whose windows never overlap leave their common hosts no time to work. Said when editing,
// not discovered at 3 a.m. Windows without a time zone are compared in UTC: on a host they are
// all in its one local time, so their overlap does not depend on which zone that is.
export function windowOverlapNotes(policy: Policy, hosts: string[], now = Date.now()): string[] {
  const notes = new Map<string, string>();
  for (const host of hosts) {
    const set = groupWindowsFor(policy, host);
    for (const kind of ['maintenance', 'reboot'] as const satisfies (keyof WindowSet)[]) {
      const rules = set[kind];
      if (rules.length < 2) continue;
      const key = `${kind} ${rules.map((r) => r.source).join(' ')}`;
      if (notes.has(key)) continue;
      const opens =
        nextAllowedStart(
          rules.map((r) => ({ ...r, timeZone: r.timeZone ?? 'UTC' })),
          now,
        ) !== null;
      notes.set(
        key,
        opens
          ? ''
          : `host ${host} is in ${rules.map((r) => r.source).join(' and ')}, whose ${kind} windows never overlap within a week: a host works only when all of its groups allow it, so its ${kind === 'reboot' ? 'reboots' : 'downloads and activations'} would never start`,
      );
    }
  }
  return [...notes.values()].filter(Boolean);
}
