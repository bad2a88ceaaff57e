import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment, signEnrollRequest } from '../../admin/enroll-entries.js';
import { type RunningCoordinator, startCoordinator } from '../../coordinator/server.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { ENROLLMENT_DOC, readEnrollRequests } from '../../shared/documents/fleet.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { createMemoryLogger } from '../../shared/node/log.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, runCli, temporaryDirectory } from '../harness/processes.js';

// Issue 11, item 11: strangers filled fleet/enrollment with self-signed requests that carry no
// credential (5,366 permanent entries in 11 minutes). Here a stranger does the same against a real
// coordinator over HTTP, from several loopback source addresses (127.0.0.x): one source is rate
// limited, the document stops at its cap with an answer that names the fix, pending requests
// expire, and an admin with `enroll` clears them with `outpost enroll clear`. The limits are set
// small so the test runs in seconds; the defaults are in coordinator/enrollment-limits.ts.
const LIMITS = { perSourceBurst: 10, perSourceRefillMs: 5_000, maxPending: 40, pendingTtlMs: 30_000 };
const org = makeTestOrg();
let dir = '';
let coordinator: RunningCoordinator;
const memory = createMemoryLogger('coordinator');
const keyFiles: Record<string, string> = {};

interface Answer {
  status: number;
  error: string | undefined;
  retryAfter: string | undefined;
}

// POST /api/enroll from a chosen loopback source address, as a stranger on the network would.
function postFrom(source: string, body: unknown): Promise<Answer> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: coordinator.port,
        localAddress: source,
        path: '/api/enroll',
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            error: (JSON.parse(text) as { error?: string }).error,
            retryAfter: res.headers['retry-after'],
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

// A self-signed request for a made-up host: no token, no approval, a fresh key every time.
const strangerRequest = (n: number) =>
  signEnrollRequest(generateSigningKey('stranger'), `junk-${n}`, undefined, new Date());

let counter = 0;
async function flood(source: string, count: number): Promise<Answer[]> {
  const answers: Answer[] = [];
  for (let i = 0; i < count; i++) answers.push(await postFrom(source, strangerRequest(counter++)));
  return answers;
}

async function storedRequests(): Promise<number> {
  return readEnrollRequests((await coordinator.host.pin(ENROLLMENT_DOC)).doc).length;
}

async function health(): Promise<{ enrollment: { pendingRequests: number; refusedForRate: number } }> {
  return (await (await fetch(`${httpBaseFromWs(coordinator.url)}/healthz`)).json()) as {
    enrollment: { pendingRequests: number; refusedForRate: number };
  };
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test.before(async () => {
  dir = temporaryDirectory('attack-enroll-flood');
  coordinator = await startCoordinator({
    dataDir: join(dir, 'coordinator'),
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 60_000,
    logger: memory.logger,
    orgRootKeys: [org.root.publicKey],
    enrollmentLimits: LIMITS,
  });
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const name of ['alice', 'carol'] as const) {
    keyFiles[name] = join(dir, `${name}.key`);
    await writeKeyFile(keyFiles[name], org[name]);
  }
  // One real host, bound by approval before the flood: nothing the stranger or a clear does may touch it.
  const h1 = generateSigningKey('h1');
  const approved = await postJson(
    coordinator.url,
    '/api/enroll/approve',
    signEnrollment(org.alice, { host: 'h1', hostKey: h1.publicKey, policyVersion: 1 }, new Date()),
  );
  assert.is(approved.status, 200, approved.body.error);
});

test.after(async () => {
  await coordinator.close();
  removeDirectory(dir);
});

test('one source gets a burst, then 429 with Retry-After; another source is still served', async () => {
  const started = Date.now();
  const answers = await flood('127.0.0.2', 25);
  const refilled = Math.ceil((Date.now() - started) / LIMITS.perSourceRefillMs);
  const accepted = answers.filter((a) => a.status === 200).length;
  assert.ok(accepted <= LIMITS.perSourceBurst + refilled, `${accepted} accepted from one source`);
  const limited = answers.filter((a) => a.status === 429);
  assert.is(limited.length, 25 - accepted, 'the rest are refused');
  assert.ok(limited.length >= 25 - LIMITS.perSourceBurst - refilled);
  assert.match(String(limited[0]!.error), /too many requests from 127\.0\.0\.2: .* try again in \d+ s/);
  assert.ok(Number(limited[0]!.retryAfter) >= 1, 'Retry-After says when');
  const other = await postFrom('127.0.0.3', strangerRequest(counter++));
  assert.is(other.status, 200, 'another source is not affected');
  assert.ok((await health()).enrollment.refusedForRate >= limited.length);
});

