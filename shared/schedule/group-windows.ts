import type { Group, Policy } from '../schemas/policy.js';
import { NO_WINDOWS, type WindowRule, type WindowSet } from './window-rules.js';
import { parseWindow } from './windows.js';

// One rule per group of `host` that defines windows of that kind, in policy order. The policy
// schema has already checked every window, so parsing here cannot fail for a policy readers accept.
export function groupWindowsFor(policy: Policy | undefined, host: string): WindowSet {
  if (!policy) return NO_WINDOWS;
  const groups = policy.groups.filter((group) => group.hosts.includes(host));
  const rules = (field: 'maintenanceWindows' | 'rebootWindows'): WindowRule[] =>
    groups.filter((group) => (group[field]?.length ?? 0) > 0).map((group) => groupRule(group, group[field]!));
  return { maintenance: rules('maintenanceWindows'), reboot: rules('rebootWindows') };
}

function groupRule(group: Group, windows: string[]): WindowRule {
  return {
    source: `group ${group.name}`,
    windows: windows.map(parseWindow),
    ...(group.timeZone ? { timeZone: group.timeZone } : {}),
  };
}
