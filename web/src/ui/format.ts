// Small text helpers for the views.
export function ago(iso: string | number | null, now: number): string {
  if (iso === null) return 'never';
  const at = typeof iso === 'number' ? iso : Date.parse(iso);
  if (!Number.isFinite(at)) return 'unknown';
  const seconds = Math.max(0, Math.round((now - at) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.round(hours / 24)} d ago`;
}

export function clock(at: string | number): string {
  const date = new Date(at);
  return Number.isFinite(date.getTime()) ? date.toLocaleString() : String(at);
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

// /nix/store/<hash>-name → name (the hash is in the tooltip).
export function closureName(path: string): string {
  const base = path.replace(/^\/nix\/store\//, '');
  return base.slice(33) || base;
}

export const shortKey = (key: string): string => `${key.slice(0, 10)}…`;

export function until(iso: string | null, now: number): string {
  if (iso === null) return 'no window within a week';
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return 'unknown';
  if (at <= now) return 'now';
  return `in ${ago(now - (at - now), now).replace(' ago', '')}`;
}
