import { join } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { openNatsLog } from '../../coordinator/backends/nats-log.js';
import { keyFileFromSigningKey } from '../../shared/crypto/keys.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { createLogger } from '../../shared/node/log.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import {
  collectPageErrors,
  deployFromPage,
  importKey,
  launchChromium,
  newLaptopContext,
  startOutpostWeb,
  unlock,
} from '../harness/browser.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { basePolicy, makeTestOrg, pushPolicyAndEnroll } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// Issue 15: the web editor across coordinators. A 3-node NATS cluster, coordinators A and B on it
// (org root pinned, both holding the timestamp key; one signs at a time), and `outpost web` given
// both. A real Chromium unlocks the admin's key and goes live through A; A is SIGKILLed; the page
// goes live again through B without a reload, and a deploy signed in it is stored by B and
// verifies under the policy as an agent checks it.
const test = suite('two coordinators on NATS: one timestamp signer; the web editor fails over');
const org = makeTestOrg();
const PASSPHRASE = 'web failover passphrase 7';
const CLOSURE = `/nix/store/${'b'.repeat(32)}-nixos-system-failover`;
const dir = temporaryDirectory('nats-web-editor');
const onCluster = clusterCoordinators(dir);
const INTERVAL_MS = 1_000;
let cluster: NatsCluster;
let a: DaemonProcess & { url: string };
let b: DaemonProcess & { url: string };
const policy = basePolicy(org);
let browser: Browser;
const contexts: BrowserContext[] = [];
const daemons: DaemonProcess[] = [];

test.after(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  await browser?.close();
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await onCluster.stopAll();
  await cluster?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test.before(async () => {
  await writeKeyFile(join(dir, 'timestamp.key'), org.timestamp);
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  const trust = ['--org-root', org.root.publicKey, '--timestamp-key', join(dir, 'timestamp.key')];
  const interval = ['--timestamp-interval', String(INTERVAL_MS / 1000)];
  a = await onCluster.start(cluster, 'a', [...trust, ...interval]);
  b = await onCluster.start(cluster, 'b', [...trust, ...interval]);
  await pushPolicyAndEnroll(a.url, org, policy, ['h1']);
});

// Both coordinators hold the timestamp key and tick every second; the lease lets one sign at a
// time. Each timestamp comes with a checkpoint stored in the stream under the timestamp's number,
// so two signers would show as numbers taken twice, or as about two checkpoints a second: one
// signer's timer never fires more often than once a tick, however loaded the machine.
const WINDOW_MS = 8_000;
test('with the timestamp key on both, one signs at a time: checkpoint numbers unique and consecutive, one a tick', async () => {
  const log = await openNatsLog({
    kind: 'nats',
    servers: cluster.servers,
    stream: 'OUTPOST',
    replicas: 3,
    logger: createLogger('test', 'error'),
  });
  try {
    const read = async () => {
      const checkpoints = [];
      for await (const checkpoint of log.checkpoints()) checkpoints.push(checkpoint);
      return checkpoints;
    };
    const span = (list: { at: string }[]) =>
      list.length < 2 ? 0 : Date.parse(list.at(-1)!.at) - Date.parse(list[0]!.at);
    const checkpoints = await waitFor(
      `signed checkpoints over ${WINDOW_MS / 1000} s`,
      async () => {
        const all = await read();
        return span(all) >= WINDOW_MS ? all : null;
      },
      40_000,
      500,
    );
    const seqs = checkpoints.map((c) => c.seq);
    assert.equal(
      seqs,
      Array.from({ length: seqs.length }, (_, i) => seqs[0]! + i),
      `numbers: ${seqs.join(', ')}`,
    );
    const start = Date.parse(checkpoints[0]!.at);
    const within = checkpoints.filter((c) => Date.parse(c.at) - start <= WINDOW_MS);
    // One signer: at most one tick a second, 9 in 8 s (a tick's reads may move its time a little).
    assert.ok(
      within.length <= (1.5 * WINDOW_MS) / INTERVAL_MS,
      `${within.length} checkpoints in ${WINDOW_MS / 1000} s (two signers?): ${within.map((c) => c.at).join(', ')}`,
    );
  } finally {
    await log.close();
  }
});

test('outpost web given A and B: A SIGKILLed, the page goes live through B and a deploy signed there is stored', async () => {
  const web = await startOutpostWeb([a.url, b.url], join(dir, 'web.log'));
  daemons.push(web);
  browser = await launchChromium();
  const context = await newLaptopContext(browser);
  contexts.push(context);
  const page = await context.newPage();
  const errors = collectPageErrors(page);
  const failWith = (message: string) =>
    `${message}\npage errors:\n${errors.join('\n') || '(none)'}\noutpost web:\n${web.logs().slice(-3000)}`;
  await page.goto(web.url);
  await page.getByTestId('setup').waitFor();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  await unlock(page, PASSPHRASE);
  await page.getByTestId('fleet-view').waitFor();
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 30_000 });

  a.child.kill('SIGKILL');
  await a.exited;
  await page.locator('[data-testid=connection][data-live=false]').waitFor({ timeout: 30_000 });
  await page
    .locator('[data-testid=connection][data-live=true]')
    .waitFor({ timeout: 60_000 })
    .catch((error: Error) => assert.unreachable(failWith(`the page did not go live again: ${error.message}`)));
  assert.match(web.logs(), /"event":"web-forward-switched"/, failWith('outpost web did not say it moved to B'));

  await deployFromPage(page, { host: 'h1', closure: CLOSURE, generation: 1 }, failWith);
  const signed = await waitFor(
    'the intent on coordinator B',
    async () => {
      const reader = connectDocument(b.url, desiredDocName('h1'), { identity: org.alice });
      try {
        await waitForSync(reader, 10_000);
        return readIntentEntries(reader.doc).entries[0]?.signed;
      } finally {
        reader.close();
      }
    },
    30_000,
  );
  assert.is(signed.intent.closure, CLOSURE);
  assert.equal(verifyIntentUnderPolicy(signed, { host: 'h1', chain: [policy], now: Date.now() }).ok, true);
});

test.run();
