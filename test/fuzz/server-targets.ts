import { join } from 'node:path';
import fc from 'fast-check';
import { signEnrollment, signEnrollRequest, signEnrollToken } from '../../admin/enroll-entries.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import type { Policy, SignedPolicy } from '../../shared/schemas/policy.js';
import { challengeResponseSchema, signAuthProof } from '../../shared/sync/auth-proof.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import type { TestOrg } from '../harness/policy-fixtures.js';
import { nested } from './bytes.js';
import { type AnyInputClass, type HealthCheck, inputClass } from './campaign.js';
import { expectJson, healthz, syncRoundTrip } from './health.js';
import { applyJsonEdits, jsonBody, jsonEdit, signedNestingDepth, signFuzzed } from './json-inputs.js';
import { type LiveProcess, startLiveProcess } from './live-process.js';
import {
  binaryFrame,
  CLOSE_FRAME,
  concat,
  httpPost,
  httpRaw,
  muxSession,
  poolDocument,
  poolHost,
  type RawExchange,
  upgradeRequest,
  wsFrames,
  wsUpgrade,
  yMessage,
} from './protocol-inputs.js';
import { rawExchange } from './raw-exchange.js';

// The servers under fuzz: a coordinator in open mode (every document writable by anyone, the
// deepest reach for protocol inputs), a coordinator with --org-root and a policy (the POST
// endpoints and key proofs), and a relay below the open coordinator (its own server, the bridge
// upstream and the cache mirror).

export interface ServerTargets {
  coordinator: LiveProcess;
  policyCoordinator: LiveProcess;
  relay: LiveProcess;
}

// Error level by default: a million refused inputs at 'warn' would be gigabytes of log.
// OUTPOST_FUZZ_LOG_LEVEL=warn shows why each input was refused.
const SERVER_FLAGS = ['--idle-unload', '1', '--log-level', process.env.OUTPOST_FUZZ_LOG_LEVEL ?? 'error'];
// The open coordinator is also the agent's upstream, standing in for a compromised coordinator
// (which has no quota at all): the fuzzer writes the agent's documents there from 127.0.0.1, as
// does the admin whose intents the agent must still apply, and in open mode the writer quota is
// per address and document. For the same reason it lets values through however deep and dense
// (the agent classes nest values to 4,500 levels, which the agent must survive from a compromised
// coordinator). Every other limit, and every limit of the other servers, keeps its default.
const OPEN_COORDINATOR_FLAGS = [
  '--max-writer-bytes-per-hour',
  String(2 ** 40),
  '--max-value-depth',
  String(10_000_000),
  '--max-value-objects-per-kib',
  String(10_000_000),
];

export async function startServerTargets(
  dir: string,
  org: TestOrg,
  signedPolicy: SignedPolicy,
  cacheUrl: string,
): Promise<ServerTargets> {
  const coordinator = await startLiveProcess({
    name: 'coordinator',
    args: (port) => [
      'coordinator',
      '--data-dir',
      join(dir, 'coordinator'),
      '--port',
      String(port),
      ...SERVER_FLAGS,
      ...OPEN_COORDINATOR_FLAGS,
    ],
    logFile: join(dir, 'coordinator.log'),
    listens: true,
    dataDirs: [join(dir, 'coordinator')],
  });
  const policyCoordinator = await startLiveProcess({
    name: 'coordinator-policy',
    args: (port) => [
      'coordinator',
      '--data-dir',
      join(dir, 'coordinator-policy'),
      '--port',
      String(port),
      '--org-root',
      org.root.publicKey,
      ...SERVER_FLAGS,
    ],
    logFile: join(dir, 'coordinator-policy.log'),
    listens: true,
    dataDirs: [join(dir, 'coordinator-policy')],
  });
  const pushed = await fetch(`${httpBaseFromWs(policyCoordinator.url)}/api/policy`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(signedPolicy),
  });
  if (pushed.status !== 200) throw new Error(`policy push to the policy coordinator failed: ${await pushed.text()}`);
  const relay = await startLiveProcess({
    name: 'relay',
    args: (port) => [
      'relay',
      '--data-dir',
      join(dir, 'relay'),
      '--port',
      String(port),
      '--upstream',
      coordinator.url,
      '--cache-upstream',
      cacheUrl,
      '--cache-max-size',
      String(16 * 1024 * 1024),
      '--backoff-base',
      '0.1',
      '--backoff-max',
      '1',
      ...SERVER_FLAGS,
    ],
    logFile: join(dir, 'relay.log'),
    listens: true,
    dataDirs: [join(dir, 'relay')],
  });
  return { coordinator, policyCoordinator, relay };
}

