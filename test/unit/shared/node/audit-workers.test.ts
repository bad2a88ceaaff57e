import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { auditHistory } from '../../../../shared/audit/history.js';
import { checkLogChain } from '../../../../shared/audit/log-chain.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { useEd25519Verifier } from '../../../../shared/crypto/signatures.js';
import { ENROLLMENT_DOC } from '../../../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../../../shared/documents/names.js';
import { auditInParallel, splitHosts } from '../../../../shared/node/audit-workers.js';
import { nodeEd25519Verify, nodeSignPayload } from '../../../../shared/node/ed25519.js';
import { closureOf, FleetHistory } from '../../../harness/audit-history.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

// The audit split over worker threads gives exactly the report of one pass: same anomalies in
// the same order, same events, heads and counts, whichever hosts land in which worker.
const org = makeTestOrg();

function history(): { history: FleetHistory; keptHeads: ReturnType<typeof checkLogChain>['head'][] } {
  const h = new FleetHistory(nodeSignPayload);
  h.policy(signPolicy(basePolicy(org, { issuedAt: h.now() }), org.root));
  const keys = Array.from({ length: 7 }, (_, i) => generateSigningKey(`h${i}`));
  for (const [i, key] of keys.entries()) h.enroll(`h${i}`, key.publicKey, org.alice);
  // An enrollment signed by a stranger: an anomaly in a fleet document.
  h.enroll('h9', generateSigningKey('h9').publicKey, generateSigningKey('mallory'));
  for (const [i, key] of keys.entries()) {
    const host = `h${i}`;
    for (let g = 1; g <= 3 + i; g += 1) {
      const { digest } = h.intent(host, g, closureOf(g), [org.alice]);
      h.result(host, key, { seq: g, generation: g, closure: closureOf(g), intentDigest: digest });
      h.status(host, key, g, { generation: g, closure: closureOf(g) });
    }
  }
  h.intent('h1', 20, closureOf(20), [org.alice]);
  h.intent('h1', 20, closureOf(21), [org.alice]);
  h.status('h3', generateSigningKey('impostor'), 99, { generation: 9, closure: closureOf(9) });
  h.result('h5', keys[5]!, { seq: 30, generation: 9, closure: closureOf(9), intentDigest: 'ab'.repeat(32) });
  // Heads kept now; then h6's status log is cut short (a kept head no longer matches) and a head
  // is kept for a document the history no longer holds (withheld).
  const name = statusDocName('h6');
  const keptHeads = [
    checkLogChain(name, h.docs.get(name)!.entries).head,
    checkLogChain(ENROLLMENT_DOC, h.docs.get(ENROLLMENT_DOC)!.entries).head,
    { document: desiredDocName('h8'), seq: 2, hash: 'cd'.repeat(32) },
  ];
  h.docs.get(name)!.entries.pop();
  return { history: h, keptHeads };
}

test('hosts are split into contiguous runs of about equal weight', () => {
  const weights: Record<string, number> = { a: 10, b: 10, c: 10, d: 10, e: 40, f: 10 };
  const runs = splitHosts(Object.keys(weights), (h) => weights[h]!, 2);
  assert.equal(runs, [
    ['a', 'b', 'c', 'd'],
    ['e', 'f'],
  ]);
  assert.equal(
    splitHosts(['a'], () => 1, 4),
    [['a']],
  );
  assert.equal(
    splitHosts(['a', 'b', 'c'], () => 1, 3),
    [['a'], ['b'], ['c']],
  );
});

test('split over 1, 2 and 3 workers: the same report as one pass, with events and without', async () => {
  const { history: h, keptHeads } = history();
  const source = h.source();
  const heads = keptHeads.filter((x) => x !== null);
  useEd25519Verifier(nodeEd25519Verify);
  const single = auditHistory(source, { orgRootKeys: [org.root.publicKey], keptHeads: heads });
  useEd25519Verifier(null);
  const codes = single.anomalies.map((a) => a.code);
  for (const code of ['invalid-enrollment', 'unauthorised-signer', 'equivocation', 'forged-status', 'head-mismatch'])
    assert.ok(codes.includes(code as never), `the history has ${code}: ${codes.join(', ')}`);
  for (const workers of [1, 2, 3]) {
    const split = await auditInParallel(source, {
      orgRootKeys: [org.root.publicKey],
      keptHeads: heads,
      keepEvents: true,
      workers,
      minEntriesPerWorker: 1,
    });
    assert.equal(split, single, `${workers} workers`);
    const quiet = await auditInParallel(source, {
      orgRootKeys: [org.root.publicKey],
      keptHeads: heads,
      keepEvents: false,
      workers,
      minEntriesPerWorker: 1,
    });
    assert.equal(quiet, { ...single, events: [] }, `${workers} workers, no events`);
  }
});

test("an audit of some hosts checks only their kept heads (and the fleet's), not other hosts'", async () => {
  const { history: h, keptHeads } = history();
  const heads = keptHeads.filter((x) => x !== null);
  for (const workers of [1, 2]) {
    const report = await auditInParallel(h.source(), {
      orgRootKeys: [org.root.publicKey],
      hosts: ['h0', 'h1'],
      keptHeads: heads,
      keepEvents: false,
      workers,
      minEntriesPerWorker: 1,
    });
    assert.not.ok(
      report.anomalies.some((a) => a.code === 'head-mismatch'),
      `h6's cut log and h8's missing document are not this audit's: ${JSON.stringify(report.anomalies)}`,
    );
    assert.ok(report.anomalies.some((a) => a.code === 'equivocation'));
  }
});

test.run();
