import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { agentCommand } from '../../../agent/options.js';
import { parseOptions } from '../../../cli/options.js';

test('trust flags: --org-root or --admin-key (not both, not neither), a token only with a policy, backoff bounds', () => {
  const base = [
    '--host',
    'h',
    '--key',
    'k',
    '--coordinator',
    'ws://x',
    '--substituter',
    'http://c',
    '--trusted-cache-key',
    `c-1:${'B'.repeat(43)}=`,
  ];
  const key = `${'A'.repeat(43)}=`;
  const parsed = parseOptions(agentCommand, [
    ...base,
    '--org-root',
    key,
    '--enroll-token',
    't.json',
    '--freeze-after',
    '3600',
    '--backoff-max',
    '600',
  ]);
  assert.ok(
    !parsed.help &&
      parsed.value.orgRoot[0] === key &&
      parsed.value.freezeAfter === 3600 &&
      parsed.value.backoffMax === 600 &&
      parsed.value.backoffBase === 1,
  );
  assert.throws(
    () => parseOptions(agentCommand, base),
    /--org-root: give --org-root .* or, without a policy, at least one --admin-key/,
  );
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--org-root', key, '--admin-key', key]),
    /--admin-key: give --org-root or --admin-key, not both/,
  );
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--admin-key', key, '--enroll-token', 't.json']),
    /--enroll-token: an enrollment token needs --org-root/,
  );
  assert.throws(
    () => parseOptions(agentCommand, [...base, '--admin-key', key, '--backoff-base', '60', '--backoff-max', '30']),
    /--backoff-base: must not exceed --backoff-max/,
  );
});

test.run();
