import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseOptions, UsageError } from '../../../cli/options.js';
import { DEFAULT_ENROLLMENT_LIMITS } from '../../../coordinator/enrollment-limits.js';
import { enrollmentLimitsFromOptions, limitsFromOptions } from '../../../coordinator/limit-flags.js';
import { DEFAULT_LIMITS } from '../../../coordinator/limits.js';
import { coordinatorCommand } from '../../../coordinator/options.js';

// The limit flags reach the limits the server enforces, in the server's units (ms), and the
// defaults without flags are the server's own defaults (one declaration each).

const parse = (argv: string[]) => {
  const parsed = parseOptions(coordinatorCommand, ['--data-dir', '/tmp/x', ...argv], {});
  if (parsed.help) throw new Error('expected options, got --help');
  return parsed.value;
};

test('without flags the coordinator runs with the built-in limits', () => {
  const options = parse([]);
  assert.equal(limitsFromOptions(options), DEFAULT_LIMITS);
  assert.equal({ ...DEFAULT_ENROLLMENT_LIMITS, ...enrollmentLimitsFromOptions(options) }, DEFAULT_ENROLLMENT_LIMITS);
});

test('enrollment flags become the enrollment gate limits', () => {
  const options = parse([
    '--enroll-burst',
    '5',
    '--enroll-refill',
    '0.5',
    '--max-pending-enrollments',
    '12',
    '--pending-enrollment-ttl',
    '3600',
  ]);
  assert.equal(enrollmentLimitsFromOptions(options), {
    perSourceBurst: 5,
    perSourceRefillMs: 500,
    maxPending: 12,
    pendingTtlMs: 3_600_000,
  });
});

test('a bad enrollment limit is refused naming the flag', () => {
  for (const argv of [
    ['--max-pending-enrollments', '0'],
    ['--enroll-burst', 'lots'],
    ['--pending-enrollment-ttl', '-1'],
  ]) {
    try {
      parse(argv);
      assert.unreachable(`${argv.join(' ')} was accepted`);
    } catch (error) {
      assert.instance(error, UsageError);
      assert.match((error as Error).message, argv[0]!);
    }
  }
});

test.run();
