import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment, signEnrollRequest } from '../../admin/enroll-entries.js';
import { generateSigningKey, keyFileFromSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent, readIntentEntries } from '../../shared/documents/desired.js';
import { ENROLLMENT_DOC, readEnrollments } from '../../shared/documents/fleet.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { readRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import { findPlan, judgeRollout } from '../../shared/rollout/judge.js';
import { planDigest } from '../../shared/rollout/plan.js';
import type { SignedRolloutAction } from '../../shared/rollout/schemas.js';
import { signRolloutAction } from '../../shared/rollout/sign.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { mergeSignatures } from '../../shared/trust/co-signatures.js';
import { verifyEnrollment } from '../../shared/trust/enrollment.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import {
  collectPageErrors,
  importKey,
  launchChromium,
  newLaptopContext,
  type PageLink,
  screenshot,
  startPageLink,
  unlock,
} from '../harness/browser.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Issue 14's admin views in real Chromium against a real coordinator (pinned org root, a policy
// whose group `production` needs two admins, signed timestamps): co-signing an intent on prod-1
// (alice signs in the page, carol without 'deploy' is offered nothing, bob approves and the
// intent then counts as agents count it), a rollout made with `outpost rollout create` paused,
// resumed, its second wave approved and aborted from the page with the CLI's signed actions, a
// pending enrollment request approved, and the policy in force with who signed it. The
// coordinator's documents are read back over the real protocol and checked with the agents' code.
const org = makeTestOrg();
const PASSPHRASE = 'correct horse battery staple';
const dir = temporaryDirectory('web-editor-admin');
const hostKeys: Record<string, SigningKey> = {
  h1: generateSigningKey('h1'),
  h2: generateSigningKey('h2'),
  'prod-1': generateSigningKey('prod-1'),
};
const h3Key = generateSigningKey('h3');
const h4Key = generateSigningKey('h4');
// A relay of the policy serving prod-1: it may write prod-1's documents (it forwards them).
const relayKey = generateSigningKey('relay-r1');
const CLOSURE = `/nix/store/${'b'.repeat(32)}-nixos-system-web-admin`;
const ROLLOUT = 'web-r1';
let coordinator: DaemonProcess & { url: string; port: number };
// The page's only way to the coordinator; offline cuts it (harness/browser.ts, startPageLink).
let link: PageLink;
let policy: Policy;
let browser: Browser;
let context: BrowserContext;
let page: Page;
let pageErrors: string[] = [];

async function readDoc<T>(name: string, read: (doc: import('yjs').Doc) => T): Promise<T> {
  const reader = connectDocument(coordinator.url, name, { identity: org.alice });
  try {
    await waitForSync(reader, 10_000);
    return read(reader.doc);
  } finally {
    reader.close();
  }
}

// The rollout as the coordinator holds it, judged with the agents' code; every action in it must
// carry exactly the signature the CLI's tweetnacl gives over the same action.
async function judgedRollout() {
  const entries = await readDoc(rolloutDocName(ROLLOUT), (doc) => readRolloutEntries(doc));
  const signedPlan = findPlan(entries, planDigest(entries.plans[0]!.plan))!;
  for (const a of entries.actions)
    assert.is(a.signature.signature, signPayload('rollout-action', a.action, org.alice).signature);
  const view = judgeRollout(entries, signedPlan, [policy], Date.now());
  assert.equal(view.actions.rejected, []);
  return Object.assign(view, { verbs: entries.actions.map((a) => a.action.verb) });
}

async function go(route: string): Promise<void> {
  await page.evaluate((hash) => {
    location.hash = hash;
  }, route);
}

function failWith(message: string): string {
  return `${message}\npage errors:\n${pageErrors.join('\n') || '(none)'}`;
}

async function text(testId: string): Promise<string> {
  return String(await page.getByTestId(testId).first().textContent());
}

// The rollout view counts an action from the moment it is signed (the outbox's copy), so its state
// changes before the server has the action; the coordinator's copy is read only once the page says
// the server stored it.
async function storedByServer(what: string): Promise<void> {
  await page
    .locator('[data-testid=rollout-message]', { hasText: `${what}: stored by the server` })
    .waitFor({ timeout: 20_000 })
    .catch(async () => assert.unreachable(failWith(await text('rollout-message'))));
}

// Lock, then unlock another stored key (each was imported once at the start).
async function switchTo(key: SigningKey): Promise<void> {
  await page.getByTestId('lock').click();
  await unlock(page, PASSPHRASE, key.publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v1' }).waitFor({ timeout: 30_000 });
  // Live even for bob (production only), whom the coordinator refuses the documents of hosts he
  // may not read: a refusal is shown as such, not as a lost link.
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 30_000 });
}

