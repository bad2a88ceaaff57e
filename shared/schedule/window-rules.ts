import { describeWindows, firstAllowedMinute, inWindow, type TimeWindow } from './windows.js';

// The windows one kind of work (downloads and activations, or reboots) may start in, as rules from
// one source each: the agent's own flags, or one policy group the host belongs to. A moment is
// allowed only when EVERY rule allows it (intersection). Group windows are restrictions an operator
// placed on a set of hosts ("production: weekends only", "Kinshasa clinics: 01:00-05:00"); a host
// in both groups must honour both. With a union, adding a host to a group with a broad window
// would silently widen when its other groups' hosts may be touched: the surprise a cautious fleet
// operator does not want. Rules that never overlap leave no start within a week, which the status
// shows (nextStart null) rather than working outside a window someone asked for.
export interface WindowRule {
  // "agent flags" or "group NAME": named in the status and the logs.
  source: string;
  // Any of these (a rule is a union of its own windows, as on the agent's command line).
  windows: TimeWindow[];
  // IANA zone the windows are in; undefined: the host's local time.
  timeZone?: string;
}

// The agent's own flags, or one group of a policy.
export interface WindowSet {
  maintenance: WindowRule[];
  reboot: WindowRule[];
}

export const NO_WINDOWS: WindowSet = { maintenance: [], reboot: [] };

// No rules: any time.
export function rulesAllow(rules: readonly WindowRule[], ms: number): boolean {
  return rules.every((rule) => inWindow(rule.windows, ms, rule.timeZone));
}

// `ms` when allowed now, else the first minute every rule allows (null: none within 8 days, or no rules).
export function nextAllowedStart(rules: readonly WindowRule[], ms: number): number | null {
  if (rules.length === 0) return null;
  return firstAllowedMinute(ms, (t) => rulesAllow(rules, t));
}

// The status field `window.windows` holds at most 1000 characters.
const DESCRIPTION_LIMIT = 1000;

export function describeRules(rules: readonly WindowRule[]): string {
  if (rules.length === 0) return 'any time';
  const text = rules.map((rule) => `${rule.source}: ${describeWindows(rule.windows, rule.timeZone)}`).join(' AND ');
  return text.length <= DESCRIPTION_LIMIT ? text : `${text.slice(0, DESCRIPTION_LIMIT - 1)}…`;
}
