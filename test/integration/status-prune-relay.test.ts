import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { saveStatusDocument } from '../../agent/status-store.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult, KEPT_RESULTS, readResults } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { readKeyFile, writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Result } from '../../shared/schemas/report.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { closureOf } from '../harness/audit-history.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { makeCacheKey } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 13 / 16: a host behind a site relay whose uplink is down makes more than 64 results; the
// agent prunes its status document (the relay, which keeps history, holds them). When the uplink
// comes back the relay passes on its log's history (h1); when it never does, a return bundle made
// from the relay's data directory carries them (h2). Either way the coordinator's update log gets
// every result with its signature and `outpost audit verify` at HQ finds no gap. Before, the relay
// sent a diff of its garbage-collected document, and the return bundle its state: the pruned
// results reached HQ as tombstones (result-seq-gap).
const org = makeTestOrg();
const EARLIER = 120;
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
let uplink: FaultProxy;
let uplink2: FaultProxy;
let relay: DaemonProcess & { url: string; port: number };
let relay2: (DaemonProcess & { url: string; port: number }) | null = null;
const agents: DaemonProcess[] = [];
const hosts: Record<string, SimulatedHost> = {};
const files: Record<string, string> = {};

function expiredIntent(
  host: string,
  generation: number,
): { intent: Intent; signatures: ReturnType<typeof signPayload>[] } {
  const intent: Intent = {
    kind: 'intent',
    host,
    generation,
    closure: closureOf(generation),
    action: 'switch',
    issuedAt: new Date(Date.now() - 7_200_000).toISOString(),
    expiresAt: new Date(Date.now() - 3_600_000).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
  return { intent, signatures: [signPayload('intent', intent, org.alice)] };
}

async function synced(url: string, name: string, identity: typeof org.carol): Promise<DocumentConnection> {
  const connection = connectDocument(url, name, { identity, maxBackoffMs: 500 });
  await waitForSync(connection, 15_000);
  return connection;
}

const seqsOf = (doc: Y.Doc): number[] => readResults(doc).results.map((r) => r.result.seq);

test.before(async () => {
  dir = temporaryDirectory('status-prune-relay');
  for (const [name, key] of Object.entries({ alice: org.alice, carol: org.carol })) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  const relayKeys = { relay: generateSigningKey('site-1'), relay2: generateSigningKey('site-2') };
  for (const [name, key] of Object.entries(relayKeys)) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const policy = {
    ...basePolicy(org),
    relays: [
      { name: 'site-1', key: relayKeys.relay.publicKey, hosts: ['h1'], groups: [] },
      { name: 'site-2', key: relayKeys.relay2.publicKey, hosts: ['h2'], groups: [] },
    ],
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const name of ['h1', 'h2']) {
    hosts[name] = await prepareHost(dir, name);
    const enrollment = {
      kind: 'enrollment' as const,
      host: name,
      hostKey: hosts[name]!.publicKey,
      approvedAt: new Date().toISOString(),
      policyVersion: 1,
    };
    const approved = await postJson(coordinator.url, '/api/enroll/approve', {
      enrollment,
      signatures: [signPayload('enrollment', enrollment, org.alice)],
    });
    assert.is(approved.status, 200, approved.body.error);
  }
  uplink = await startFaultProxy(coordinator.port);
  uplink2 = await startFaultProxy(coordinator.port);
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [uplink.url('ws')], {
    extra: ['--key', files.relay!, '--org-root', org.root.publicKey, '--log-level', 'debug'],
  });
  relay2 = await startRelayProcess(join(dir, 'relay2'), join(dir, 'relay2.log'), [uplink2.url('ws')], {
    extra: ['--key', files.relay2!, '--org-root', org.root.publicKey],
  });
});