// ---- classes ----------------------------------------------------------------------------------

export interface ServerClassOptions {
  targets: ServerTargets;
  org: TestOrg;
  // An admin of the policy (deploy everywhere) the fuzzer writes as; the health check writes as
  // alice, so the fuzzer's writes cannot use up her writer quota.
  fuzzAdmin: SigningKey;
  signedPolicy: SignedPolicy;
}

function describeExchange(exchange: RawExchange): unknown {
  const show = (b: Uint8Array): string => {
    const text = Buffer.from(b).toString('latin1');
    return /^[\x20-\x7e\r\n]*$/.test(text)
      ? JSON.stringify(text.length > 600 ? `${text.slice(0, 600)}…(${text.length} bytes)` : text)
      : `hex:${Buffer.from(b.subarray(0, 400)).toString('hex')}${b.length > 400 ? `…(${b.length} bytes)` : ''}`;
  };
  return {
    request: exchange.request.map(show),
    waitForResponse: exchange.waitForResponse,
    after: exchange.after.map(show),
    ending: exchange.ending,
  };
}

function statusLabel(status: string): string {
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(status);
  return match ? match[1]! : status.startsWith('(') ? status : 'other';
}

async function authQuery(serverUrl: string, key: SigningKey, document: string): Promise<string> {
  const response = await fetch(`${httpBaseFromWs(serverUrl)}/auth/challenge`, { signal: AbortSignal.timeout(10_000) });
  const { challenge } = challengeResponseSchema.parse(await response.json());
  return `?${new URLSearchParams({ ...signAuthProof(key, challenge, document) })}`;
}

// A fixed, small set of host keys and tokens: validly signed enrollment entries the policy
// coordinator stores stay bounded (unbounded enrollment flooding is issue 11 item 11).
function enrollmentDocuments(org: TestOrg, policy: Policy): fc.Arbitrary<unknown> {
  const hostKeys = Array.from({ length: 4 }, (_, i) => generateSigningKey(`fuzz-host-${i}`));
  const future = new Date(Date.now() + 86_400_000).toISOString();
  const tokens = [
    signEnrollToken(org.alice, { host: poolHost(1), expiresAt: future, policyVersion: policy.version }),
    signEnrollToken(org.carol, { host: poolHost(2), expiresAt: future, policyVersion: policy.version }),
    signEnrollToken(org.alice, {
      host: poolHost(3),
      expiresAt: new Date(Date.now() - 1000).toISOString(),
      policyVersion: 1,
    }),
  ];
  const now = new Date();
  const requests = hostKeys.flatMap((key, i) => [
    signEnrollRequest(key, poolHost(i), undefined, now),
    signEnrollRequest(key, poolHost(i + 1), tokens[i % tokens.length], now),
  ]);
  const approvals = hostKeys.map((key, i) =>
    signEnrollment(
      i % 2 ? org.alice : org.carol,
      { host: poolHost(i), hostKey: key.publicKey, policyVersion: policy.version },
      now,
    ),
  );
  const all: unknown[] = [...requests, ...approvals, ...tokens];
  return fc
    .tuple(fc.constantFrom(...all), fc.array(jsonEdit(2_000), { maxLength: 3 }))
    .map(([doc, edits]) => applyJsonEdits(doc, edits));
}

