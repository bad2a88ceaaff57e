import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { type SignedEnrollRequest, signedEnrollRequestSchema } from '../../shared/schemas/policy.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { basePolicy, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type CliResult,
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Issue 11, item 3: a relay forwards /api/enroll. A compromised relay that lifts h4's token out of
// the request it forwards and submits it first with a key of its own must not be enrolled, and h4
// must be. A token file that really was copied (two keys prove they hold it) is a conflict that
// admins see in `outpost enroll list`, never a silent lock-out.
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
let relay: Server;
let relayUrl = '';
const keys: Record<string, { file: string; publicKey: string }> = {};
let relayKey: SigningKey;
// What the compromised relay got back for its own attempts.
const hijacks: { what: string; status: number; body: { enrolled?: boolean; error?: string } }[] = [];

const file = (name: string): string => join(dir, name);

async function ok(...args: string[]): Promise<string> {
  const result = await runCli(args);
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

async function readBody(req: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of req) text += (chunk as Buffer).toString();
  return text;
}

async function postUpstream(body: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${httpBaseFromWs(coordinator.url)}/api/enroll`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  return { status: response.status, text: await response.text() };
}

// The relay's own request for the host, carrying the token it saw, signed by its own key; with
// the proof signature copied from the host's request, or none.
function forgedFrom(seen: SignedEnrollRequest, copyProof: boolean): SignedEnrollRequest {
  const request = { ...seen.request, hostKey: relayKey.publicKey };
  return {
    request,
    signature: signPayload('enroll-request', request, relayKey),
    ...(copyProof && seen.tokenProof ? { tokenProof: seen.tokenProof } : {}),
  };
}

// A compromised relay in the host's path: for every enrollment request it forwards, it first
// tries to enroll the host under its own key, then passes the real request on, as relays do.
function startCompromisedRelay(): Promise<void> {
  relay = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      if (req.method === 'POST' && req.url === '/api/enroll') {
        const seen = signedEnrollRequestSchema.parse(JSON.parse(body));
        if (seen.request.token) {
          for (const copyProof of [false, true]) {
            const answer = await postUpstream(JSON.stringify(forgedFrom(seen, copyProof)));
            hijacks.push({
              what: `${seen.request.host} ${copyProof ? 'with the copied proof' : 'without proof'}`,
              status: answer.status,
              body: JSON.parse(answer.text) as { enrolled?: boolean; error?: string },
            });
          }
        }
      }
      const upstream = await postUpstream(body);
      res.writeHead(upstream.status, { 'content-type': 'application/json' });
      res.end(upstream.text);
    })();
  });
  return new Promise((resolve) =>
    relay.listen(0, '127.0.0.1', () => {
      relayUrl = `ws://127.0.0.1:${(relay.address() as AddressInfo).port}`;
      resolve();
    }),
  );
}

interface Listing {
  bound: { host: string; hostKey: string; via: string }[];
  pending: { host: string; hostKey: string; tokenProblem: string | null }[];
  conflicts: { host: string; boundKey: string; otherKey: string }[];
}

async function list(): Promise<Listing> {
  return JSON.parse(
    await ok(
      'enroll',
      'list',
      '--coordinator',
      coordinator.url,
      '--key',
      keys.alice!.file,
      '--org-root',
      keys.root!.publicKey,
      '--json',
    ),
  ) as Listing;
}

function request(endpoint: string, host: string, key: string, token: string): Promise<CliResult> {
  return runCli([
    'enroll',
    'request',
    '--coordinator',
    endpoint,
    '--host',
    host,
    '--key',
    keys[key]!.file,
    '--token',
    token,
    '--json',
  ]);
}

async function makeToken(host: string): Promise<string> {
  const out = file(`${host}.token`);
  await ok(
    'enroll',
    'token',
    '--key',
    keys.alice!.file,
    '--host',
    host,
    '--expires',
    '1h',
    '--coordinator',
    coordinator.url,
    '--out',
    out,
  );
  return out;
}

test.before(async () => {
  dir = temporaryDirectory('attack-enroll-hijack');
  await Promise.all(
    ['root', 'alice', 'h4', 'h5', 'thief'].map(async (name) => {
      const out = await ok('keygen', '--out', file(`${name}.key`), '--name', name, '--json');
      keys[name] = { file: file(`${name}.key`), publicKey: (JSON.parse(out) as { publicKey: string }).publicKey };
    }),
  );
  relayKey = generateSigningKey('relay-r1');
  coordinator = await startCoordinatorProcess(file('coordinator'), file('coordinator.log'), 0, [
    '--org-root',
    keys.root!.publicKey,
  ]);
  const [root, alice] = await Promise.all(['root', 'alice'].map((name) => readKeyFile(keys[name]!.file)));
  const org = {
    root: root!,
    alice: alice!,
    bob: generateSigningKey('bob'),
    carol: generateSigningKey('carol'),
    timestamp: generateSigningKey('timestamp'),
  };
  const policy = basePolicy(org, {
    relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h4', 'h5'], groups: [] }],
  });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  await startCompromisedRelay();
});

