import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { submitIntent } from '../../admin/submit-intent.js';
import { generateSigningKey, keyFileFromSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { readPolicies } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument, proofHeaders, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { readRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import { findPlan, judgeRollout } from '../../shared/rollout/judge.js';
import { planDigest } from '../../shared/rollout/plan.js';
import type { Policy } from '../../shared/schemas/policy.js';
import type { SignedStatus } from '../../shared/schemas/report.js';
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
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Issue 14's authoring views in real Chromium, against a real coordinator (pinned org root,
// signed timestamps) and a real agent installing real Nix closures: a rollout created in the page
// from a release manifest (carol, read only, refused before signing; alice's plan carries exactly
// the CLI's signature and the agent installs from it), aborted with rollback from the page (the
// agent goes back to what it ran before), a policy draft (windows, a group, a relay and a
// timestamp key; alice's admin key refused; the root key signs, the page pushes, `outpost policy
// show` walks to it and the agent takes it; carol's key revoked), the fleet's channel filter, and
// rollouts created with no link: planned from the stored documents, kept across an offline reload,
// created when the link returns (the agent installs wave 1); one whose generation a CLI deploy took
// meanwhile is refused by the coordinator and shown REFUSED, and the agent applies the deploy.
const org = makeTestOrg();
const PASSPHRASE = 'correct horse battery staple';
const dir = temporaryDirectory('web-editor-create');
const h2Key = generateSigningKey('h2');
const h3Key = generateSigningKey('h3');
const labRelayKey = generateSigningKey('lab-relay');
const secondTimestampKey = generateSigningKey('timestamp-2');
let coordinator: DaemonProcess & { url: string; port: number };
// The page's only way to the coordinator; offline cuts it (harness/browser.ts, startPageLink).
let link: PageLink;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let policy: Policy;
const closures: string[] = [];
let browser: Browser;
let context: BrowserContext;
let page: Page;
let pageErrors: string[] = [];

function failWith(message: string): string {
  return `${message}\npage errors:\n${pageErrors.join('\n') || '(none)'}`;
}

async function go(route: string): Promise<void> {
  await page.evaluate((hash) => {
    location.hash = hash;
  }, route);
}

async function readDoc<T>(name: string, read: (doc: import('yjs').Doc) => T): Promise<T> {
  const reader = connectDocument(coordinator.url, name, { identity: org.alice });
  try {
    await waitForSync(reader, 10_000);
    return read(reader.doc);
  } finally {
    reader.close();
  }
}

const h1Status = (): Promise<SignedStatus['status'] | undefined> =>
  readDoc(statusDocName('h1'), (doc) => readCurrentStatus(doc)?.status);

async function applied(generation: number, closure: string, timeoutMs = 180_000): Promise<void> {
  await waitFor(
    `h1 applies generation ${generation}`,
    async () => {
      const status = await h1Status();
      return status?.applied?.generation === generation && status.applied.closure === closure;
    },
    timeoutMs,
    500,
  );
}

async function switchTo(publicKey: string): Promise<void> {
  await page.getByTestId('lock').click();
  await unlock(page, PASSPHRASE, publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v' }).waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 60_000 });
}

async function rolloutDocuments(): Promise<string[]> {
  const url = `${coordinator.url.replace(/^ws/, 'http')}/api/documents`;
  const response = await fetch(url, { headers: await proofHeaders(url, org.alice) });
  const body = (await response.json()) as { documents: string[] };
  return body.documents.filter((d) => d.startsWith('fleet/rollout-'));
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
  host = await prepareHost(dir, 'h1');
  const h1Key = JSON.parse(await fs.readFile(host.keyFile, 'utf8')) as { publicKey: string };
  const base = basePolicy(org);
  // The root key holder reads the fleet in the page like any viewer; what lets that key sign a
  // policy is being a root key, not this role.
  policy = {
    ...base,
    admins: [...base.admins, { name: 'root-holder', keys: [org.root.publicKey], roles: ['viewer'] }],
    groups: [{ name: 'clinics', hosts: ['h1', 'h2'], threshold: 1 }],
    roles: base.roles.filter((r) => r.name !== 'prod-ops'),
    channels: [{ name: 'stable', hosts: ['h1', 'h2'] }],
  };
  policy.admins = policy.admins.map((a) => (a.name === 'bob' ? { ...a, roles: ['viewer'] } : a));
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [hostId, hostKey] of [
    ['h1', h1Key.publicKey],
    ['h2', h2Key.publicKey],
    ['h3', h3Key.publicKey],
  ] as const) {
    const approved = await postJson(
      coordinator.url,
      '/api/enroll/approve',
      signEnrollment(org.alice, { host: hostId, hostKey, policyVersion: 1 }, new Date()),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'web-create-cache-1');
  for (const name of ['one', 'two']) {
    const closure = await buildSystemClosure({ name: `nixos-system-web-create-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  agent = startAgentProcess(host, {
    coordinators: [coordinator.url],
    adminKeys: [],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  // h1 runs closure one (generation 1), as `outpost deploy` would have put there.
  await submitIntent(
    coordinator.url,
    { host: 'h1', closure: closures[0]!, action: 'switch', validForSeconds: 3600 },
    org.alice,
    30_000,
  );
  await applied(1, closures[0]!);
  link = await startPageLink(coordinator.port);
  browser = await launchChromium();
  context = await newLaptopContext(browser);
  page = await context.newPage();
  pageErrors = collectPageErrors(page);
  page.on('dialog', (dialog) => void dialog.accept());
  await page.goto(link.pageUrl);
  await page.getByTestId('setup').waitFor();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  for (const key of [org.carol, org.root]) {
    await page.getByText('Add another key').click();
    await importKey(page, JSON.stringify(keyFileFromSigningKey(key)), PASSPHRASE, org.root.publicKey);
  }
  await unlock(page, PASSPHRASE, org.carol.publicKey);
  await page.getByTestId('trust').filter({ hasText: 'policy v1' }).waitFor({ timeout: 30_000 });
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 60_000 });
});

test.after(async () => {
  await browser?.close();
  await link?.close();
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

const manifest = (): string =>
  JSON.stringify({ release: 'w50', hosts: { h1: closures[1]!, h2: closures[1]!, h3: closures[1]! } });

async function fillRollout(): Promise<void> {
  await go('#/rollouts');
  const panel = page.getByTestId('create-rollout');
  await panel.waitFor();
  if (!(await panel.evaluate((e) => (e as HTMLDetailsElement).open))) await panel.locator('summary').click();
  await page.getByTestId('manifest').fill(manifest());
  await page.getByTestId('rollout-channel').selectOption('stable');
  await page.getByTestId('rollout-waves').fill('first=h1\nsecond=h2');
  await page.getByTestId('rollout-id').fill('web-w50');
}

test('carol (read only) is refused before signing a rollout; nothing reaches the coordinator', async () => {
  await fillRollout();
  await page.getByTestId('rollout-preview').click();
  const message = String(await page.getByTestId('rollout-create-message').textContent());
  assert.match(message, /refused: admin carol lacks 'deploy' for h1, h2;.*nothing was signed/, failWith(message));
  assert.is(await page.getByTestId('rollout-create').isDisabled(), true, 'no plan to sign');
  assert.equal(await rolloutDocuments(), [], 'the coordinator holds no rollout');
});

test('alice creates a rollout from a manifest in the page; the agent installs from the page-signed plan', async () => {
  await switchTo(org.alice.publicKey);
  await fillRollout();
  await page.getByTestId('rollout-preview').click();
  const preview = page.getByTestId('rollout-plan-preview');
  await preview
    .waitFor({ timeout: 10_000 })
    .catch(async () =>
      assert.unreachable(failWith(String(await page.getByTestId('rollout-create-message').textContent()))),
    );
  assert.match(String(await page.getByTestId('plan-wave-1').textContent()), /first.*h1 \(gen 2\)/);
  assert.match(String(await page.getByTestId('plan-wave-2').textContent()), /second.*h2 \(gen 1\)/);
  assert.match(
    String(await page.getByTestId('plan-skipped').textContent()),
    /h3 \(in release w50, not in channel stable\)/,
  );
  assert.match(String(await page.getByTestId('plan-needs').textContent()), /your signature is enough for every host/);
  await screenshot(page, 'web-rollout-create');
  await page.getByTestId('rollout-create').click();
  await page
    .getByTestId('rollout-create-message')
    .filter({ hasText: 'stored by the server' })
    .waitFor({ timeout: 20_000 })
    .catch(async () =>
      assert.unreachable(failWith(String(await page.getByTestId('rollout-create-message').textContent()))),
    );
  // The coordinator holds the plan the page signed: exactly tweetnacl's signature over the CLI's
  // bytes, judged valid by the agents' code.
  const entries = await readDoc(rolloutDocName('web-w50'), (doc) => readRolloutEntries(doc));
  const plan = entries.plans[0]!;
  assert.is(plan.signature.signature, signPayload('rollout-plan', plan.plan, org.alice).signature);
  assert.is(plan.plan.channel, 'stable');
  const signedPlan = findPlan(entries, planDigest(plan.plan));
  assert.ok(signedPlan, 'the plan counts as signed by its issuer');
  assert.is(judgeRollout(entries, signedPlan, [policy], Date.now()).state, 'running');
  // The real agent installs the release from the page-signed plan (a rollout intent).
  await applied(2, closures[1]!);
});

test('abort with rollback from the page: the rollout stops and the agent goes back to closure one', async () => {
  await go('#/rollouts/web-w50');
  await page.getByTestId('rollout-view').waitFor();
  await page.locator('[data-testid=rollout-host-h1][data-state=succeeded]').waitFor({ timeout: 60_000 });
  await page.getByTestId('rollout-abort-rollback').check();
  await page.getByTestId('rollout-reason').fill('bad release');
  await page.getByTestId('rollout-abort').click();
  await page
    .getByTestId('rollout-message')
    .filter({ hasText: 'rolled back (signed): h1 back to' })
    .waitFor({ timeout: 20_000 })
    .catch(async () => assert.unreachable(failWith(String(await page.getByTestId('rollout-message').textContent()))));
  await page.locator('[data-testid=rollout-view][data-state=aborted]').waitFor({ timeout: 30_000 });
  await applied(3, closures[0]!);
});

// A rollout alice creates with the CLI, for the page to act on.
async function createWithCli(
  release: string,
  hosts: Record<string, string>,
  waves: string[],
  id: string,
): Promise<void> {
  const file = join(dir, `release-${release}.json`);
  await fs.writeFile(file, JSON.stringify({ release, hosts }));
  const created = await runCli(
    [
      'rollout',
      'create',
      '--release',
      file,
      ...waves.flatMap((wave) => ['--wave', wave]),
      '--id',
      id,
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
}

test('carol cannot abort with rollback: refused before signing, nothing new for h1', async () => {
  // A fresh rollout to refuse on: made by alice with the CLI.
  await createWithCli('w51', { h2: closures[1]! }, ['only=h2'], 'cli-w51');
  await switchTo(org.carol.publicKey);
  await go('#/rollouts/cli-w51');
  await page.getByTestId('rollout-view').waitFor();
  const abort = page.getByTestId('rollout-abort');
  await abort.waitFor({ timeout: 30_000 });
  assert.is(await abort.isDisabled(), true, 'carol is offered no abort');
  assert.match(String(await abort.getAttribute('title')), /carol lacks 'deploy' for h2/);
});

async function goOffline(): Promise<void> {
  await link.setOffline(context, true);
  await page.locator('[data-testid=connection][data-live=false]').waitFor({ timeout: 20_000 });
}

async function reloadAndUnlock(publicKey: string): Promise<void> {
  await page.reload();
  await unlock(page, PASSPHRASE, publicKey);
  await page.getByTestId('connection').waitFor({ timeout: 30_000 });
}

// The "New rollout" form filled for one host, previewed until the plan shows (after an offline
// reload the stored documents load in a moment).
async function previewOfflineRollout(id: string, release: string, closure: string): Promise<string> {
  await go('#/rollouts');
  const panel = page.getByTestId('create-rollout');
  await panel.waitFor();
  if (!(await panel.evaluate((e) => (e as HTMLDetailsElement).open))) await panel.locator('summary').click();
  await page.getByTestId('manifest').fill(JSON.stringify({ release, hosts: { h1: closure } }));
  await page.getByTestId('rollout-channel').selectOption('');
  await page.getByTestId('rollout-waves').fill('first=h1');
  await page.getByTestId('rollout-id').fill(id);
  await waitFor(
    `the page plans ${id} from its stored documents`,
    async () => {
      await page.getByTestId('rollout-preview').click();
      return page.getByTestId('plan-offline').isVisible();
    },
    30_000,
    500,
  ).catch(async () => {
    const shown = await page.getByTestId('rollout-create-message').allTextContents();
    assert.unreachable(failWith(`no offline plan: ${shown.join(' | ')}`));
  });
  return String(await page.getByTestId('plan-wave-1').textContent());
}

test('alice creates a rollout with no link: planned from stored documents, kept across an offline reload, created when the link returns, and the agent installs wave 1', async () => {
  await switchTo(org.alice.publicKey);
  await go('#/rollouts');
  // The rollouts the page lists are followed (and stored) before the link goes.
  await page.getByTestId('rollout-row-cli-w51').waitFor({ timeout: 30_000 });
  await goOffline();
  await reloadAndUnlock(org.alice.publicKey);
  // h1 holds generations 1 (deploy), 2 (rollout web-w50) and 3 (rollback): the plan takes 4.
  assert.match(await previewOfflineRollout('off-w52', 'w52', closures[1]!), /first.*h1 \(gen 4\)/);
  const warning = String(await page.getByTestId('plan-offline').textContent());
  assert.match(warning, /NO LINK: planned from the documents this browser stored, as of .*\(.* ago\)/);
  assert.match(warning, /Hosts enrolled since are missing from it/);
  await screenshot(page, 'web-rollout-create-offline');
  await page.getByTestId('rollout-create').click();
  await page
    .getByTestId('rollout-create-message')
    .filter({ hasText: 'rollout off-w52: signed — not yet delivered' })
    .waitFor({ timeout: 20_000 })
    .catch(async () =>
      assert.unreachable(failWith(String(await page.getByTestId('rollout-create-message').textContent()))),
    );
  await page.locator('[data-testid=plan-pending][data-delivered=false]').waitFor({ timeout: 10_000 });

  await reloadAndUnlock(org.alice.publicKey);
  await go('#/rollouts');
  const pending = page.locator('[data-testid=plan-pending][data-delivered=false]');
  await pending.waitFor({ timeout: 30_000 });
  assert.match(String(await pending.textContent()), /off-w52 of w52: 1 waves, 1 hosts.*NOT YET DELIVERED/);
  assert.match(String(await page.getByTestId('pending-count').textContent()), /1 signed action/);
  assert.not.ok((await rolloutDocuments()).includes('fleet/rollout-off-w52'), 'nothing reached the coordinator');

  await link.setOffline(context, false);
  await waitFor(
    'the coordinator stores the plan signed offline',
    async () => (await rolloutDocuments()).includes('fleet/rollout-off-w52'),
    30_000,
    500,
  );
  const entries = await readDoc(rolloutDocName('off-w52'), (doc) => readRolloutEntries(doc));
  const plan = entries.plans[0]!;
  assert.is(plan.signature.signature, signPayload('rollout-plan', plan.plan, org.alice).signature);
  assert.equal(
    plan.plan.waves.map((w) => w.hosts.map((h) => [h.host, h.generation])),
    [[['h1', 4]]],
  );
  const signedPlan = findPlan(entries, planDigest(plan.plan));
  assert.ok(signedPlan, 'the plan counts as signed by its issuer');
  // The agent may already have installed the single wave by now (CI saw 'complete' here).
  assert.ok(
    ['running', 'complete'].includes(judgeRollout(entries, signedPlan, [policy], Date.now()).state),
    'the plan is judged as a live rollout',
  );
  await applied(4, closures[1]!);
  await waitFor(
    'off-w52 completes once h1 reports generation 4',
    async () =>
      (
        await readDoc(rolloutDocName('off-w52'), (doc) =>
          judgeRollout(readRolloutEntries(doc), signedPlan, [policy], Date.now()),
        )
      ).state === 'complete',
    60_000,
    500,
  );
  // The same plan sent again (an outbox retrying after a lost answer) is not a new plan: its own
  // generation, delivered meanwhile, does not make the coordinator refuse it.
  const again = await postJson(coordinator.url, '/api/rollouts', { plan });
  assert.is(again.status, 200, again.body.error);
  assert.is((again.body as { stored?: boolean }).stored, false);
  // Once the server lists it and its document holds the plan, it is an ordinary rollout.
  await page.getByTestId('rollout-row-off-w52').waitFor({ timeout: 30_000 });
  await page.getByTestId('plan-pending').waitFor({ state: 'detached', timeout: 30_000 });
});

test('a rollout signed with no link whose generation a deploy took meanwhile: the coordinator refuses it, the page shows REFUSED with the reason, the deploy is applied', async () => {
  await go('#/rollouts');
  await page.getByTestId('rollout-row-off-w52').waitFor({ timeout: 30_000 });
  await goOffline();
  assert.match(await previewOfflineRollout('off-w53', 'w53', closures[0]!), /first.*h1 \(gen 5\)/);
  await page.getByTestId('rollout-create').click();
  await page
    .getByTestId('rollout-create-message')
    .filter({ hasText: 'not yet delivered' })
    .waitFor({ timeout: 20_000 });
  // Meanwhile another admin deploys to h1 with the CLI: it takes generation 5.
  const deployed = await submitIntent(
    coordinator.url,
    { host: 'h1', closure: closures[0]!, action: 'switch', validForSeconds: 3600 },
    org.alice,
    30_000,
  );
  assert.is(deployed.signed.intent.generation, 5);
  await link.setOffline(context, false);
  const refused = page.getByTestId('plan-refused');
  await refused
    .waitFor({ timeout: 30_000 })
    .catch(async () =>
      assert.unreachable(failWith(`not refused: ${await page.getByTestId('plan-pending').allTextContents()}`)),
    );
  assert.match(
    String(await refused.textContent()),
    /rollout off-w53: REFUSED by the server: rollout off-w53 refused: h1: generation 5 is taken \(issued up to 5\)\. Something was deployed since the plan was made; create the plan again/,
  );
  assert.is(await page.getByTestId('plan-pending').count(), 0, 'never shown as waiting or created');
  assert.not.ok((await rolloutDocuments()).includes('fleet/rollout-off-w53'), 'the coordinator holds no such rollout');
  // No equivocation at h1: the deploy made meanwhile is applied.
  await applied(5, closures[0]!);
  await refused.getByRole('button', { name: 'Dismiss' }).click();
  await refused.waitFor({ state: 'detached', timeout: 10_000 });
});

test('fleet filter by channel and by site, keyboard reachable', async () => {
  await go('#/');
  const channel = page.getByTestId('channel-filter');
  await channel.waitFor();
  await channel.focus();
  await page.keyboard.press('ArrowDown');
  await channel.selectOption('stable');
  await page.getByTestId('row-h3').waitFor({ state: 'detached', timeout: 10_000 });
  await page.getByTestId('row-h1').waitFor();
  await channel.selectOption('');
  await page.getByTestId('row-h3').waitFor();
});

test('policy draft: alice (admin, no root key) is refused before signing; the root key signs and pushes; readers walk to it', async () => {
  await switchTo(org.alice.publicKey);
  await go('#/policy');
  await page.getByTestId('policy-view').waitFor();
  const panel = page.getByTestId('policy-draft');
  if (!(await panel.evaluate((e) => (e as HTMLDetailsElement).open))) await panel.locator('summary').click();
  await page.getByTestId('draft-start').click();
  await page.getByTestId('draft-windows-group').selectOption('clinics');
  await page.getByTestId('draft-windows-maintenance').fill('Tue 03:00-05:00');
  await page.getByTestId('draft-windows-tz').fill('UTC');
  await page.getByTestId('draft-windows-save').click();
  await page.getByTestId('draft-diff').filter({ hasText: 'groups clinics' }).waitFor({ timeout: 10_000 });
  await page.getByTestId('draft-group-name').fill('lab');
  await page.getByTestId('draft-group-hosts').fill('h3');
  await page.getByTestId('draft-group-save').click();
  // Each edit is saved to IndexedDB before it shows.
  await page.getByTestId('draft-diff').filter({ hasText: 'groups lab' }).waitFor({ timeout: 10_000 });
  // A relay for the new group and a second timestamp key, with the CLI's edits: a malformed key and
  // an unknown group are refused with the CLI's reasons and change nothing.
  await page.getByTestId('draft-relay-name').fill('lab-relay');
  await page.getByTestId('draft-relay-key').fill('not-a-key');
  await page.getByTestId('draft-relay-groups').fill('lab');
  await page.getByTestId('draft-relay-save').click();
  assert.match(
    String(await page.getByTestId('draft-message').textContent()),
    /refused: the policy would be invalid, nothing was written: relays\.0\.key: expected a base64 Ed25519 public key/,
  );
  await page.getByTestId('draft-relay-key').fill(labRelayKey.publicKey);
  await page.getByTestId('draft-relay-groups').fill('nolab');
  await page.getByTestId('draft-relay-save').click();
  assert.match(
    String(await page.getByTestId('draft-message').textContent()),
    /refused: relay lab-relay names unknown group nolab; define it first/,
  );
  await page.getByTestId('draft-relay-groups').fill('lab');
  await page.getByTestId('draft-relay-save').click();
  await page.getByTestId('draft-diff').filter({ hasText: 'relays lab-relay' }).waitFor({ timeout: 10_000 });
  await page.getByTestId('draft-timestamp-key').fill(secondTimestampKey.publicKey);
  await page.getByTestId('draft-timestamp-save').click();
  await page.getByTestId('draft-diff').filter({ hasText: 'timestampKeys' }).waitFor({ timeout: 10_000 });
  // Carol's key is revoked (the CLI's revoke-key); a root key is refused with the CLI's reason.
  await page.getByTestId('draft-revoke-key').fill(org.root.publicKey);
  await page.getByTestId('draft-revoke-save').click();
  assert.match(
    String(await page.getByTestId('draft-message').textContent()),
    /refused: key .* is a root key of this policy; replace it first with 'outpost policy rotate-root', then revoke it/,
  );
  await page.getByTestId('draft-revoke-key').fill(org.carol.publicKey);
  await page.getByTestId('draft-revoke-save').click();
  await page.getByTestId('draft-diff').filter({ hasText: 'revokedKeys' }).waitFor({ timeout: 10_000 });
  assert.match(String(await page.getByTestId('draft-message').textContent()), /removed the key from admin carol/);
  const diff = String(await page.getByTestId('draft-diff').textContent());
  assert.match(diff, /~ groups clinics: .*maintenanceWindows: Tue 03:00-05:00/);
  assert.match(diff, /\+ groups lab: hosts: h3/);
  assert.match(diff, /\+ relays lab-relay: /);
  assert.ok(diff.includes(`+ timestampKeys ${secondTimestampKey.publicKey}`), diff);
  assert.ok(diff.includes(`+ revokedKeys ${org.carol.publicKey}`), diff);
  await page.getByTestId('draft-sign').click();
  const refusal = String(await page.getByTestId('draft-message').textContent());
  assert.match(refusal, /refused: this key is not one of the org root keys .* nothing was signed/, failWith(refusal));
  assert.match(String(await page.getByTestId('draft-signatures').textContent()), /signed by 0 of 1/);
  assert.is(await page.getByTestId('draft-push').isDisabled(), true);

  // The draft is kept in this browser: the root key holder unlocks and signs the same draft.
  await switchTo(org.root.publicKey);
  await go('#/policy');
  await page.getByTestId('draft-sign').waitFor();
  await page.getByTestId('draft-sign').click();
  await page
    .locator('[data-testid=draft-signatures][data-accepted=true]')
    .waitFor({ timeout: 10_000 })
    .catch(async () => assert.unreachable(failWith(String(await page.getByTestId('draft-message').textContent()))));
  await screenshot(page, 'web-policy-draft');
  await page.getByTestId('draft-push').click({ noWaitAfter: true, timeout: 60_000 });
  await page
    .getByTestId('draft-message')
    .filter({ hasText: 'stored by the server' })
    .waitFor({ timeout: 20_000 })
    .catch(async () => assert.unreachable(failWith(String(await page.getByTestId('draft-message').textContent()))));
  // Exactly `outpost policy sign`'s signature, and readers walk to it from the pinned root.
  const stored = await readDoc('fleet/policy', (doc) => readPolicies(doc));
  const v2 = stored.find((p) => p.policy.version === 2)!;
  assert.ok(v2, 'the coordinator holds version 2');
  assert.is(v2.signatures[0]!.signature, signPayload('policy', v2.policy, org.root).signature);
  const shown = await runCli(
    [
      'policy',
      'show',
      '--coordinator',
      coordinator.url,
      '--org-root',
      org.root.publicKey,
      '--key',
      join(dir, 'alice.key'),
      '--json',
    ],
    { timeoutMs: 60_000 },
  );
  assert.is(shown.code, 0, shown.stderr);
  const show = JSON.parse(shown.stdout) as { version: number; chain: number[]; policy: Policy };
  assert.is(show.version, 2);
  assert.equal(show.chain, [1, 2]);
  assert.equal(show.policy.groups.find((g) => g.name === 'clinics')?.maintenanceWindows, ['Tue 03:00-05:00']);
  const labRelay = show.policy.relays.find((r) => r.name === 'lab-relay');
  assert.equal([labRelay?.key, labRelay?.groups], [labRelayKey.publicKey, ['lab']]);
  assert.equal(show.policy.timestampKeys, [org.timestamp.publicKey, secondTimestampKey.publicKey]);
  assert.equal(show.policy.revokedKeys, [org.carol.publicKey]);
  assert.equal(show.policy.admins.find((a) => a.name === 'carol')?.keys, []);
  // The real agent walks to the page-signed version.
  await waitFor(
    'the agent trusts policy version 2',
    async () => (await h1Status())?.trust?.policyVersion === 2,
    60_000,
    500,
  );
});

test('a deploy from the page to a host a rollout has not reached yet is refused, naming the rollout; nothing is signed', async () => {
  // A rollout whose second wave (h3) waits for h2, which has no agent: h3's generation is in the
  // rollout document only.
  await createWithCli('w54', { h2: closures[1]!, h3: closures[1]! }, ['first=h2', 'second=h3'], 'cli-w54');
  await switchTo(org.alice.publicKey);
  // The page refuses a deploy while a rollout it lists is not read yet ("try again in a moment",
  // after up to 5 s); that refusal names the rollout too. The test is about the refusal that
  // comes from the rollout's content, so the page first holds the rollout, judged running.
  await go('#/rollouts');
  await page.locator('[data-testid=rollout-row-cli-w54][data-state=running]').waitFor({ timeout: 30_000 });
  await go('#/host/h3');
  await page.getByTestId('host-view').waitFor();
  await page.getByTestId('deploy-closure').fill(closures[0]!);
  await page.getByTestId('deploy-button').click();
  const message = page.getByTestId('action-message');
  await message
    .filter({ hasText: 'rollout cli-w54' })
    .waitFor({ timeout: 20_000 })
    .catch(async () => assert.unreachable(failWith(String(await message.textContent()))));
  const text = String(await message.textContent());
  assert.match(
    text,
    /h3 is in wave 2 \(second\) of rollout cli-w54 \(release w54, running\), which gives it generation \d+/,
  );
  assert.match(text, /outpost rollout abort cli-w54/);
  assert.not.match(text, /--generation/, 'the page offers no generation of its own');
  assert.is(await readDoc(desiredDocName('h3'), (doc) => readIntentEntries(doc).entries.length), 0, 'nothing signed');
});

test.run();
