import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../../admin/fleet-view.js';
import { chooseRollbackTarget } from '../../../admin/rollback.js';

test('manual rollback picks the last applied generation before the current one, or a named applied one', () => {
  const result = (seq: number, generation: number, closure: string, outcome = 'applied') =>
    ({ result: { seq, generation, closure, outcome }, signatureValid: true }) as unknown as HostView['results'][number];
  const c = (n: number): string => `/nix/store/${String(n).repeat(32)}-system`;
  const view = {
    host: 'h',
    applied: { generation: 4, closure: c(4) },
    results: [result(1, 1, c(1)), result(2, 2, c(2)), result(3, 3, c(3), 'rolled-back'), result(4, 4, c(4))],
  };
  assert.equal(
    chooseRollbackTarget(view),
    { ok: true, generation: 2, closure: c(2) },
    'generation 3 was never applied',
  );
  assert.equal(chooseRollbackTarget(view, 1), { ok: true, generation: 1, closure: c(1) });
  assert.match(
    (chooseRollbackTarget(view, 3) as { reason: string }).reason,
    /never reported generation 3 as applied \(applied: 1, 2, 4\)/,
  );
  const forged = { ...view, results: view.results.map((r) => ({ ...r, signatureValid: r.result.generation !== 2 })) };
  assert.equal(
    chooseRollbackTarget(forged),
    { ok: true, generation: 1, closure: c(1) },
    'results whose signature fails do not count',
  );
});

test.run();
