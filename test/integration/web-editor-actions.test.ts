import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { keyFileFromSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { readActionEntries } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import type { SignedAction } from '../../shared/schemas/action.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { verifyAction } from '../../shared/trust/verify-action.js';
import { collectPageErrors, importKey, launchChromium, newLaptopContext, pageUrl, unlock } from '../harness/browser.js';
import { prepareHost, type SimulatedHost } from '../harness/fleet.js';
import { startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { makeCacheKey } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// The host page's remote-action buttons in real Chromium, against a real coordinator enforcing
// the policy and a real agent: alice (every action on every host) locks h1, the agent's signed
// answer and the lock show on the page, she unlocks it and runs its health checks; what the page
// stored is read back over the real protocol and checked with the agent's code and against the
// CLI's signature over the same bytes. carol (read only) is refused in the page, nothing signed.
const org = makeTestOrg();
const PASSPHRASE = 'correct horse battery staple';
const dir = temporaryDirectory('web-editor-actions');
let coordinator: DaemonProcess & { url: string; port: number };
let policy: Policy;
let host: SimulatedHost;
let agent: DaemonProcess;
let browser: Browser;
let page: Page;
let pageErrors: string[] = [];

async function storedActions(): Promise<SignedAction[]> {
  const reader = connectDocument(coordinator.url, desiredDocName('h1'), { identity: org.alice });
  try {
    await waitForSync(reader, 10_000);
    return readActionEntries(reader.doc).entries.map((e) => e.signed);
  } finally {
    reader.close();
  }
}

function failWith(message: string): string {
  return `${message}\npage errors:\n${pageErrors.join('\n') || '(none)'}`;
}

async function answered(action: string, outcome: string): Promise<void> {
  await page
    .locator(`[data-testid=action-result][data-action=${action}][data-outcome=${outcome}]`)
    .first()
    .waitFor({ timeout: 30_000 });
}

test.before(async () => {
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const base = basePolicy(org);
  policy = {
    ...base,
    roles: [
      {
        name: 'ops',
        capabilities: ['deploy', 'read', 'enroll', 'reboot', 'lock', 'collect', 'check'],
        hosts: ['*'],
        groups: [],
      },
      { name: 'viewer', capabilities: ['read'], hosts: ['*'], groups: [] },
    ],
    admins: [
      { name: 'alice', keys: [org.alice.publicKey], roles: ['ops'] },
      { name: 'carol', keys: [org.carol.publicKey], roles: ['viewer'] },
    ],
    groups: [],
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  host = await prepareHost(dir, 'h1');
  const approved = await postJson(
    coordinator.url,
    '/api/enroll/approve',
    signEnrollment(org.alice, { host: 'h1', hostKey: host.publicKey, policyVersion: 1 }, new Date()),
  );
  assert.is(approved.status, 200, approved.body.error);
  // No deploy here: the cache is never asked.
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'web-actions-cache-1');
  agent = startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: 'http://127.0.0.1:9',
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--health-check', 'true', '--action-timeout', '5', '--reboot-command', 'true'],
  });
  browser = await launchChromium();
  const context = await newLaptopContext(browser);
  page = await context.newPage();
  pageErrors = collectPageErrors(page);
  await page.goto(pageUrl(coordinator.url));
  await page.getByTestId('setup').waitFor();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  await page.getByText('Add another key').click();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.carol)), PASSPHRASE, org.root.publicKey);
  await unlock(page, PASSPHRASE, org.alice.publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v1' }).waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 30_000 });
});

test.after(async () => {
  await browser?.close();
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('alice locks h1 from the page: the agent answers, the page shows the lock; unlock and a health check follow', async () => {
  await page.evaluate(() => {
    location.hash = '#/host/h1';
  });
  await page.getByTestId('remote-actions').waitFor();
  await page.getByTestId('action-reason').fill('audit 7');
  await page.getByTestId('action-lock').click();
  await page
    .getByTestId('remote-action-message')
    .filter({ hasText: 'signed lock' })
    .waitFor({ timeout: 10_000 })
    .catch(() => assert.unreachable(failWith('the page did not sign the lock')));
  await answered('lock', 'done');
  await page.getByTestId('host-lock').filter({ hasText: 'by alice: audit 7' }).waitFor({ timeout: 30_000 });

  const [lock] = await storedActions();
  assert.ok(lock, 'the coordinator holds the request');
  assert.is(lock.request.action, 'lock');
  assert.is(lock.request.reason, 'audit 7');
  assert.equal(
    verifyAction(lock, { host: 'h1', now: Date.now(), chain: [policy], mode: 'policy' }),
    { ok: true, admin: 'alice' },
    "the agent's code accepts it",
  );
  assert.is(
    lock.signatures[0]!.signature,
    signPayload('action', lock.request, org.alice).signature,
    "the page signed the CLI's canonical bytes",
  );

  await page.getByTestId('action-unlock').click();
  await answered('unlock', 'done');
  await page.getByTestId('host-lock').waitFor({ state: 'detached', timeout: 30_000 });
  await page.getByTestId('action-check').click();
  await answered('check', 'done');
  assert.equal(
    (await storedActions()).map((a) => a.request.action),
    ['lock', 'unlock', 'check'],
  );
});

test('carol (read only) is refused in the page; nothing is signed or stored', async () => {
  await page.getByTestId('lock').click();
  await unlock(page, PASSPHRASE, org.carol.publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v1' }).waitFor({ timeout: 30_000 });
  await page.evaluate(() => {
    location.hash = '#/host/h1';
  });
  await page.getByTestId('action-lock').click();
  const message = await page.getByTestId('remote-action-message').textContent();
  assert.match(String(message), /refused: your key has no 'lock' on h1 under policy version 1; nothing was signed/);
  assert.is((await storedActions()).length, 3, 'nothing new stored');
});

test.run();
