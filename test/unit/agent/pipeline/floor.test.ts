import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rebuildFloor } from '../../../../agent/pipeline/floor.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Result, SignedResult } from '../../../../shared/schemas/report.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../../shared/trust/verify-intent.js';

test("floor rebuild (threat 14): from the host's own signed results only, refusals do not raise it, epochs rank first, the running system sets applied", () => {
  const hostKey = generateSigningKey('h1');
  const stranger = generateSigningKey('stranger');
  const admin = generateSigningKey('alice');
  const closure = (c: string): string => `/nix/store/${c.repeat(32)}-nixos-system`;
  const intent = (generation: number, c: string, policyVersion: number) =>
    signIntent(
      {
        kind: 'intent',
        host: 'h1',
        generation,
        closure: closure(c),
        action: 'switch',
        issuedAt: new Date(0).toISOString(),
        expiresAt: new Date(1e13).toISOString(),
        issuer: 'alice',
        policyVersion,
      },
      admin,
    );
  const intents = [intent(1, 'a', 1), intent(2, 'b', 1), intent(1, 'c', 2), intent(50, 'd', 1)];
  const result = (
    seq: number,
    outcome: Result['outcome'],
    signed: (typeof intents)[number],
    key = hostKey,
  ): SignedResult => {
    const r: Result = {
      kind: 'result',
      host: 'h1',
      seq,
      at: new Date(0).toISOString(),
      outcome,
      generation: signed.intent.generation,
      closure: signed.intent.closure,
      action: 'switch',
      intentDigest: intentDigest(signed),
      reason: '',
      outputTail: '',
    };
    return { result: r, signature: signPayload('result', r, key) };
  };
  const epochOf = (signed: (typeof intents)[number]): number => (signed.intent.policyVersion === 2 ? 1 : 0);
  const results = [
    result(1, 'applied', intents[0]!),
    result(2, 'applied', intents[1]!),
    result(3, 'refused', intents[3]!),
    result(4, 'applied', intents[2]!),
    result(9, 'applied', intents[3]!, stranger),
  ];
  const rebuilt = rebuildFloor({ hostKey: hostKey.publicKey, results, intents, epochOf, running: closure('c') });
  assert.is(rebuilt.floorEpoch, 1, 'the epoch-1 intent ranks above every epoch-0 generation');
  assert.is(rebuilt.floorGeneration, 1);
  assert.is(rebuilt.resultSeq, 4, "only own results count (the stranger's #9 does not)");
  assert.equal(rebuilt.applied, { generation: 1, closure: closure('c'), digest: intentDigest(intents[2]!) });
  assert.equal(rebuilt.previous?.closure, closure('b'));
  assert.is(rebuilt.handledDigests.length, 4);
  const withoutEpochs = rebuildFloor({
    hostKey: hostKey.publicKey,
    results: results.slice(0, 3),
    intents,
    epochOf,
    running: closure('b'),
  });
  assert.is(withoutEpochs.floorGeneration, 2, 'a refused generation 50 does not raise the floor');
  assert.is(withoutEpochs.applied?.generation, 2);
  const forged = { ...results[1]!, result: { ...results[1]!.result, generation: 40 } };
  assert.is(
    rebuildFloor({ hostKey: hostKey.publicKey, results: [results[0]!, forged], intents, epochOf, running: null })
      .floorGeneration,
    1,
    'a result whose signature fails does not count',
  );
});

test.run();
