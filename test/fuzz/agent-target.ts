import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import type * as Y from 'yjs';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { intentsArray } from '../../shared/documents/desired.js';
import { POLICY_DOC, TIMESTAMP_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readResults } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import type { Intent, SignedIntent } from '../../shared/schemas/intent.js';
import type { SignedPolicy, SignedTimestamp } from '../../shared/schemas/policy.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { prepareHost } from '../harness/fleet.js';
import type { TestOrg } from '../harness/policy-fixtures.js';
import { waitFor } from '../harness/processes.js';
import { nested, stringifyJson, weirdJson } from './bytes.js';
import { type AnyInputClass, type HealthCheck, inputClass } from './campaign.js';
import {
  type CacheSigner,
  editNarinfo,
  type HostileCache,
  hashPart,
  inventedStorePath,
  type NarinfoEdit,
  narinfoEdit,
  resign,
  type ServedNarinfo,
} from './hostile-cache.js';
import { applyJsonEdits, jsonEdit, signedNestingDepth, signFuzzed } from './json-inputs.js';
import { type LiveProcess, startLiveProcess } from './live-process.js';

// The agent under fuzz, attacked through what it reads: its desired document, the fleet policy
// and timestamp documents on the coordinator it syncs with (an open coordinator stands in for a
// compromised one: anyone may write anything there), and the narinfos of the cache it fetches
// from. A well-behaved admin's intent must still be applied throughout.

export const AGENT_HOST = 'fz-agent';

// Fuzzed entries stay in a document only for a while: enough for the agent to read them, few
// enough that its cost per evaluation stays bounded (it verifies every entry every time).
const LIVE_ENTRIES = 24;
// Desired documents and the policy keep their history on the servers (no garbage collection, for
// audits), so what the fuzzer deletes stays in their memory (the agent's copies collect garbage,
// finding 9): strings are cut to this length, and
// entries come at most every SETTLE_MS, so a long run adds megabytes, not gigabytes (docs/fuzzing.md).
const MAX_STRING = 2_048;
const SETTLE_MS = 200;

// Cuts every string in a value (keys too) to MAX_STRING characters, without recursion.
function boundStrings(value: unknown): unknown {
  const cut = (text: string): string => (text.length > MAX_STRING ? text.slice(0, MAX_STRING) : text);
  if (typeof value === 'string') return cut(value);
  if (value === null || typeof value !== 'object') return value;
  const root: { v: unknown } = { v: value };
  const stack: [Record<string | number, unknown>, string | number][] = [[root as Record<string, unknown>, 'v']];
  while (stack.length > 0) {
    const [parent, key] = stack.pop()!;
    const node = parent[key];
    if (typeof node === 'string') parent[key] = cut(node);
    else if (Array.isArray(node))
      for (let i = 0; i < node.length; i++) stack.push([node as unknown as Record<number, unknown>, i]);
    else if (node !== null && typeof node === 'object') {
      const copy: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(node)) copy[cut(k)] = v;
      parent[key] = copy;
      for (const k of Object.keys(copy)) stack.push([copy, k]);
    }
  }
  return root.v;
}

export interface AgentTargetOptions {
  dir: string;
  org: TestOrg;
  signedPolicy: SignedPolicy;
  coordinator: LiveProcess;
  cache: HostileCache;
  cacheDir: string;
  cacheKey: { publicKey: string; signer: CacheSigner };
  // Real closures in the cache, deployed by the well-behaved admin in turn.
  closures: string[];
  legitIntervalMs: number;
}

export interface AgentTarget {
  process: LiveProcess;
  classes: AnyInputClass[];
  checks: HealthCheck[];
  close(): Promise<void>;
}

// An array the fuzzer writes alone: pushes, and drops its own oldest entries past a limit.
class RollingArray {
  private readonly live: unknown[] = [];
  constructor(
    private readonly array: Y.Array<unknown>,
    private readonly limit: number,
  ) {}
  // False when Yjs refuses the value locally (an object whose `constructor` key is not
  // Object's): no client could send it, so it is no input.
  push(value: unknown): boolean {
    try {
      this.array.push([value]);
    } catch {
      return false;
    }
    this.live.push(value);
    while (this.live.length > this.limit) {
      const oldest = this.live.shift();
      const index = this.array.toArray().indexOf(oldest);
      if (index >= 0) this.array.delete(index, 1);
    }
    return true;
  }
}

