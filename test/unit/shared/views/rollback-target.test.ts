import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SignedResult } from '../../../../shared/schemas/report.js';
import type { HostView } from '../../../../shared/views/host-view.js';
import { chooseRollbackTarget } from '../../../../shared/views/rollback-target.js';
import { closure, result } from './view-fixtures.js';

const junkSignature = { publicKey: `${'A'.repeat(43)}=`, signature: `${'A'.repeat(86)}==` };
const a = closure('a', 'one');
const b = closure('b', 'two');
const c = closure('c', 'three');

function results(
  ...entries: [
    seq: number,
    generation: number,
    closure: string,
    outcome: SignedResult['result']['outcome'],
    valid: boolean,
  ][]
): HostView['results'] {
  return entries.map(([seq, generation, path, outcome, valid]) => ({
    result: result('h1', seq, generation, path, { outcome }),
    signature: junkSignature,
    signatureValid: valid,
    problem: valid ? null : "signed by key …, not h1's enrolled key",
  }));
}

const view = (applied: { generation: number; closure: string } | null, list: HostView['results']) => ({
  host: 'h1',
  applied,
  results: list,
});

test('by default: the newest earlier applied generation with another closure', () => {
  const list = results(
    [1, 1, a, 'applied', true],
    [2, 2, b, 'applied', true],
    [3, 3, b, 'failed', true],
    [4, 4, c, 'applied', true],
  );
  assert.equal(chooseRollbackTarget(view({ generation: 4, closure: c }, list)), {
    ok: true,
    generation: 2,
    closure: b,
  });
  // Generation 3 re-applied b: the target skips closures equal to the current one.
  const same = results([1, 1, a, 'applied', true], [2, 2, b, 'applied', true], [3, 3, b, 'applied', true]);
  assert.equal(chooseRollbackTarget(view({ generation: 3, closure: b }, same)), {
    ok: true,
    generation: 1,
    closure: a,
  });
});

test('only results that count are used: a forged result is never a target', () => {
  const list = results(
    [1, 1, a, 'applied', true],
    [2, 2, closure('d', 'forged'), 'applied', false],
    [3, 3, c, 'applied', true],
  );
  assert.equal(chooseRollbackTarget(view({ generation: 3, closure: c }, list)), {
    ok: true,
    generation: 1,
    closure: a,
  });
  const named = chooseRollbackTarget(view({ generation: 3, closure: c }, list), 2);
  assert.is(named.ok, false);
  assert.match(named.ok ? '' : named.reason, /h1 never reported generation 2 as applied \(applied: 1, 3\)/);
});

test('--to-generation picks that generation, unless it is what runs; clear reasons otherwise', () => {
  const list = results([1, 1, a, 'applied', true], [2, 2, b, 'applied', true]);
  assert.equal(chooseRollbackTarget(view({ generation: 2, closure: b }, list), 1), {
    ok: true,
    generation: 1,
    closure: a,
  });
  const current = chooseRollbackTarget(view({ generation: 2, closure: b }, list), 2);
  assert.match(current.ok ? '' : current.reason, /already runs the closure of generation 2/);
  const nothing = chooseRollbackTarget(view(null, list));
  assert.match(nothing.ok ? '' : nothing.reason, /reports no applied generation yet/);
  const onlyOne = chooseRollbackTarget(view({ generation: 1, closure: a }, results([1, 1, a, 'applied', true])));
  assert.match(
    onlyOne.ok ? '' : onlyOne.reason,
    /has applied no earlier generation with another closure \(applied: 1\)/,
  );
});

test.run();
