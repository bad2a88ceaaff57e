import { z } from 'zod';

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

// "90", "90s", "15m", "12h", "7d", "2w" → seconds.
export const durationSchema = z
  .string()
  .regex(/^\d+(\.\d+)?[smhdw]?$/, 'expected a duration such as 3600, 90s, 15m, 12h, 7d or 2w')
  .transform((text) => {
    const unit = /[smhdw]$/.test(text) ? text.slice(-1) : 's';
    return Number.parseFloat(text) * UNITS[unit]!;
  });