// Policies: the one in force, edited (signature no longer matches), and successors the root
// really signed with unknown fields added (accepted: the coordinator's chain moves on, and
// everything the fleet's clients need stays as it was).
function policyDocuments(org: TestOrg, signed: SignedPolicy): fc.Arbitrary<unknown> {
  const edited = fc
    .array(jsonEdit(2_000), { minLength: 1, maxLength: 3 })
    .map((edits) => applyJsonEdits(signed, edits));
  const resigned = fc
    .record({
      version: fc.constantFrom(signed.policy.version, signed.policy.version + 1, signed.policy.version + 2, 0, 2 ** 53),
      key: fc.string({ maxLength: 12 }).map((k) => `x-${k}`),
      value: fc.oneof(
        fc.jsonValue({ maxDepth: 3 }),
        signedNestingDepth().map((d) => nested(d)),
      ),
    })
    .map(({ version, key, value }) => {
      const policy = { ...signed.policy, version, [key]: value } as Policy;
      return { policy, signatures: [signFuzzed('policy', policy, org.root)] };
    });
  return fc.oneof(
    { weight: 1, arbitrary: fc.constant(signed) },
    { weight: 6, arbitrary: edited },
    { weight: 2, arbitrary: resigned },
  );
}

export function serverClasses(options: ServerClassOptions): { classes: AnyInputClass[]; checks: HealthCheck[] } {
  const { targets, org, signedPolicy, fuzzAdmin } = options;
  const deliverTo = (target: LiveProcess) => async (exchange: RawExchange) =>
    statusLabel((await rawExchange(target.port, exchange)).status);

  const classes: AnyInputClass[] = [];
  const servers: [LiveProcess, number][] = [
    [targets.coordinator, 3],
    [targets.relay, 2],
    [targets.policyCoordinator, 1],
  ];
  for (const [target, weight] of servers) {
    const shared = { target: target.name, describe: describeExchange, deliver: deliverTo(target) };
    classes.push(
      inputClass({
        ...shared,
        name: `http-raw@${target.name}`,
        arbitrary: httpRaw(),
        concurrency: 4,
        weight: 2 * weight,
      }),
      inputClass({
        ...shared,
        name: `ws-upgrade@${target.name}`,
        arbitrary: wsUpgrade(),
        concurrency: 4,
        weight: 2 * weight,
      }),
      inputClass({
        ...shared,
        name: `ws-frames@${target.name}`,
        arbitrary: wsFrames(),
        concurrency: 4,
        weight: 2 * weight,
      }),
    );
    if (target !== targets.policyCoordinator) {
      classes.push(
        inputClass({
          ...shared,
          name: `y-sync@${target.name}`,
          arbitrary: ySyncExchange(),
          concurrency: 4,
          weight: 3 * weight,
        }),
        inputClass({
          ...shared,
          name: `mux@${target.name}`,
          arbitrary: muxSession(),
          concurrency: 3,
          weight: 2 * weight,
        }),
      );
    }
  }

  // y-protocols messages as an authenticated admin on the policy coordinator (who may write
  // desired documents): the same inputs behind a valid key proof.
  classes.push(
    inputClass({
      name: 'y-sync-authenticated@coordinator-policy',
      target: targets.policyCoordinator.name,
      arbitrary: fc.record({
        document: poolDocument(),
        messages: fc.array(yMessage(), { minLength: 1, maxLength: 6 }),
      }),
      concurrency: 3,
      weight: 2,
      describe: (v: { document: string; messages: Uint8Array[] }) => ({
        document: v.document,
        messages: v.messages.map((m) => Buffer.from(m).toString('hex')),
      }),
      async deliver(v) {
        const query = await authQuery(targets.policyCoordinator.url, fuzzAdmin, v.document);
        const outcome = await rawExchange(targets.policyCoordinator.port, {
          request: [upgradeRequest({ path: `/${v.document}${query}` })],
          waitForResponse: true,
          after: [...v.messages.map(binaryFrame), CLOSE_FRAME],
          ending: 'half-close',
        });
        return statusLabel(outcome.status);
      },
    }),
  );

  // JSON bodies to every POST endpoint of the policy coordinator, and through the relay.
  const documents = fc.oneof(policyDocuments(org, signedPolicy), enrollmentDocuments(org, signedPolicy.policy));
  const postArbitrary = fc.record({
    path: fc.oneof(
      { weight: 8, arbitrary: fc.constantFrom('/api/policy', '/api/enroll', '/api/enroll/approve') },
      { weight: 1, arbitrary: fc.constantFrom('/api/policy/', '/api/Policy', '/api/enroll?x', '/api/nope') },
    ),
    contentType: fc.constantFrom('application/json', 'text/plain', 'application/json; charset=utf-16', ''),
    body: jsonBody(documents),
  });
  for (const target of [targets.policyCoordinator, targets.relay]) {
    classes.push(
      inputClass({
        name: `http-post@${target.name}`,
        target: target.name,
        arbitrary: postArbitrary,
        concurrency: 3,
        weight: target === targets.relay ? 1 : 4,
        describe: (v: { path: string; contentType: string; body: Uint8Array }) => ({
          path: v.path,
          contentType: v.contentType,
          body: (() => {
            const text = Buffer.from(v.body).toString('utf8');
            return text.length > 2000 ? `${text.slice(0, 2000)}…(${text.length} chars)` : text;
          })(),
        }),
        async deliver(v) {
          const outcome = await rawExchange(target.port, {
            request: [httpPost(v.path, v.body, v.contentType)],
            waitForResponse: false,
            after: [],
            ending: 'respond',
          });
          return statusLabel(outcome.status);
        },
      }),
    );
  }

  const checks: HealthCheck[] = [
    {
      target: targets.coordinator.name,
      name: 'sync round trip (two stock clients)',
      intervalMs: 2_000,
      timeoutMs: 20_000,
      run: async () => {
        await syncRoundTrip(targets.coordinator.url, targets.coordinator.url, 'hosts/health/status', 15_000);
        await healthz(targets.coordinator.url, 10_000);
      },
    },
    {
      target: targets.relay.name,
      dependsOn: [targets.coordinator.name],
      name: 'sync round trip relay → coordinator',
      intervalMs: 2_000,
      timeoutMs: 20_000,
      run: async () => {
        await syncRoundTrip(targets.relay.url, targets.coordinator.url, 'hosts/health-relay/status', 15_000);
        await healthz(targets.relay.url, 10_000);
      },
    },
    {
      target: targets.policyCoordinator.name,
      name: 'authenticated sync round trip and policy push',
      intervalMs: 2_000,
      timeoutMs: 20_000,
      run: async () => {
        await syncRoundTrip(
          targets.policyCoordinator.url,
          targets.policyCoordinator.url,
          'hosts/health/desired',
          15_000,
          org.alice,
        );
        await expectJson(
          `${httpBaseFromWs(targets.policyCoordinator.url)}/api/policy`,
          { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(signedPolicy) },
          (status, body) => status === 200 && body.ok === true,
          10_000,
        );
      },
    },
  ];
  return { classes, checks };
}

// y-protocols messages behind a valid handshake (the open servers need no key proof).
function ySyncExchange(): fc.Arbitrary<RawExchange> {
  return fc
    .record({ document: poolDocument(), messages: fc.array(yMessage(), { minLength: 1, maxLength: 6 }) })
    .map((r) => ({
      request: [upgradeRequest({ path: `/${r.document}` })],
      waitForResponse: true,
      after: [concat(...r.messages.map(binaryFrame)), CLOSE_FRAME],
      ending: 'half-close' as const,
    }));
}
