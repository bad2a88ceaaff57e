import { z } from 'zod';

// Maintenance and reboot windows in host-local time, e.g. "Tue 03:00-05:00", "Mon-Fri 22:00-06:00"
// or "01:00-05:00" (every day). A window whose end is before its start runs past midnight and
// belongs to the day it starts on. Everything here is a pure function of the time given, so tests
// never depend on the wall clock. Shared: the agent parses its flags with it and the fleet policy
// validates its groups' windows with the same parser, so both accept exactly the same syntax.

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const;

export interface TimeWindow {
  text: string;
  // Days (0 = Sunday) the window may start on; null = every day.
  days: ReadonlySet<number> | null;
  startMinute: number;
  endMinute: number;
}

const WINDOW_PATTERN =
  /^(?:([A-Za-z]{3}(?:-[A-Za-z]{3})?(?:,[A-Za-z]{3}(?:-[A-Za-z]{3})?)*)\s+)?([0-2]\d):([0-5]\d)-([0-2]\d):([0-5]\d)$/;
const WINDOW_HINT =
  'expected [DAYS ]HH:MM-HH:MM in host-local time, e.g. "01:00-05:00", "Tue 03:00-05:00" or "Mon-Fri,Sun 22:00-06:00"';

function dayIndex(name: string, text: string): number {
  const index = DAY_NAMES.indexOf(name.toLowerCase() as (typeof DAY_NAMES)[number]);
  if (index < 0)
    throw new Error(
      `window ${JSON.stringify(text)}: unknown day ${JSON.stringify(name)}; use Mon, Tue, Wed, Thu, Fri, Sat or Sun`,
    );
  return index;
}

function parseDays(spec: string, text: string): Set<number> {
  const days = new Set<number>();
  for (const part of spec.split(',')) {
    const [from, to] = part.split('-');
    const first = dayIndex(from!, text);
    const last = to === undefined ? first : dayIndex(to, text);
    // Mon-Fri, and also Fri-Mon (wrapping over the weekend).
    for (let day = first; ; day = (day + 1) % 7) {
      days.add(day);
      if (day === last) break;
    }
  }
  return days;
}

export function parseWindow(text: string): TimeWindow {
  const match = WINDOW_PATTERN.exec(text.trim());
  if (!match) throw new Error(`window ${JSON.stringify(text)}: ${WINDOW_HINT}`);
  const minute = (h: string, m: string, allow24: boolean): number => {
    const value = Number(h) * 60 + Number(m);
    if (value > 24 * 60 || (value === 24 * 60 && !allow24))
      throw new Error(`window ${JSON.stringify(text)}: ${h}:${m} is not a time of day`);
    return value;
  };
  const startMinute = minute(match[2]!, match[3]!, false);
  const endMinute = minute(match[4]!, match[5]!, true);
  if (startMinute === endMinute)
    throw new Error(`window ${JSON.stringify(text)} is empty; for a whole day write 00:00-24:00`);
  return { text: text.trim(), days: match[1] ? parseDays(match[1], text) : null, startMinute, endMinute };
}

export const windowSchema = z.string().transform((text, ctx) => {
  try {
    return parseWindow(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
    return z.NEVER;
  }
});

export const TIME_ZONE_HINT = 'expected an IANA time zone such as Africa/Kinshasa or UTC';

export function isTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

export const timeZoneSchema = z.string().refine(isTimeZone, TIME_ZONE_HINT);

const formatters = new Map<string, Intl.DateTimeFormat>();
function formatter(timeZone: string | undefined): Intl.DateTimeFormat {
  const key = timeZone ?? '';
  let existing = formatters.get(key);
  if (!existing) {
    existing = new Intl.DateTimeFormat('en-US', {
      timeZone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(key, existing);
  }
  return existing;
}

// Day of week (0 = Sunday) and minute of the day at `ms`, in `timeZone` (default: the host's).
export function localTime(ms: number, timeZone?: string): { day: number; minute: number } {
  const parts = formatter(timeZone).formatToParts(new Date(ms));
  const get = (type: string): string => parts.find((p) => p.type === type)?.value ?? '';
  return { day: dayIndex(get('weekday'), 'Intl'), minute: Number(get('hour')) * 60 + Number(get('minute')) };
}

function contains(window: TimeWindow, day: number, minute: number): boolean {
  const startsOn = (d: number): boolean => window.days === null || window.days.has(d);
  if (window.startMinute < window.endMinute)
    return startsOn(day) && minute >= window.startMinute && minute < window.endMinute;
  // Past midnight: the evening part on a start day, or the morning part the day after one.
  return (startsOn(day) && minute >= window.startMinute) || (startsOn((day + 6) % 7) && minute < window.endMinute);
}

// No windows configured means "any time".
export function inWindow(windows: readonly TimeWindow[], ms: number, timeZone?: string): boolean {
  if (windows.length === 0) return true;
  const { day, minute } = localTime(ms, timeZone);
  return windows.some((w) => contains(w, day, minute));
}

// `ms` itself when allowed, else the first whole minute after it that is (null: none within 8 days).
export function firstAllowedMinute(ms: number, allowed: (t: number) => boolean): number | null {
  if (allowed(ms)) return ms;
  const limit = ms + 8 * 24 * 3_600_000;
  for (let t = Math.floor(ms / 60_000) * 60_000 + 60_000; t <= limit; t += 60_000) {
    if (allowed(t)) return t;
  }
  return null;
}

export function describeWindows(windows: readonly TimeWindow[], timeZone?: string): string {
  return `${windows.map((w) => w.text).join(', ')} (${timeZone ?? 'host-local time'})`;
}
