import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { CURRENT_KEY, RESULTS_KEY, STATUS_MAP } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 11, item 12: a host (its key compromised, or its agent gone wrong) writes many large
// entries into its status document. A real coordinator process under a policy, with small limits
// so the test runs in seconds: the writer is refused once its hourly quota is used up (4429), an
// update over the size limit at once (4413), a document past its size limit (4413); each refusal
// names the limit and its flag, is logged as a `write-limit` warning with the host and document
// (throttled), and counted in /healthz. The update log never grows past the quota, and other
// hosts keep being served.

const org = makeTestOrg();
const hosts: Record<string, SigningKey> = {
  h1: generateSigningKey('h1'),
  h2: generateSigningKey('h2'),
  h3: generateSigningKey('h3'),
};
const MAX_UPDATE = 64 * 1024;
const QUOTA = 1024 * 1024;
const MAX_DOCUMENT = 768 * 1024;
const ENTRY = 'x'.repeat(60 * 1024);
type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;
const open: DocumentConnection[] = [];

function connectAs(key: SigningKey, name: string): DocumentConnection {
  const connection = connectDocument(coordinator.url, name, { identity: key, maxBackoffMs: 2000, baseBackoffMs: 500 });
  open.push(connection);
  return connection;
}

function closes(connection: DocumentConnection): { code: number; reason: string }[] {
  const seen: { code: number; reason: string }[] = [];
  connection.provider.on('connection-close', (event: { code: number; reason: string } | null) => {
    if (event) seen.push({ code: event.code, reason: event.reason });
  });
  return seen;
}

async function refusals(): Promise<Record<string, number>> {
  const health = (await (await fetch(`${httpBaseFromWs(coordinator.url)}/healthz`)).json()) as {
    refusals: Record<string, number>;
  };
  return health.refusals;
}

function limitWarnings(host: string, limit: string): Record<string, unknown>[] {
  return coordinator
    .logs()
    .split('\n')
    .filter((line) => line.includes('"event":"write-limit"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((e) => e.host === host && e.limit === limit);
}

test.before(async () => {
  dir = temporaryDirectory('attack-quotas');
  coordinator = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--max-update-size',
    String(MAX_UPDATE),
    '--max-writer-bytes-per-hour',
    String(QUOTA),
    '--max-document-size',
    String(MAX_DOCUMENT),
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [host, key] of Object.entries(hosts)) {
    const enrollment = {
      kind: 'enrollment' as const,
      host,
      hostKey: key.publicKey,
      approvedAt: new Date().toISOString(),
      policyVersion: 1,
    };
    const approved = await postJson(coordinator.url, '/api/enroll/approve', {
      enrollment,
      signatures: [signPayload('enrollment', enrollment, org.alice)],
    });
    assert.is(approved.status, 200, approved.body.error);
  }
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator?.stop();
  removeDirectory(dir);
});

test('an update adding more than --max-update-size is refused (4413) and stored nowhere', async () => {
  const writer = connectAs(hosts.h1!, 'hosts/h1/status');
  const seen = closes(writer);
  await waitForSync(writer, 10_000);
  writer.doc.getMap(STATUS_MAP).set(CURRENT_KEY, { junk: 'y'.repeat(100 * 1024) });
  const refusal = await waitFor('the refusal', () => seen.find((c) => c.code === 4413), 10_000);
  assert.match(refusal.reason, /--max-update-size/);
  writer.close();
  assert.ok((await refusals()).updateTooLarge >= 1);
  const [warning] = limitWarnings('h1', 'max-update-size');
  assert.ok(warning, 'a write-limit warning names the host');
  assert.is(warning!.document, 'hosts/h1/status');
  assert.is(warning!.level, 40, 'logged at warn');
});

test('a host rewriting large status entries is refused once its hourly quota is used (4429); one warning, not one per write', async () => {
  const writer = connectAs(hosts.h1!, 'hosts/h1/status');
  const seen = closes(writer);
  await waitForSync(writer, 10_000);
  // 40 × 60 KiB rewrites of one key: the document stays small (gc), the log would not.
  for (let i = 0; i < 40 && !seen.some((c) => c.code === 4429); i++) {
    writer.doc.getMap(STATUS_MAP).set(CURRENT_KEY, { junk: `${i}${ENTRY}` });
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  const refusal = await waitFor('the quota refusal', () => seen.find((c) => c.code === 4429), 10_000);
  assert.match(refusal.reason, /--max-writer-bytes-per-hour/);
  // The agent keeps reconnecting and resending: refused each time, logged once a minute.
  await waitFor('a second refusal after reconnecting', () => seen.filter((c) => c.code === 4429).length >= 2, 15_000);
  writer.close();
  assert.ok((await refusals()).writerQuota >= 2);
  assert.is(limitWarnings('h1', 'max-writer-bytes-per-hour').length, 1, 'throttled to one warning a minute');
});

test('a document past --max-document-size refuses writes (4413)', async () => {
  const writer = connectAs(hosts.h2!, 'hosts/h2/status');
  const seen = closes(writer);
  await waitForSync(writer, 10_000);
  for (let i = 0; i < 20 && !seen.some((c) => c.code === 4413); i++) {
    writer.doc.getArray(RESULTS_KEY).push([{ junk: `${i}${ENTRY}` }]);
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
  const refusal = await waitFor('the document-size refusal', () => seen.find((c) => c.code === 4413), 10_000);
  assert.match(refusal.reason, /--max-document-size/);
  writer.close();
  assert.ok((await refusals()).documentTooLarge >= 1);
  assert.ok(limitWarnings('h2', 'max-document-size').length === 1);
});

test('other hosts are served meanwhile: h3 writes, an admin reads it', async () => {
  const writer = connectAs(hosts.h3!, 'hosts/h3/status');
  const reader = connectAs(org.carol, 'hosts/h3/status');
  await Promise.all([waitForSync(writer, 10_000), waitForSync(reader, 10_000)]);
  writer.doc.getArray(RESULTS_KEY).push(['small and fine']);
  await waitFor(
    'carol to read h3',
    () => reader.doc.getArray(RESULTS_KEY).toArray().includes('small and fine'),
    10_000,
  );
});

test('the update log holds no more than the limits allowed', async () => {
  for (const c of open.splice(0)) c.close();
  await coordinator.stop();
  const log = await openUpdateLog(join(dir, 'data'));
  try {
    const bytes = async (document: string): Promise<number> =>
      (await log.read(document)).reduce((sum, e) => sum + e.update.length, 0);
    const h1 = await bytes('hosts/h1/status');
    const h2 = await bytes('hosts/h2/status');
    console.log(JSON.stringify({ storedBytes: { h1, h2 }, quota: QUOTA, maxDocument: MAX_DOCUMENT }));
    assert.ok(h1 <= QUOTA + 4096, `h1 stored ${h1} bytes; its quota is ${QUOTA} an hour`);
    assert.ok(h1 >= QUOTA / 2, `h1 could write until its quota was used (${h1} bytes)`);
    assert.ok(h2 <= MAX_DOCUMENT + 4096, `h2 stored ${h2} bytes; a document may hold ${MAX_DOCUMENT}`);
  } finally {
    await log.close();
  }
});

test.run();