test.after(async () => {
  await new Promise((resolve) => relay?.close(resolve));
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a relay that lifts h4 token out of the request it forwards is refused; h4 is enrolled under its own key', async () => {
  const token = await makeToken('h4');
  const asked = await request(relayUrl, 'h4', 'h4', token);
  assert.is(asked.code, 0, asked.stderr);
  assert.equal(
    hijacks.map((h) => [h.what, h.status]),
    [
      ['h4 without proof', 400],
      ['h4 with the copied proof', 400],
    ],
  );
  for (const hijack of hijacks)
    assert.match(String(hijack.body.error), /does not prove it holds the token file/, hijack.what);
  assert.is((JSON.parse(asked.stdout) as { enrolled: boolean }).enrolled, true, 'the real h4 is enrolled');
  const listing = await list();
  assert.equal(
    listing.bound.filter((b) => b.host === 'h4'),
    [{ host: 'h4', hostKey: keys.h4!.publicKey, via: 'token' }],
  );
  assert.not.ok(JSON.stringify(listing).includes(relayKey.publicKey), 'the relay key is nowhere in fleet/enrollment');
  assert.match(coordinator.logs(), /"event":"enrollment-refused"[^\n]*does not prove it holds the token file/);
});

test('a copied token file used by a second key is a conflict admins see in enroll list, settled by an approval', async () => {
  const token = await makeToken('h5');
  // Someone who copied the token file enrolls first (directly, with a valid proof)…
  const stolen = await request(coordinator.url, 'h5', 'thief', token);
  assert.is((JSON.parse(stolen.stdout) as { enrolled: boolean }).enrolled, true, stolen.stderr);
  // …then the real host presents the same token: not bound, but never silently lost.
  const real = await request(relayUrl, 'h5', 'h5', token);
  assert.is(real.code, 0, real.stderr);
  const answer = JSON.parse(real.stdout) as { enrolled: boolean; conflict?: string };
  assert.is(answer.enrolled, false);
  assert.match(String(answer.conflict), /h5 is already bound to key .* \(by token\).*recorded as a conflict/);
  const listing = await list();
  assert.equal(
    listing.conflicts.map((c) => [c.host, c.boundKey, c.otherKey]),
    [['h5', keys.thief!.publicKey, keys.h5!.publicKey]],
  );
  assert.ok(listing.pending.some((p) => p.host === 'h5' && p.hostKey === keys.h5!.publicKey));
  const human = await ok(
    'enroll',
    'list',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--org-root',
    keys.root!.publicKey,
  );
  assert.match(human, /TOKEN CONFLICTS \(1\)/);
  assert.match(coordinator.logs(), /"event":"enrollment-conflict"/);
  await ok(
    'enroll',
    'approve',
    '--coordinator',
    coordinator.url,
    '--key',
    keys.alice!.file,
    '--host',
    'h5',
    '--host-key',
    keys.h5!.publicKey,
  );
  const settled = await list();
  assert.equal(settled.conflicts, []);
  assert.ok(settled.bound.some((b) => b.host === 'h5' && b.hostKey === keys.h5!.publicKey && b.via === 'approval'));
});

test('a token made without a proof key (older outpost) is refused, naming the fix', async () => {
  const [alice, h4] = await Promise.all([readKeyFile(keys.alice!.file), readKeyFile(keys.h4!.file)]);
  const token = {
    kind: 'enroll-token' as const,
    host: 'h6',
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    nonce: 'ab'.repeat(16),
    policyVersion: 1,
  };
  const request = {
    kind: 'enroll-request' as const,
    host: 'h6',
    hostKey: h4.publicKey,
    requestedAt: new Date().toISOString(),
    token: { token, signatures: [signPayload('enroll-token', token, alice)] },
  };
  const answer = await postUpstream(
    JSON.stringify({ request, signature: signPayload('enroll-request', request, h4) } satisfies SignedEnrollRequest),
  );
  assert.is(answer.status, 400);
  assert.match(answer.text, /has no proof key \(made by an older outpost\).*outpost enroll token/);
});

test.run();