test.before(async () => {
  await writeKeyFile(join(dir, 'timestamp.key'), org.timestamp);
  await writeKeyFile(join(dir, 'alice.key'), org.alice);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    join(dir, 'timestamp.key'),
    '--timestamp-interval',
    '1',
  ]);
  policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['prod-1'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [host, key] of Object.entries(hostKeys)) {
    const approved = await postJson(
      coordinator.url,
      '/api/enroll/approve',
      signEnrollment(org.alice, { host, hostKey: key.publicKey, policyVersion: 1 }, new Date()),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
  // h3 asks to be enrolled (as `outpost enroll request` does); an admin approves it in the page.
  const requested = await postJson(
    coordinator.url,
    '/api/enroll',
    signEnrollRequest(h3Key, 'h3', undefined, new Date()),
  );
  assert.is(requested.status, 200, requested.body.error);
  // A rollout of two waves; the second starts only with an admin's approval.
  const manifest = join(dir, 'release.json');
  await fs.writeFile(manifest, JSON.stringify({ release: 'w49', hosts: { h1: CLOSURE, h2: CLOSURE } }));
  const created = await runCli(
    [
      'rollout',
      'create',
      '--release',
      manifest,
      '--wave',
      'first=h1',
      '--wave',
      'second=h2',
      '--gate',
      'first:approval',
      '--id',
      ROLLOUT,
      '--generation',
      '1',
      '--coordinator',
      coordinator.url,
      '--key',
      join(dir, 'alice.key'),
      '--org-root',
      org.root.publicKey,
      '--timeout',
      '60s',
    ],
    { timeoutMs: 120_000 },
  );
  assert.is(created.code, 0, created.stderr + created.stdout);
  link = await startPageLink(coordinator.port);
  browser = await launchChromium();
  context = await newLaptopContext(browser);
  page = await context.newPage();
  pageErrors = collectPageErrors(page);
  await page.goto(link.pageUrl);
  // Three admins' keys in one browser: alice (deploy everywhere, enroll), bob (deploy on
  // production only), carol (read only).
  await page.getByTestId('setup').waitFor();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  for (const key of [org.bob, org.carol]) {
    await page.getByText('Add another key').click();
    await importKey(page, JSON.stringify(keyFileFromSigningKey(key)), PASSPHRASE, org.root.publicKey);
  }
  await unlock(page, PASSPHRASE, org.alice.publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v1' }).waitFor({ timeout: 30_000 });
  // Live even for bob (production only), whom the coordinator refuses the documents of hosts he
  // may not read: a refusal is shown as such, not as a lost link.
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 30_000 });
});

