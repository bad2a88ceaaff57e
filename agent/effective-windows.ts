import type { WindowRule } from '../shared/schedule/window-rules.js';
import type { TimeWindow } from '../shared/schedule/windows.js';
import type { ResolvedAgentConfig } from './config.js';

export type WindowKind = 'maintenance' | 'reboot';

// The host's own flags win over its groups' windows, kind by kind: --maintenance-window replaces
// every group's maintenance windows (the operator at this host knows something the policy does
// not, e.g. a clinic that is open at night), while the groups' reboot windows still apply unless
// --reboot-window is given too. Group windows without a time zone are in the host's --timezone,
// else its local time: "01:00-05:00 host-local" means the same for every host of the group.
export function effectiveRules(
  own: TimeWindow[],
  timeZone: string | undefined,
  groups: readonly WindowRule[],
): WindowRule[] {
  if (own.length > 0) return [{ source: 'agent flags', windows: own, ...(timeZone ? { timeZone } : {}) }];
  return groups.map((rule) => {
    const zone = rule.timeZone ?? timeZone;
    return { source: rule.source, windows: rule.windows, ...(zone ? { timeZone: zone } : {}) };
  });
}

// Asked anew at every decision, so a new policy version takes effect without a restart.
export function windowRules(config: ResolvedAgentConfig, kind: WindowKind): WindowRule[] {
  const own = kind === 'reboot' ? config.rebootWindows : config.maintenanceWindows;
  return effectiveRules(own, config.timeZone, config.trust.windowsFor(config.host)[kind]);
}

export const kindOf = (waitingFor: 'download' | 'activation' | 'reboot' | null): WindowKind =>
  waitingFor === 'reboot' ? 'reboot' : 'maintenance';
