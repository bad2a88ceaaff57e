import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MAX_THRESHOLD, thresholdSchema } from '../../../admin/policy-cli-kit.js';
import { signedIntentSchema } from '../../../shared/schemas/intent.js';

test('a threshold no intent could meet is refused when the policy is written, saying why', () => {
  assert.is(thresholdSchema.parse('16'), 16);
  const refused = thresholdSchema.safeParse('17');
  assert.not.ok(refused.success);
  assert.match(
    refused.error!.issues[0]!.message,
    /at most 16: an intent, plan or policy carries at most 16 signatures/,
  );
  assert.not.ok(thresholdSchema.safeParse('0').success);
});

test('the bound is the number of signatures a signed intent may carry', () => {
  const tooMany = (count: number): boolean => {
    const parsed = signedIntentSchema.safeParse({ intent: {}, signatures: Array(count).fill({}) });
    return (
      !parsed.success && parsed.error.issues.some((i) => i.path.join('.') === 'signatures' && i.code === 'too_big')
    );
  };
  assert.not.ok(tooMany(MAX_THRESHOLD));
  assert.ok(tooMany(MAX_THRESHOLD + 1));
});

test.run();
