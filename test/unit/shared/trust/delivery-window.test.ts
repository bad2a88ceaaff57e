import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC, writeTimestamp } from '../../../../shared/documents/fleet.js';
import { silentLogger } from '../../../../shared/log.js';
import type { Intent } from '../../../../shared/schemas/intent.js';
import type { Timestamp } from '../../../../shared/schemas/policy.js';
import { openFleetTrust } from '../../../../shared/trust/fleet-trust.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { checkIntentBindingAndTime, type DeliveryWindow } from '../../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

// Expiry that fits weeks offline (issue 12): expiresAt is the hard limit; an intent issued while
// the host was in contact must arrive within the delivery window, one issued while it was out of
// contact gets its window from when contact resumed.
const DAY = 86_400_000;
const t0 = Date.parse('2026-11-01T00:00:00.000Z');
const org = makeTestOrg();

function intent(issuedAt: number, validFor = 90 * DAY): Intent {
  return {
    kind: 'intent',
    host: 'h1',
    generation: 1,
    closure: `/nix/store/${'a'.repeat(32)}-nixos-system`,
    action: 'switch',
    issuedAt: new Date(issuedAt).toISOString(),
    expiresAt: new Date(issuedAt + validFor).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
}
const check = (i: Intent, now: number, delivery?: DeliveryWindow) =>
  checkIntentBindingAndTime(signIntent(i, org.alice), 'h1', now, 5 * 60_000, delivery);

test('an intent issued while the host was in contact must arrive within the window', () => {
  const inContact: DeliveryWindow = { windowMs: 7 * DAY, gap: { from: null, until: t0 - DAY } };
  assert.is(check(intent(t0), t0 + 6 * DAY, inContact).ok, true);
  const late = check(intent(t0), t0 + 8 * DAY, inContact);
  assert.is(late.ok, false);
  if (!late.ok) {
    assert.is(late.code, 'stale');
    assert.match(late.reason, /8 days after it could first have \(window 7 days/);
  }
});

test('an intent issued during a contact gap gets its window from the end of the gap, up to its expiry', () => {
  const gap: DeliveryWindow = { windowMs: 7 * DAY, gap: { from: t0 - DAY, until: t0 + 60 * DAY } };
  assert.is(check(intent(t0), t0 + 60 * DAY + 1000, gap).ok, true, '60 days offline: applied');
  assert.is(check(intent(t0), t0 + 66 * DAY, gap).ok, true);
  assert.is(
    (check(intent(t0), t0 + 68 * DAY, gap) as { code?: string }).code,
    'stale',
    'not taken long after contact resumed',
  );
  assert.is(
    (check(intent(t0, 30 * DAY), t0 + 60 * DAY + 1000, gap) as { code?: string }).code,
    'expired',
    'expiresAt stays the hard limit',
  );
  // Issued before the gap began (the host was in contact then): from its issue.
  assert.is((check(intent(t0 - 2 * DAY), t0 + 60 * DAY + 1000, gap) as { code?: string }).code, 'stale');
  // Without a delivery window (no timestamp keys) only expiresAt counts.
  assert.is(check(intent(t0 - 2 * DAY), t0 + 60 * DAY + 1000).ok, true);
});

test('fleet trust: a timestamp after a silence longer than the freeze limit records the gap (persisted), and the verifier uses it', async () => {
  const docs = new Map<string, Y.Doc>([
    [POLICY_DOC, new Y.Doc()],
    [TIMESTAMP_DOC, new Y.Doc()],
  ]);
  let saved: string | null = null;
  const open = () =>
    openFleetTrust({
      orgRootKeys: [org.root.publicKey],
      store: {
        where: 'memory',
        load: async () => saved,
        save: async (text) => {
          saved = text;
        },
      },
      follow: (name) => ({ doc: docs.get(name)!, close: () => undefined }),
      freezeAfterMs: DAY,
      logger: silentLogger,
    });
  const stamp = (at: number, seq: number): void => {
    const timestamp: Timestamp = { kind: 'timestamp', at: new Date(at).toISOString(), seq, policyVersion: 1 };
    writeTimestamp(docs.get(TIMESTAMP_DOC)!, {
      timestamp,
      signature: signPayload('timestamp', timestamp, org.timestamp),
    });
  };
  const settle = () => new Promise((resolve) => setTimeout(resolve, 60));
  // Real clocks are earlier than these stamps: the reader's clock follows its time floor.
  const trust = await open();
  appendPolicy(docs.get(POLICY_DOC)!, signPolicy(basePolicy(org), org.root));
  await settle();
  stamp(t0 + 50 * 365 * DAY, 1);
  await settle();
  stamp(t0 + 50 * 365 * DAY + 60_000, 2);
  await settle();
  const before = JSON.parse(saved!) as { contactGap: { from: string | null; until: string } };
  assert.equal(before.contactGap, { from: null, until: new Date(t0 + 50 * 365 * DAY).toISOString() });
  await trust.close();
  // 60 days of silence, then a fresh timestamp: a gap from the last one to it.
  const back = t0 + 50 * 365 * DAY + 60 * DAY;
  const reopened = await open();
  stamp(back, 3);
  await settle();
  const after = JSON.parse(saved!) as { contactGap: { from: string | null; until: string } };
  assert.equal(after.contactGap, {
    from: new Date(t0 + 50 * 365 * DAY + 60_000).toISOString(),
    until: new Date(back).toISOString(),
  });
  const duringGap = reopened.verifier('h1')(signIntent(intent(t0 + 50 * 365 * DAY + 3600_000), org.alice));
  assert.is(duringGap.ok, true, JSON.stringify(duringGap));
  const beforeGap = reopened.verifier('h1')(signIntent(intent(t0 + 50 * 365 * DAY - 10 * 60_000), org.alice));
  assert.is((beforeGap as { code?: string }).code, 'stale');
  await reopened.close();
});

test.run();
