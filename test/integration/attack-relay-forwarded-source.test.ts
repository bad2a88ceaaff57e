import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import {
  authHeaders,
  FORWARDED_FOR_HEADER,
  forwardedProofTarget,
  signAuthProof,
} from '../../shared/sync/auth-proof.js';
import { fetchChallenge } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Fuzz finding 7 (docs/fuzzing.md): a relay passes /api/enroll and /api/policy on from its own
// address, so the coordinator's per-source rate limit counted a whole site as one source, and
// anyone at the site could keep those paths answered 429 for everyone else there. Now a relay with
// its key names each client's source with a proof signed for the path and that source; the
// coordinator counts each client apart, ignores the name from anyone but a relay of the policy, and
// gives a relay's site as a whole 16 clients' worth. Real coordinator and relay processes; the
// attackers speak HTTP from their own loopback addresses (127.0.0.x).
const BURST = 3;
const org = makeTestOrg();
const dir = temporaryDirectory('forwarded-source');
const relayKey = generateSigningKey('site-1');
let coordinator: DaemonProcess & { url: string; port: number };
let relay: DaemonProcess & { url: string; port: number };

interface Answer {
  status: number;
  error: string;
}

function post(
  port: number,
  from: string,
  path: string,
  headers: Record<string, string> = {},
  body: unknown = {},
): Promise<Answer> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        localAddress: from,
        path,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), ...headers },
      },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => {
          let error = text;
          try {
            error = String((JSON.parse(text) as { error?: string }).error ?? '');
          } catch {
            // not JSON: keep the text
          }
          resolve({ status: res.statusCode ?? 0, error });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

// What a relay with `key` sends to name `source` for `path`.
async function forwardedHeaders(key: SigningKey, path: string, source: string): Promise<Record<string, string>> {
  return {
    [FORWARDED_FOR_HEADER]: source,
    ...authHeaders(
      signAuthProof(key, await fetchChallenge(coordinator.url, 10_000), forwardedProofTarget(path, source)),
    ),
  };
}

test.before(async () => {
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--enroll-burst',
    String(BURST),
    '--enroll-refill',
    '600',
  ]);
  const policy = basePolicy(org, {
    relays: [{ name: 'site-1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }],
  });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  const relayKeyFile = join(dir, 'relay.key');
  await writeKeyFile(relayKeyFile, relayKey);
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', relayKeyFile, '--org-root', org.root.publicKey],
  });
});

test.after(async () => {
  await relay?.stop();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test("one client at a site uses up its own budget, not the site's: its neighbour behind the same relay is still served", async () => {
  const flooder: Answer[] = [];
  for (let i = 0; i <= BURST; i++) flooder.push(await post(relay.port, '127.0.0.2', '/api/enroll'));
  assert.equal(
    flooder.slice(0, BURST).map((a) => a.status),
    Array(BURST).fill(400),
    'within its budget the (empty) request reaches the coordinator and is refused as malformed',
  );
  assert.is(flooder[BURST]!.status, 429, 'then the flooding client is limited');
  assert.match(flooder[BURST]!.error, /too many requests from 127\.0\.0\.2 via relay:site-1/);
  const neighbour = await post(relay.port, '127.0.0.3', '/api/enroll');
  assert.is(neighbour.status, 400, `the neighbour is not rate limited: ${neighbour.status} ${neighbour.error}`);
});

test('a stranger naming other sources is counted by its own address; so is an admin key, which is no relay', async () => {
  const answers: Answer[] = [];
  for (let i = 0; i <= BURST; i++)
    answers.push(await post(coordinator.port, '127.0.0.4', '/api/enroll', { [FORWARDED_FOR_HEADER]: `10.0.0.${i}` }));
  assert.is(answers[BURST]!.status, 429, 'an unproven name does not escape the limit');
  assert.match(answers[BURST]!.error, /too many requests from 127\.0\.0\.4:/);
  // A valid proof, by a key the policy lists as an admin, not as a relay.
  const asAdmin = await post(
    coordinator.port,
    '127.0.0.5',
    '/api/enroll',
    await forwardedHeaders(org.alice, '/api/enroll', '10.9.9.9'),
  );
  assert.is(asAdmin.status, 400);
  for (let i = 1; i < BURST; i++) assert.is((await post(coordinator.port, '127.0.0.5', '/api/enroll')).status, 400);
  assert.is(
    (await post(coordinator.port, '127.0.0.5', '/api/enroll')).status,
    429,
    "the admin's request was counted at 127.0.0.5, not as 10.9.9.9",
  );
  // The relay's proof for one source does not name another: a copied proof with a changed header.
  const headers = await forwardedHeaders(relayKey, '/api/enroll', '10.1.1.1');
  headers[FORWARDED_FOR_HEADER] = '10.1.1.2';
  const altered = await post(coordinator.port, '127.0.0.5', '/api/enroll', headers);
  assert.is(altered.status, 429, 'counted at its own (spent) address');
});

test("a compromised relay naming made-up sources stops at the site's budget of 16 clients", async () => {
  const siteBudget = BURST * 16;
  let accepted = 0;
  let refused: Answer | null = null;
  for (let i = 0; i < siteBudget + 5 && !refused; i++) {
    const answer = await post(
      coordinator.port,
      '127.0.0.6',
      '/api/enroll',
      await forwardedHeaders(relayKey, '/api/enroll', `10.2.${Math.floor(i / 250)}.${i % 250}`),
    );
    if (answer.status === 429) refused = answer;
    else accepted += 1;
  }
  // The real relay's earlier requests (test 1) came out of the same site budget.
  assert.ok(accepted <= siteBudget, `${accepted} accepted`);
  assert.ok(accepted >= siteBudget - 2 * (BURST + 1), `${accepted} accepted before the site budget ran out`);
  assert.ok(refused, 'refused once the budget is spent');
  assert.match(refused!.error, /too many requests from relay:site-1: 48 at once/);
});

test.run();