test.after(async () => {
  for (const agent of agents) await agent.stop('SIGKILL');
  await relay?.stop();
  await relay2?.stop();
  await uplink?.close();
  await uplink2?.close();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

// A site cut off from HQ: `name`'s agent behind `site` (whose uplink `link` goes down first)
// holds EARLIER results HQ never saw and makes two more, pruning its status document each time.
async function cutOffSite(name: string, site: { url: string }, link: FaultProxy): Promise<void> {
  // The relay has the policy and enrollment from HQ (a reader may open h1's status there).
  await waitFor(`the relay to serve ${name} under the policy`, async () => {
    const probe = connectDocument(site.url, statusDocName(name), { identity: org.carol, maxBackoffMs: 500 });
    try {
      await waitForSync(probe, 3000);
      return true;
    } catch {
      return false;
    } finally {
      probe.close();
    }
  });
  // The uplink goes down for the rest of the host's work.
  link.cut();
  // Earlier refusals (1 KiB of output each), signed by the host, in the agent's own saved copy:
  // made while the site was cut off, never seen by HQ.
  const host = hosts[name]!;
  const key = await readKeyFile(host.keyFile);
  const saved = new Y.Doc({ gc: true });
  for (let seq = 1; seq <= EARLIER; seq += 1) {
    const result: Result = {
      kind: 'result',
      host: name,
      seq,
      at: new Date().toISOString(),
      outcome: 'refused',
      generation: seq,
      closure: closureOf(seq),
      action: 'switch',
      intentDigest: seq.toString(16).padStart(64, '0'),
      reason: 'expired: an earlier refusal',
      outputTail: 'o'.repeat(1000),
    };
    appendResult(saved, { result, signature: signPayload('result', result, key) });
  }
  await fs.mkdir(host.stateDir, { recursive: true });
  await saveStatusDocument(host.stateDir, saved);
  const cacheKey = await makeCacheKey(join(dir, 'keys'), `status-prune-relay-cache-${name}`);
  const agent = startAgentProcess(host, {
    coordinators: [site.url],
    adminKeys: [],
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey],
  });
  agents.push(agent);
  const atRelay = await synced(site.url, statusDocName(name), org.carol);
  const writer = await synced(site.url, desiredDocName(name), org.alice);
  try {
    await waitFor('the earlier results at the relay', () => seqsOf(atRelay.doc).length === EARLIER, 30_000, 200);
    // The relay holding them is not enough: the agent prunes only what it knows an upstream holds,
    // which it learns from the answer to its own probe a moment later (seen: a result written 10 ms
    // before that answer pruned nothing, correctly, and the wait below timed out).
    await waitFor(
      'the agent to learn that the relay holds them',
      () => logEvents(agent, 'status-delivered').length > 0,
      30_000,
      100,
    );
    // Two more refusals (intents expired an hour ago), written at the site: results #121 and #122,
    // each pruning the status document first.
    for (const generation of [1, 2]) {
      appendIntent(writer.doc, expiredIntent(name, generation));
      await waitFor(
        `result #${EARLIER + generation} and the pruning at the relay`,
        () => {
          const seqs = seqsOf(atRelay.doc);
          return seqs.includes(EARLIER + generation) && seqs.length === KEPT_RESULTS + 1 ? seqs : null;
        },
        60_000,
        200,
      );
    }
  } finally {
    writer.close();
    atRelay.close();
  }
}

async function audit(...args: string[]) {
  return runCli(
    ['audit', ...args, '--coordinator', coordinator.url, '--key', files.carol!, '--org-root', org.root.publicKey],
    { timeoutMs: 120_000 },
  );
}

// Verify finds nothing, and the host's timeline has every result, verified.
async function assertWholeHistory(name: string): Promise<void> {
  const verify = await audit('verify', '--all', '--json');
  const report = JSON.parse(verify.stdout) as { anomalies: { code: string; detail: string }[] };
  assert.equal(report.anomalies, [], verify.stdout);
  assert.is(verify.code, 0, verify.stderr);
  const timeline = await audit('timeline', '--host', name, '--json');
  assert.is(timeline.code, 0, timeline.stderr);
  const { events } = JSON.parse(timeline.stdout) as {
    events: { kind: string; verified: boolean; summary: string }[];
  };
  assert.is(
    events.filter((e) => e.kind === 'result' && e.verified).length,
    EARLIER + 2,
    'every result made at the site, pruned or not, with its signature',
  );
}

test('results pruned behind a relay with no uplink reach HQ with their content when it returns: audit verify finds no gap', async () => {
  await cutOffSite('h1', relay, uplink);
  // The uplink comes back: the relay passes on what HQ lacks.
  uplink.restore();
  const atHq = await synced(coordinator.url, statusDocName('h1'), org.carol);
  try {
    await waitFor(
      'the site results at HQ',
      () => {
        const seqs = seqsOf(atHq.doc);
        return seqs.includes(EARLIER + 2) && seqs.length === KEPT_RESULTS + 1;
      },
      60_000,
      200,
    );
  } finally {
    atHq.close();
  }
  await assertWholeHistory('h1');
});

test('the same site with no uplink ever again: a return bundle from the relay carries them; audit verify finds no gap', async () => {
  await cutOffSite('h2', relay2!, uplink2);
  await agents.pop()!.stop();
  await relay2!.stop();
  relay2 = null;
  const bundle = join(dir, 'site-2-return.outpost-bundle');
  const created = await runCli([
    'bundle',
    'create',
    '--return',
    '--relay-data-dir',
    join(dir, 'relay2'),
    '--key',
    files.relay2!,
    '--out',
    bundle,
  ]);
  assert.is(created.code, 0, created.stderr);
  const applied = await runCli([
    'bundle',
    'apply',
    '--bundle',
    bundle,
    '--coordinator',
    coordinator.url,
    '--key',
    files.alice!,
    '--timeout',
    '30s',
  ]);
  assert.is(applied.code, 0, `${applied.stdout}\n${applied.stderr}`);
  const atHq = await synced(coordinator.url, statusDocName('h2'), org.carol);
  try {
    assert.ok(seqsOf(atHq.doc).includes(EARLIER + 2), applied.stdout);
  } finally {
    atHq.close();
  }
  await assertWholeHistory('h2');
});

test.run();
