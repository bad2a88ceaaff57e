import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { agentCommand } from '../../../agent/options.js';
import { parseOptions } from '../../../cli/options.js';

test('agent flags: windows, sizes and time zones are validated at start with the flag named', () => {
  const base = [
    '--host',
    'h',
    '--key',
    'k',
    '--coordinator',
    'ws://x',
    '--admin-key',
    `${'A'.repeat(43)}=`,
    '--substituter',
    'http://c',
    '--trusted-cache-key',
    `c-1:${'B'.repeat(43)}=`,
  ];
  const parsed = parseOptions(agentCommand, [
    ...base,
    '--maintenance-window',
    'Tue 03:00-05:00',
    '--max-closure-size',
    '64G',
    '--min-free-space',
    '512M',
  ]);
  assert.ok(!parsed.help);
  if (!parsed.help) {
    assert.is(parsed.value.maxClosureSize, 64 * 2 ** 30);
    assert.is(parsed.value.minFreeSpace, 512 * 2 ** 20);
    assert.is(parsed.value.maintenanceWindow[0]?.startMinute, 180);
    assert.is(parsed.value.requireSystemRunning, 'auto');
  }
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--maintenance-window', 'Tuesday 3-5']),
    /--maintenance-window: window "Tuesday 3-5"/,
  );
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--timezone', 'Mars/Olympus']),
    /--timezone: expected an IANA time zone/,
  );
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--max-closure-size', 'lots']),
    /--max-closure-size: expected a byte count/,
  );
});

test.run();