test('many sources: fleet/enrollment stops at its cap, and the refusal names the fix', async () => {
  const sources = Array.from({ length: 8 }, (_, i) => `127.0.1.${i + 1}`);
  const answers = (await Promise.all(sources.map((s) => flood(s, LIMITS.perSourceBurst)))).flat();
  const full = answers.filter((a) => a.status === 429 && /pending requests, the limit/.test(String(a.error)));
  assert.ok(full.length > 0, 'the cap was reached');
  assert.match(
    String(full[0]!.error),
    /fleet\/enrollment holds 40 pending requests, the limit: .*outpost enroll list.*outpost enroll clear/,
  );
  assert.is(await storedRequests(), LIMITS.maxPending, 'no more than the cap is stored');
  assert.is((await health()).enrollment.pendingRequests, LIMITS.maxPending);
  // The log grew by one entry per stored request, not per attempt.
  assert.ok((await coordinator.log.read(ENROLLMENT_DOC)).length <= LIMITS.maxPending + 2);
});

test('enroll clear: an admin without enroll keeps them all; alice drops every pending request, bound hosts stay', async () => {
  const byCarol = await runCli([
    'enroll',
    'clear',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFiles.carol!,
    '--all',
    '--json',
  ]);
  assert.is(byCarol.code, 0, byCarol.stderr);
  // All 40 unless some already expired on a slow machine (expired ones are dropped, not cleared).
  const kept = await storedRequests();
  assert.ok(kept > LIMITS.maxPending / 2, `${kept} pending`);
  assert.equal(JSON.parse(byCarol.stdout), { cleared: 0, notPermitted: kept });
  const byAlice = await runCli([
    'enroll',
    'clear',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFiles.alice!,
    '--all',
  ]);
  assert.is(byAlice.code, 0, byAlice.stderr);
  assert.match(byAlice.stdout, new RegExp(`cleared ${kept} pending requests \\(bound hosts are untouched\\)`));
  assert.is(await storedRequests(), 0);
  const list = await runCli([
    'enroll',
    'list',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFiles.alice!,
    '--org-root',
    org.root.publicKey,
    '--json',
  ]);
  const listing = JSON.parse(list.stdout) as { bound: { host: string }[]; pending: unknown[] };
  assert.equal(
    listing.bound.map((b) => b.host),
    ['h1'],
  );
  assert.equal(listing.pending, []);
  // Room again: a request is taken.
  assert.is((await postFrom('127.0.2.1', strangerRequest(counter++))).status, 200);
});

test('enroll clear names what is missing: --host or --all, and --host-key only with --host', async () => {
  const base = ['enroll', 'clear', '--coordinator', coordinator.url, '--key', keyFiles.alice!];
  const [neither, keyAlone] = await Promise.all([
    runCli(base),
    runCli([...base, '--all', '--host-key', org.alice.publicKey]),
  ]);
  assert.is(neither.code, 2);
  assert.match(neither.stderr, /--host: give --host ID \(optionally with --host-key KEY\) or --all, one of the two/);
  assert.is(keyAlone.code, 2);
  assert.match(keyAlone.stderr, /--host-key: give --host too/);
});

test('pending requests expire: once their time is up the next write drops them', async () => {
  await Promise.all(['127.0.3.1', '127.0.3.2'].map((s) => flood(s, 5)));
  assert.is(await storedRequests(), 11);
  await sleep(LIMITS.pendingTtlMs + 1_000);
  assert.is((await postFrom('127.0.3.3', strangerRequest(counter++))).status, 200);
  assert.is(await storedRequests(), 1, 'only the new request is left');
});

test('a request whose signed time is far from the coordinator clock is refused, naming the clock', async () => {
  const stale = signEnrollRequest(generateSigningKey('old'), 'h7', undefined, new Date(Date.now() - 3 * 86_400_000));
  const answer = await postFrom('127.0.4.1', stale);
  assert.is(answer.status, 400);
  assert.match(String(answer.error), /72 h behind the coordinator's .*set the host's clock \(NTP\)/);
});

test.run();