class Mutex {
  private tail: Promise<void> = Promise.resolve();
  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}

async function syncedConnection(url: string, name: string): Promise<DocumentConnection> {
  const connection = connectDocument(url, name, { identity: null, maxBackoffMs: 500, baseBackoffMs: 100 });
  await waitForSync(connection, 30_000);
  return connection;
}

export async function startAgentTarget(options: AgentTargetOptions): Promise<AgentTarget> {
  const { org, signedPolicy, coordinator, cache } = options;
  const policyVersion = signedPolicy.policy.version;
  const host = await prepareHost(options.dir, AGENT_HOST);
  const desired = await syncedConnection(coordinator.url, desiredDocName(AGENT_HOST));
  const policyDoc = await syncedConnection(coordinator.url, POLICY_DOC);
  const timestampDoc = await syncedConnection(coordinator.url, TIMESTAMP_DOC);
  const status = await syncedConnection(coordinator.url, statusDocName(AGENT_HOST));
  const connections = [desired, policyDoc, timestampDoc, status];

  let timestampSeq = 1;
  const freshTimestamp = (): SignedTimestamp => {
    const timestamp = { kind: 'timestamp' as const, at: new Date().toISOString(), seq: timestampSeq++, policyVersion };
    return { timestamp, signature: signPayload('timestamp', timestamp, org.timestamp) };
  };
  policyDoc.doc.getArray('policies').push([signedPolicy]);
  timestampDoc.doc.getMap('timestamp').set('current', freshTimestamp());

  const agent = await startLiveProcess({
    name: 'agent',
    listens: false,
    logFile: join(options.dir, 'agent.log'),
    // Its state (persisted phases, staged downloads) and its Nix store.
    dataDirs: [host.stateDir, host.storeRoot],
    env: { OUTPOST_TEST_ACTIVATION_LOG: host.activationLog },
    args: () => [
      'agent',
      '--host',
      AGENT_HOST,
      '--key',
      host.keyFile,
      '--coordinator',
      coordinator.url,
      '--org-root',
      org.root.publicKey,
      '--substituter',
      cache.url,
      '--trusted-cache-key',
      options.cacheKey.publicKey,
      '--store',
      host.storeRoot,
      '--profile',
      host.profile,
      '--state-dir',
      host.stateDir,
      '--log-level',
      'warn',
      '--activation-runner',
      'direct',
      '--confirm-timeout',
      '20',
      '--activation-timeout',
      '30',
      '--min-free-space',
      '0',
      '--throughput-window',
      '5',
      '--min-throughput',
      '1',
      '--download-retries',
      '1',
      '--fetch-timeout',
      '30',
      '--backoff-base',
      '0.2',
      '--backoff-max',
      '1',
    ],
  });

  const intents = new RollingArray(intentsArray(desired.doc), LIVE_ENTRIES);
  const legitIntents = new RollingArray(intentsArray(desired.doc), 2);
  const policies = new RollingArray(policyDoc.doc.getArray('policies'), LIVE_ENTRIES);
  // The agent works on one valid intent at a time: the admin's and the narinfo class's take turns.
  const turns = new Mutex();
  let generation = 10;
  let legitCount = 0;

  const now = Date.now();
  const template: Intent = {
    kind: 'intent',
    host: AGENT_HOST,
    generation: 3,
    closure: options.closures[0]!,
    action: 'switch',
    issuedAt: new Date(now - 60_000).toISOString(),
    expiresAt: new Date(now + 7 * 86_400_000).toISOString(),
    issuer: 'alice',
    policyVersion,
  };
  const signedTemplate = signIntent(template, org.alice);
  const signers: SigningKey[] = [org.alice, org.bob, org.carol, org.root, org.timestamp];

  // Entries for hosts/<agent>/desired. Validly signed ones always carry a reason to refuse them
  // (an unknown field, another host, a past expiry, a low generation), so no fuzzed intent ever
  // becomes the agent's target and moves its anti-rollback floor past the admin's intents.
  const intentValue: fc.Arbitrary<unknown> = fc.oneof(
    { weight: 2, arbitrary: weirdJson(4) },
    {
      weight: 4,
      arbitrary: fc
        .array(jsonEdit(2_000), { minLength: 1, maxLength: 3 })
        .map((edits) => applyJsonEdits(signedTemplate, edits)),
    },
    {
      weight: 3,
      arbitrary: fc
        .record({
          reason: fc.constantFrom('unknown-field', 'other-host', 'expired', 'low-generation'),
          key: fc.string({ maxLength: 20 }).map((k) => `x${k}`),
          value: fc.oneof(
            weirdJson(3),
            signedNestingDepth().map((d) => nested(d)),
          ),
          signer: fc.nat({ max: signers.length - 1 }),
          extraSignatures: fc.nat({ max: 3 }),
        })
        .map(({ reason, key, value, signer, extraSignatures }) => {
          const intent: Record<string, unknown> = { ...template };
          if (reason === 'unknown-field') intent[key] = value;
          if (reason === 'other-host') intent.host = 'fz-other';
          if (reason === 'expired') intent.expiresAt = new Date(now - 1000).toISOString();
          if (reason === 'low-generation') intent.generation = 1;
          const signature = signFuzzed('intent', intent, signers[signer]!);
          const junk = Array.from({ length: extraSignatures }, (_, i) => ({
            publicKey: signers[(signer + i + 1) % signers.length]!.publicKey,
            signature: signature.signature,
          }));
          return { intent, signatures: [signature, ...junk] };
        }),
    },
    { weight: 1, arbitrary: fc.integer({ min: 100, max: 2_000 }).map((depth) => nested(depth, signedTemplate)) },
    // Deeper than canonical JSON can recurse (issue 11 item 6), in a field no schema looks into.
    {
      weight: 1,
      arbitrary: fc
        .integer({ min: 2_000, max: 4_500 })
        .map((depth) => ({ ...signedTemplate, intent: { ...signedTemplate.intent, xDeep: nested(depth) } })),
    },
  );

  const policyValue: fc.Arbitrary<unknown> = fc.oneof(
    { weight: 2, arbitrary: weirdJson(4) },
    {
      weight: 4,
      arbitrary: fc
        .array(jsonEdit(2_000), { minLength: 1, maxLength: 3 })
        .map((edits) => applyJsonEdits(signedPolicy, edits)),
    },
    // Really signed, by the root or others, for versions that do not follow the one in force
    // (a following version the root signed would change the fleet's trust under the test).
    {
      weight: 3,
      arbitrary: fc
        .record({
          version: fc.constantFrom(policyVersion, policyVersion + 2, 2 ** 31, 2 ** 53 - 1),
          signer: fc.nat({ max: signers.length - 1 }),
          key: fc.string({ maxLength: 20 }).map((k) => `x${k}`),
          value: fc.oneof(
            weirdJson(3),
            signedNestingDepth().map((d) => nested(d)),
          ),
        })
        .map(({ version, signer, key, value }) => {
          const policy = { ...signedPolicy.policy, version, [key]: value };
          return { policy, signatures: [signFuzzed('policy', policy, signers[signer]!)] };
        }),
    },
  );

  const timestampValue: fc.Arbitrary<unknown> = fc.oneof(
    { weight: 2, arbitrary: weirdJson(3) },
    {
      weight: 3,
      arbitrary: fc
        .array(jsonEdit(500), { minLength: 1, maxLength: 3 })
        .map((edits) => applyJsonEdits(freshTimestamp(), edits)),
    },
    {
      weight: 2,
      arbitrary: fc
        .record({ seq: fc.constantFrom(0, 2 ** 31, 2 ** 53 - 1), signer: fc.nat({ max: signers.length - 1 }) })
        .map(({ seq, signer }) => {
          const timestamp = { kind: 'timestamp' as const, at: new Date().toISOString(), seq, policyVersion };
          return { timestamp, signature: signFuzzed('timestamp', timestamp, signers[signer]!) };
        }),
    },
  );

  // Entries in the agent's own status document, which anyone may write on this coordinator:
  // statuses and results as another writer (a relay, the coordinator) could put there.
  const statusValue: fc.Arbitrary<{ where: 'current' | 'results'; value: unknown }> = fc.record({
    where: fc.constantFrom('current' as const, 'results' as const),
    value: fc.oneof(
      { weight: 2, arbitrary: weirdJson(3) },
      {
        weight: 3,
        arbitrary: fc
          .record({
            seq: fc.constantFrom(
              0,
              1,
              2,
              1_000,
              2 ** 31,
              2 ** 40,
              Number.MAX_SAFE_INTEGER,
              Number.MAX_SAFE_INTEGER - 1,
            ),
            signer: fc.nat({ max: signers.length - 1 }),
            edits: fc.array(jsonEdit(500), { maxLength: 2 }),
            kind: fc.constantFrom('status', 'result'),
          })
          .map(({ seq, signer, edits, kind }) => {
            const at = new Date().toISOString();
            const payload =
              kind === 'status'
                ? {
                    kind: 'status',
                    host: AGENT_HOST,
                    phase: 'applied',
                    applied: null,
                    target: null,
                    lastResultSeq: 0,
                    agentVersion: '0.2.0',
                    trust: { mode: 'policy', policyVersion, frozen: false, lastTimestampAt: null },
                    seq,
                    updatedAt: at,
                  }
                : {
                    kind: 'result',
                    host: AGENT_HOST,
                    seq,
                    at,
                    outcome: 'applied',
                    generation: 3,
                    closure: template.closure,
                    action: 'switch',
                    intentDigest: '0'.repeat(64),
                    reason: '',
                    outputTail: '',
                  };
            const edited = applyJsonEdits(payload, edits);
            return {
              [kind]: edited,
              signature: signFuzzed(kind === 'status' ? 'status' : 'result', edited, signers[signer]!),
            };
          }),
      },
    ),
  });
  const statusResults = new RollingArray(status.doc.getArray('results'), LIVE_ENTRIES);

  const describeJson = (value: unknown): unknown => {
    const text = stringifyJson(value) ?? String(value);
    return text.length > 3_000 ? `${text.slice(0, 3_000)}…(${text.length} chars)` : text;
  };
  // The agent reads a document change within milliseconds; give it a moment per input, so
  // its evaluation actually sees each one.
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, SETTLE_MS));

  // ---- narinfos --------------------------------------------------------------------------------
  const templateNarinfo = await fs.readFile(
    join(options.cacheDir, `${hashPart(options.closures[0]!)}.narinfo`),
    'utf8',
  );
  let invented = 0;
  const narinfoPlan = fc.record({
    edits: fc.array(narinfoEdit(), { maxLength: 4 }),
    resigned: fc.boolean(),
    http: fc.oneof(
      { weight: 8, arbitrary: fc.constant('plain' as const) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          'short-length' as const,
          'long-length' as const,
          'status-500' as const,
          'status-403' as const,
          'cut' as const,
        ),
      },
    ),
    referenceEdits: fc.array(narinfoEdit(), { maxLength: 2 }),
  });
  type NarinfoPlan = {
    edits: NarinfoEdit[];
    resigned: boolean;
    http: ServedNarinfo['http'];
    referenceEdits: NarinfoEdit[];
  };

  const serveInvented = (
    path: string,
    plan: NarinfoPlan,
    edits: NarinfoEdit[],
    refsFrom: (i: number) => string,
  ): void => {
    let text = editNarinfo(templateNarinfo.replace(/^StorePath: .*$/m, `StorePath: ${path}`), edits, refsFrom);
    if (plan.resigned) text = resign(text, options.cacheKey.signer);
    cache.narinfos.set(hashPart(path), { text, http: plan.http });
  };

  // Reading the results verifies every signature in them: done when the status document changed
  // since the waiter last read it, not every 50 ms (that was a twentieth of the driver's CPU time
  // while a narinfo input or the admin's check waited seconds for the agent).
  let statusChanges = 0;
  const watchedStatusDocs = new WeakSet<Y.Doc>();
  const statusVersion = (): { doc: Y.Doc; changes: number } => {
    const doc = status.doc;
    if (!watchedStatusDocs.has(doc)) {
      watchedStatusDocs.add(doc);
      doc.on('update', () => {
        statusChanges += 1;
      });
      statusChanges += 1;
    }
    return { doc, changes: statusChanges };
  };

  async function resultFor(gen: number, timeoutMs: number): Promise<{ outcome: string; reason: string }> {
    let seen: { doc: Y.Doc; changes: number } | null = null;
    return waitFor(
      `the agent's result for generation ${gen}`,
      () => {
        const now = statusVersion();
        if (seen !== null && seen.doc === now.doc && seen.changes === now.changes) return null;
        seen = now;
        const result = readResults(status.doc).results.find((r) => r.result.generation === gen);
        return result ? { outcome: result.result.outcome, reason: result.result.reason ?? '' } : null;
      },
      timeoutMs,
      50,
    );
  }

  function pushValid(intent: Intent): SignedIntent {
    const signed = signIntent(intent, org.alice);
    legitIntents.push(signed);
    return signed;
  }

  const classes: AnyInputClass[] = [
    inputClass({
      name: 'intents@agent',
      target: agent.name,
      arbitrary: intentValue.map(boundStrings),
      concurrency: 1,
      weight: 0,
      paced: true,
      describe: describeJson,
      async deliver(value) {
        if (!intents.push(value)) return 'not encodable by Yjs';
        await settle();
        return 'written';
      },
    }),
    inputClass({
      name: 'policies@agent',
      target: agent.name,
      arbitrary: policyValue.map(boundStrings),
      concurrency: 1,
      weight: 0,
      paced: true,
      describe: describeJson,
      async deliver(value) {
        if (!policies.push(value)) return 'not encodable by Yjs';
        await settle();
        return 'written';
      },
    }),
    inputClass({
      name: 'timestamps@agent',
      target: agent.name,
      arbitrary: timestampValue.map(boundStrings),
      concurrency: 1,
      weight: 0,
      paced: true,
      describe: describeJson,
      async deliver(value) {
        try {
          timestampDoc.doc.getMap('timestamp').set('current', value);
        } catch {
          return 'not encodable by Yjs';
        }
        await settle();
        // A valid one again, as a coordinator with the timestamp key would write next.
        timestampDoc.doc.getMap('timestamp').set('current', freshTimestamp());
        return 'written';
      },
    }),
    inputClass({
      name: 'status@agent',
      target: agent.name,
      arbitrary: statusValue.map((v) => ({ ...v, value: boundStrings(v.value) })),
      concurrency: 1,
      weight: 0,
      paced: true,
      describe: (v: { where: string; value: unknown }) => ({ where: v.where, value: describeJson(v.value) }),
      async deliver(v) {
        try {
          if (v.where === 'results') {
            if (!statusResults.push(v.value)) return 'not encodable by Yjs';
          } else status.doc.getMap('status').set('current', v.value);
        } catch {
          return 'not encodable by Yjs';
        }
        await settle();
        return v.where;
      },
    }),
    inputClass({
      name: 'narinfo@agent',
      target: agent.name,
      arbitrary: narinfoPlan,
      concurrency: 1,
      weight: 0,
      paced: true,
      describe: (plan: NarinfoPlan) => plan,
      deliver: (plan: NarinfoPlan) =>
        turns.run(async () => {
          const path = inventedStorePath(++invented);
          const refsFrom = (i: number): string => inventedStorePath(1_000_000 + invented * 100 + (i % 100));
          serveInvented(path, plan, plan.edits, refsFrom);
          // Referenced invented paths get narinfos of their own (a closure walk reaches them).
          for (let i = 0; i < 3; i++) serveInvented(refsFrom(i), plan, plan.referenceEdits, refsFrom);
          const gen = ++generation;
          pushValid({ ...template, generation: gen, closure: path, issuedAt: new Date().toISOString() });
          const result = await resultFor(gen, 120_000);
          for (let i = 0; i < 3; i++) cache.narinfos.delete(hashPart(refsFrom(i)));
          cache.narinfos.delete(hashPart(path));
          return `${result.outcome}: ${result.reason
            .replace(/\/nix\/store\/[^\s:;,)]+/g, '<path>')
            .replace(/https?:\/\/127\.0\.0\.1:\d+\S*/g, '<url>')
            .replace(/\d+/g, 'N')
            .slice(0, 110)}`;
        }),
    }),
  ];

  const checks: HealthCheck[] = [
    {
      target: agent.name,
      dependsOn: [coordinator.name],
      name: "an admin's intent is applied",
      intervalMs: options.legitIntervalMs,
      timeoutMs: 180_000,
      run: () =>
        turns.run(async () => {
          timestampDoc.doc.getMap('timestamp').set('current', freshTimestamp());
          const gen = ++generation;
          const closure = options.closures[legitCount++ % options.closures.length]!;
          pushValid({ ...template, generation: gen, closure, issuedAt: new Date().toISOString() });
          const result = await resultFor(gen, 170_000);
          if (result.outcome !== 'applied')
            throw new Error(`generation ${gen} (${closure}) was ${result.outcome}: ${result.reason}`);
        }),
    },
  ];

  return {
    process: agent,
    classes,
    checks,
    async close() {
      await agent.stop();
      for (const c of connections) c.close();
    },
  };
}