test.after(async () => {
  await browser?.close();
  await link?.close();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('co-signing: alice signs the first of two signatures, the page shows who is missing', async () => {
  await go('#/host/prod-1');
  await page.getByTestId('host-view').waitFor();
  await page.getByTestId('deploy-closure').fill(CLOSURE);
  await page.getByTestId('deploy-button').click();
  await page.getByTestId('action-message').waitFor();
  assert.match(await text('action-message'), /signed generation 1/, failWith('not signed'));
  await page.locator('[data-generation="1"] [data-delivered=true]').waitFor({ timeout: 20_000 });
  await page.locator('[data-testid=cosign][data-missing="1"]').waitFor({ timeout: 20_000 });
  assert.match(await text('cosign-progress'), /1 of 2 admin signatures \(alice\); needs 1 more of: bob/);
  assert.match(await text('cosign-hint'), /you have signed it/);
  const mark = page.locator('[data-testid=timeline-entry][data-generation="1"] [data-testid=mark]');
  assert.is(await mark.textContent(), '◐ awaits co-signatures');
  assert.match(await text('desired-awaiting'), /awaits co-signatures: 1 of 2/);
  assert.is(await page.getByTestId('approve-button').count(), 0);
  const [signed] = await readDoc(desiredDocName('prod-1'), (doc) => readIntentEntries(doc).entries);
  const verdict = verifyIntentUnderPolicy(signed!.signed, { host: 'prod-1', chain: [policy], now: Date.now() });
  assert.is(verdict.ok ? 'ok' : verdict.code, 'below-threshold', 'agents wait for the second admin');
});

test('rollouts: list and status from the rollout document; pause, resume, approve a wave and abort, signed in the page', async () => {
  await page.getByTestId('nav-rollouts').click();
  await page.locator(`[data-testid=rollout-row-${ROLLOUT}][data-state=running]`).waitFor({ timeout: 20_000 });
  await page.locator(`[data-testid=rollout-row-${ROLLOUT}] a`).click();
  await page.locator('[data-testid=rollout-view][data-state=running]').waitFor();
  assert.match(await text('rollout-signers'), /signed by alice/);
  assert.is(await page.getByTestId('wave-1').getAttribute('data-open'), 'true');
  assert.is(await page.getByTestId('wave-2').getAttribute('data-open'), 'false');
  assert.match(await text('gate-1'), /0\/1 proven/);
  assert.match(await text('wave-2'), /waiting for the gate/);
  assert.is(await page.getByTestId('rollout-host-h2').getAttribute('data-state'), 'waiting');

  await page.getByTestId('rollout-reason').fill('checking the canary');
  await page.getByTestId('rollout-pause').click();
  await page.locator('[data-testid=rollout-view][data-state=paused]').waitFor({ timeout: 20_000 });
  assert.match(await text('rollout-paused'), /by alice .*checking the canary/);
  await screenshot(page, 'web-rollout');
  await page.getByTestId('rollout-reason').fill('');
  await page.getByTestId('rollout-resume').click();
  await page.locator('[data-testid=rollout-view][data-state=running]').waitFor({ timeout: 20_000 });
  assert.match(
    await text('rollout-message'),
    /the resume of web-r1: stored by the server; the rollout is running again/,
  );

  // A pause and a resume at the same moment: alice's CLI pauses (sequence n) while the page, which
  // has not seen it, resumes with the same n. The page's POST is held until the pause is stored.
  // The pause decides (judgeActions), and the page must say so from the document it reads back,
  // not report its resume as done.
  await page.getByTestId('rollout-pause').click();
  await page.locator('[data-testid=rollout-view][data-state=paused]').waitFor({ timeout: 20_000 });
  await page.route(
    '**/api/rollouts',
    async (route) => {
      const body = route.request().postDataJSON() as { action: SignedRolloutAction };
      const pause = signRolloutAction(
        { ...body.action.action, verb: 'pause', at: new Date().toISOString() },
        org.alice,
      );
      const stored = await postJson(coordinator.url, '/api/rollouts', { action: pause });
      assert.is(stored.status, 200, stored.body.error);
      await route.continue();
    },
    { times: 1 },
  );
  await page.getByTestId('rollout-resume').click();
  await page
    .locator('[data-testid=rollout-message].error', { hasText: 'stays paused' })
    .waitFor({ timeout: 20_000 })
    .catch(async () => assert.unreachable(failWith(await text('rollout-message'))));
  assert.match(await text('rollout-message'), /your resume is stored but the rollout stays paused: alice paused it/);
  assert.is(await page.getByTestId('rollout-view').getAttribute('data-state'), 'paused');
  const tied = await judgedRollout();
  assert.is(tied.state, 'paused');
  assert.equal(tied.verbs.slice(-2).sort(), ['pause', 'resume']);
  await page.unroute('**/api/rollouts');
  // Resuming again, one above both, decides.
  await page.getByTestId('rollout-resume').click();
  await page.locator('[data-testid=rollout-view][data-state=running]').waitFor({ timeout: 20_000 });
  assert.match(await text('rollout-message'), /running again/);
  await page.getByTestId('rollout-approve-2').click();
  await page.getByTestId('gate-2').waitFor();
  await page.locator('[data-testid=wave-2]', { hasText: 'approved by alice' }).waitFor({ timeout: 20_000 });
  await storedByServer(`the approval of wave 2 of ${ROLLOUT}`);
  const view = await judgedRollout();
  assert.is(view.state, 'running');
  assert.equal(view.actions.approvals.get(2), ['alice']);
});

test('enrollment: a pending request is listed and approved from the page', async () => {
  await page.getByTestId('nav-enrollment').click();
  await page.getByTestId('pending-h3').waitFor({ timeout: 20_000 });
  assert.match(await text('pending-h3'), new RegExp(h3Key.publicKey.replace(/[+/]/g, '\\$&')));
  await screenshot(page, 'web-enrollment');
  await page.getByTestId('enroll-approve-h3').click();
  assert.match(await text('enroll-message'), /stored by the server/, failWith('not approved'));
  await page.getByTestId('bound-h3').waitFor({ timeout: 20_000 });
  assert.is(await page.getByTestId('pending-h3').count(), 0);
  const enrollments = await readDoc(ENROLLMENT_DOC, (doc) => readEnrollments(doc));
  const h3 = enrollments.find((e) => e.enrollment.host === 'h3');
  assert.is(h3?.enrollment.hostKey, h3Key.publicKey);
  assert.equal(verifyEnrollment(h3!, policy), { ok: true });
});

test('policy: the version in force, who signed it, admins, roles and groups', async () => {
  await page.getByTestId('nav-policy').click();
  await page.getByTestId('policy-view').waitFor();
  assert.is(await text('policy-version'), '1');
  const signer = page.getByTestId('policy-signer');
  assert.is(await signer.count(), 1);
  assert.is(await signer.getAttribute('data-signed'), 'true');
  assert.match(String(await signer.textContent()), /pinned here/);
  assert.match(await text('policy-admin-alice'), /ops, enroller/);
  assert.match(await text('policy-admin-alice'), /\(you\)/);
  assert.match(await text('policy-role-prod-ops'), /deploy, read.*production/);
  assert.match(await text('policy-group-production'), /production\s*2\s*prod-1/);
  await screenshot(page, 'web-policy');
});

test('carol (read only) is offered no approval and no rollout or enrollment action', async () => {
  await switchTo(org.carol);
  await go('#/host/prod-1');
  await page.locator('[data-testid=cosign][data-missing="1"]').waitFor({ timeout: 20_000 });
  assert.is(await page.getByTestId('approve-button').count(), 0);
  assert.match(await text('cosign-hint'), /you cannot approve it: admin carol lacks 'deploy' for host prod-1/);
  await go(`#/rollouts/${ROLLOUT}`);
  await page.locator('[data-testid=rollout-view][data-state=running]').waitFor({ timeout: 20_000 });
  const pause = page.getByTestId('rollout-pause');
  assert.ok(await pause.isDisabled(), 'carol cannot pause');
  assert.match(String(await pause.getAttribute('title')), /admin carol lacks 'deploy' for h1, h2 .*nothing was signed/);
  // A request is pending (h4 asks now), so "no approve button" says something.
  const requested = await postJson(
    coordinator.url,
    '/api/enroll',
    signEnrollRequest(h4Key, 'h4', undefined, new Date()),
  );
  assert.is(requested.status, 200, requested.body.error);
  await go('#/enrollment');
  await page.getByTestId('pending-h4').waitFor({ timeout: 20_000 });
  assert.is(await page.locator('[data-testid^=enroll-approve-]').count(), 0);
  assert.match(await text('enroll-refused-h4'), /admin carol lacks 'enroll' for host h4 .*nothing was signed/);
});

test('bob approves in the page with no link: the approval waits, merges when the link returns, and counts as agents count it', async () => {
  await switchTo(org.bob);
  await go('#/host/prod-1');
  await page.getByTestId('approve-button').waitFor({ timeout: 20_000 });
  await screenshot(page, 'web-cosign');
  await link.setOffline(context, true);
  await page.locator('[data-testid=connection][data-live=false]').waitFor({ timeout: 20_000 });
  await page.getByTestId('approve-button').click();
  assert.match(await text('action-message'), /approved generation 1 — offline/, failWith('not approved'));
  await page.locator('[data-testid=cosign][data-missing="0"]').waitFor({ timeout: 20_000 });
  await page.locator('[data-testid=timeline-entry] [data-delivered=false]').waitFor();
  assert.is(
    (await readDoc(desiredDocName('prod-1'), (doc) => readIntentEntries(doc).entries)).length,
    1,
    'nothing reached the coordinator while offline',
  );
  await link.setOffline(context, false);
  await page
    .locator('[data-testid=timeline-entry] [data-delivered=false]')
    .waitFor({ state: 'detached', timeout: 30_000 });
  assert.match(await text('cosign-progress'), /2 of 2 admin signatures \(alice, bob\)/);
  // Both envelopes (alice's alone, and bob's with both) carry content that now counts.
  const marks = await page
    .locator('[data-testid=timeline-entry][data-generation="1"] [data-testid=mark]')
    .allTextContents();
  assert.equal(marks, ['✓ signed', '✓ signed']);
  const entries = await readDoc(desiredDocName('prod-1'), (doc) => readIntentEntries(doc).entries);
  assert.ok(entries.length >= 2, 'the approval is a second envelope of the same intent');
  const intent = entries[0]!.signed.intent;
  assert.ok(
    entries.every((e) => JSON.stringify(e.signed.intent) === JSON.stringify(intent)),
    'the same content',
  );
  const approval = entries.at(-1)!.signed;
  assert.is(approval.signatures[0]!.publicKey, org.bob.publicKey);
  assert.is(approval.signatures[0]!.signature, signPayload('intent', intent, org.bob).signature);
  const merged = { intent, signatures: mergeSignatures(entries.map((e) => e.signed.signatures)) };
  const verdict = verifyIntentUnderPolicy(merged, { host: 'prod-1', chain: [policy], now: Date.now() });
  assert.ok(verdict.ok, verdict.ok ? '' : verdict.reason);
  assert.ok(verifyIntentUnderPolicy(approval, { host: 'prod-1', chain: [policy], now: Date.now() }).ok);
});

test("a relay writes an intent for prod-1 carrying alice's signature copied from generation 1: bob is offered nothing to approve", async () => {
  const relay = connectDocument(coordinator.url, desiredDocName('prod-1'), { identity: relayKey });
  try {
    await waitForSync(relay, 10_000);
    const genuine = readIntentEntries(relay.doc).entries[0]!.signed;
    const forged = {
      ...genuine.intent,
      generation: 2,
      closure: `/nix/store/${'d'.repeat(32)}-nixos-system-backdoor`,
    };
    appendIntent(relay.doc, { intent: forged, signatures: genuine.signatures });
    await page.locator('[data-testid=cosign]', { hasText: 'generation 2' }).waitFor({ timeout: 20_000 });
    assert.match(
      await text('cosign-hint'),
      /nothing to approve: no admin validly signed prod-1's generation 2 .*alice does not verify/,
    );
    assert.is(await page.getByTestId('approve-button').count(), 0, 'no approval offered for a forgery');
    assert.match(await text('cosign-progress'), /0 of 2 admin signatures/);
    assert.is(
      await page.locator('[data-testid=timeline-entry][data-generation="2"] [data-testid=mark]').textContent(),
      '✗ UNTRUSTED',
      'a copied signature earns no "awaits co-signatures"',
    );
  } finally {
    relay.close();
  }
});

test('alice aborts the rollout from the page: final, and every action counted', async () => {
  await switchTo(org.alice);
  await go(`#/rollouts/${ROLLOUT}`);
  await page.locator('[data-testid=rollout-view][data-state=running]').waitFor({ timeout: 20_000 });
  page.once('dialog', (dialog) => void dialog.accept());
  await page.getByTestId('rollout-abort').click();
  await page.locator('[data-testid=rollout-view][data-state=aborted]').waitFor({ timeout: 20_000 });
  assert.match(await text('rollout-aborted'), /by alice/);
  await storedByServer(`the abort of ${ROLLOUT}`);
  const view = await judgedRollout();
  assert.is(view.state, 'aborted');
  // The first test's pause and resume, its tie (the CLI's pause, then the page's resume with the same
  // number) and the resume after it, the approval, the abort.
  assert.equal(view.verbs, ['pause', 'resume', 'pause', 'pause', 'resume', 'resume', 'approve', 'abort']);
});

test.run();
