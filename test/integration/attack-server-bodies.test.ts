import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollRequest } from '../../admin/enroll-entries.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { basePolicy, makeTestOrg, postJson, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Fuzz finding 6 (docs/fuzzing.md): a stranger POSTs fleet entries that cannot be signed or
// checked to a real coordinator under a policy: a policy, an enrollment request and an approval
// with an unknown field nested 100 levels deep (zod's loose objects keep unknown fields), and a
// policy whose version is 1e999 (JSON.parse makes it Infinity). Before the fix the policy was
// answered 500 ("the coordinator failed to store this … check its log": canonical JSON threw after
// the body was read) and logged as the coordinator's own failure, and the enrollment request was
// accepted and stored with its 100 levels; the approval and 1e999 were refused by their schemas.
// Each must get a 400 that says what is wrong and where; the coordinator logs no failure of its
// own and still takes a valid policy.

type Server = DaemonProcess & { url: string; port: number };
const org = makeTestOrg();
let dir = '';
let coordinator: Server;

function deep(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { n: value };
  return value;
}

test.before(async () => {
  dir = temporaryDirectory('attack-bodies');
  coordinator = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('fleet entries nested too deep or with infinite numbers get a 400 that says where, not a 500', async () => {
  const signed = signPolicy(basePolicy(org), org.root);
  const hostKey = generateSigningKey('h1');
  const request = signEnrollRequest(hostKey, 'h1', undefined, new Date());
  const bodies: [string, string, unknown, RegExp][] = [
    [
      '/api/policy',
      'a policy with a field nested 100 levels',
      { ...signed, policy: { ...signed.policy, x: deep(100) } },
      /policy\.x(\.n)+ is nested deeper than 64 levels/,
    ],
    ['/api/policy', 'a policy whose body is nested 100 levels', deep(100), /nested deeper than 64 levels/],
    [
      '/api/enroll',
      'an enrollment request with a field nested 100 levels',
      { ...request, x: deep(100) },
      /x(\.n)+ is nested deeper than 64 levels/,
    ],
    [
      '/api/enroll/approve',
      'an approval with a field nested 100 levels',
      { enrollment: { kind: 'enrollment', host: 'h1', x: deep(100) }, signatures: [] },
      /enrollment\.x(\.n)+ is nested deeper than 64 levels/,
    ],
  ];
  for (const [path, label, body, expected] of bodies) {
    const answer = await postJson(coordinator.url, path, body);
    assert.is(answer.status, 400, `${label} to ${path}: ${answer.status} ${answer.body.error}`);
    assert.match(String(answer.body.error), expected, label);
  }
  // 1e999 cannot be written with JSON.stringify: the raw text, as an attacker would send it.
  const text = JSON.stringify(signed).replace(/"version":1/, '"version":1e999');
  const response = await fetch(`${coordinator.url.replace(/^ws/, 'http')}/api/policy`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: text,
  });
  const answer = (await response.json()) as { error?: string };
  assert.is(response.status, 400, `a policy with version 1e999: ${response.status} ${answer.error}`);
  assert.match(String(answer.error), /non-finite number Infinity/);

  assert.not.match(coordinator.logs(), /fleet-post-failed/, 'the coordinator logged no failure of its own');
  const pushed = await postJson(coordinator.url, '/api/policy', signed);
  assert.is(pushed.status, 200, `a valid policy is still taken: ${pushed.body.error}`);
});

test.run();
