import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nextAllowedStart } from '../../../../shared/schedule/window-rules.js';
import { inWindow, parseWindow } from '../../../../shared/schedule/windows.js';

const utc = (iso: string): number => Date.parse(iso);

test('windows: days, ranges past midnight, time zones; bad windows are refused with the fix', () => {
  const tuesday = [parseWindow('Tue 03:00-05:00')];
  // 2026-11-24 is a Tuesday.
  assert.ok(inWindow(tuesday, utc('2026-11-24T04:00:00Z'), 'UTC'));
  assert.not.ok(inWindow(tuesday, utc('2026-11-24T05:00:00Z'), 'UTC'), 'the end is exclusive');
  assert.not.ok(inWindow(tuesday, utc('2026-11-25T04:00:00Z'), 'UTC'), 'Wednesday');
  const nights = [parseWindow('Mon-Fri 22:00-06:00')];
  assert.ok(inWindow(nights, utc('2026-11-28T03:00:00Z'), 'UTC'), 'Saturday morning belongs to Friday night');
  assert.not.ok(inWindow(nights, utc('2026-11-28T23:00:00Z'), 'UTC'), 'Saturday night is not a start day');
  assert.not.ok(inWindow(nights, utc('2026-11-23T02:00:00Z'), 'UTC'), 'Monday morning belongs to Sunday night');
  const msf = [parseWindow('01:00-05:00')];
  assert.ok(inWindow(msf, utc('2026-11-24T00:30:00Z'), 'Africa/Kinshasa'), '01:30 in Kinshasa (UTC+1)');
  assert.not.ok(inWindow(msf, utc('2026-11-24T00:30:00Z'), 'UTC'));
  assert.ok(inWindow([], utc('2026-11-24T12:00:00Z')), 'no window: any time');
  assert.is(nextAllowedStart([], 0), null);
  assert.is(
    nextAllowedStart([{ source: 'flags', windows: tuesday, timeZone: 'UTC' }], utc('2026-11-24T05:30:00Z')),
    utc('2026-12-01T03:00:00Z'),
  );
  assert.is(
    nextAllowedStart([{ source: 'flags', windows: tuesday, timeZone: 'UTC' }], utc('2026-11-24T04:10:30Z')),
    utc('2026-11-24T04:10:30Z'),
    'inside: now',
  );
  // Europe/Berlin skips 02:00-03:00 on 2026-03-29: the next 02:30 is the day after.
  assert.is(
    nextAllowedStart(
      [{ source: 'flags', windows: [parseWindow('02:30-02:45')], timeZone: 'Europe/Berlin' }],
      utc('2026-03-28T23:00:00Z'),
    ),
    utc('2026-03-30T00:30:00Z'),
  );
  assert.throws(() => parseWindow('Tue 3:00-5:00'), /expected \[DAYS \]HH:MM-HH:MM/);
  assert.throws(() => parseWindow('Tus 03:00-05:00'), /unknown day "Tus"; use Mon/);
  assert.throws(() => parseWindow('03:00-03:00'), /is empty; for a whole day write 00:00-24:00/);
  assert.throws(() => parseWindow('25:00-26:00'), /25:00 is not a time of day/);
});

test.run();
