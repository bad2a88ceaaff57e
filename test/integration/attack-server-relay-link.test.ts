import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { connectDocument, proofHeaders, waitForSync } from '../../shared/node/connect.js';
import { challengeResponseSchema, signAuthProof } from '../../shared/sync/auth-proof.js';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  MUX_PATH,
  type MuxFrame,
  type PresenceEntry,
} from '../../shared/sync/mux-frames.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 11, item 10: the relay link (/_relay) from an attacker's position, speaking the real mux
// protocol to a real coordinator process under a policy. A self-generated key, or an admin's key,
// gets no relay session at all; a relay the policy lists (compromised) cannot open document names
// the direct endpoint refuses, cannot hold more channels than --max-documents-per-connection,
// cannot hold a second session, and cannot report presence for hosts outside its scope.

const org = makeTestOrg();
const relayKey = generateSigningKey('r1');
const MAX_CHANNELS = 30;
type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;

interface Health {
  openDocuments: number;
  relaySessions: number;
  refusals: Record<string, number>;
  limits: Record<string, number>;
}

async function health(): Promise<Health> {
  return (await (await fetch(`${httpBaseFromWs(coordinator.url)}/healthz`)).json()) as Health;
}

// A relay link as an attacker builds it: a fresh challenge, a proof signed for "_relay", frames.
class MuxPeer {
  readonly frames: MuxFrame[] = [];
  closeCode: number | null = null;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.frames.push(decodeFrame(new Uint8Array(data))));
    ws.on('close', (code) => (this.closeCode = code));
    ws.on('error', () => undefined);
  }

  static async connect(key: SigningKey): Promise<MuxPeer> {
    const base = httpBaseFromWs(coordinator.url);
    const { challenge } = challengeResponseSchema.parse(await (await fetch(`${base}/auth/challenge`)).json());
    const query = new URLSearchParams({ ...signAuthProof(key, challenge, MUX_PATH) });
    const ws = new WebSocket(`${coordinator.url}/${MUX_PATH}?${query}`);
    const peer = new MuxPeer(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return peer;
  }

  send(frame: MuxFrame): void {
    this.ws.send(encodeFrame(frame));
  }

  closeOf(channel: number): Promise<{ code: number; reason: string }> {
    return waitFor(
      `a CLOSE for channel ${channel}`,
      () => {
        const frame = this.frames.find((f) => f.type === FRAME_CLOSE && f.channel === channel);
        return frame?.type === FRAME_CLOSE ? { code: frame.code, reason: frame.reason } : null;
      },
      5000,
      20,
    );
  }

  dataOn(channel: number): boolean {
    return this.frames.some((f) => f.type === FRAME_DATA && f.channel === channel);
  }

  async closed(): Promise<number> {
    return waitFor('the relay link to close', () => this.closeCode, 5000, 20);
  }
}

test.before(async () => {
  dir = temporaryDirectory('attack-relay-link');
  coordinator = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--max-documents-per-connection',
    String(MAX_CHANNELS),
  ]);
  const policy = basePolicy(org, {
    relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }],
  });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a self-generated key gets no relay session (4403), and neither does an admin key', async () => {
  for (const key of [generateSigningKey('mallory'), org.carol]) {
    const peer = await MuxPeer.connect(key);
    // What a session would have allowed: opening documents and reporting presence.
    peer.send({ type: FRAME_OPEN, channel: 1, document: 'fleet/policy' });
    peer.send({ type: FRAME_PRESENCE, hosts: [{ host: 'h1', online: true, lastSeen: Date.now() }] });
    assert.is(await peer.closed(), 4403, `${key.name}: refused as not a relay of the policy`);
    assert.not.ok(peer.dataOn(1), `${key.name}: nothing was served`);
  }
  const after = await health();
  assert.is(after.relaySessions, 0);
  assert.ok(after.refusals.relaySessions >= 2, 'counted in /healthz');
  const presenceUrl = `${httpBaseFromWs(coordinator.url)}/api/presence`;
  const presence = (await (
    await fetch(presenceUrl, { headers: await proofHeaders(presenceUrl, org.alice) })
  ).json()) as {
    hosts: Record<string, unknown>;
  };
  assert.equal(presence.hosts, {}, 'no host marked online by a stranger or an admin posing as a relay');
  assert.match(coordinator.logs(), /is not a relay of the policy/);
});

test('a listed relay cannot open names the direct endpoint refuses; nothing is loaded for them', async () => {
  const peer = await MuxPeer.connect(relayKey);
  const before = (await health()).openDocuments;
  const names = ['../../etc/passwd', 'fleet/\u0000nul', `fleet/${'a'.repeat(100_000)}`, 'fleet/../policy', '_relay'];
  for (const [i, document] of names.entries()) peer.send({ type: FRAME_OPEN, channel: i + 1, document });
  for (let i = 0; i < names.length; i++) {
    const { code, reason } = await peer.closeOf(i + 1);
    assert.is(code, 4404, `${JSON.stringify(names[i]!.slice(0, 30))} refused as not a document name`);
    assert.match(reason, /not a document name/);
    assert.not.ok(peer.dataOn(i + 1));
  }
  const after = await health();
  assert.is(after.openDocuments, before, 'no document was loaded for a refused name');
  assert.ok(after.refusals.relayDocumentNames >= names.length);
  // The link itself stays up, and a document in its scope is served.
  peer.send({ type: FRAME_OPEN, channel: 100, document: 'hosts/h1/status' });
  await waitFor('h1 status to be served', () => peer.dataOn(100), 5000, 20);
  peer.ws.close();
});

test('a listed relay cannot hold more channels than --max-documents-per-connection, nor a second session', async () => {
  const peer = await MuxPeer.connect(relayKey);
  const total = MAX_CHANNELS + 10;
  // Valid fleet names it may read: each would load a document.
  for (let i = 1; i <= total; i++) peer.send({ type: FRAME_OPEN, channel: i, document: `fleet/junk-${i}` });
  const refused = await waitFor(
    'the channels over the limit to be refused',
    () => {
      const closes = peer.frames.filter((f) => f.type === FRAME_CLOSE && f.code === 4429);
      return closes.length >= total - MAX_CHANNELS ? closes : null;
    },
    5000,
    20,
  );
  assert.is(refused.length, total - MAX_CHANNELS);
  assert.ok(
    refused.every((f) => f.type === FRAME_CLOSE && f.channel > MAX_CHANNELS),
    'the first channels stay open',
  );
  assert.ok((await health()).openDocuments <= MAX_CHANNELS + 10, 'memory bounded by the limit');

  // A second session with the same key replaces the first: the budget does not multiply.
  const second = await MuxPeer.connect(relayKey);
  assert.is(await peer.closed(), 4409);
  assert.is((await health()).relaySessions, 1);
  second.ws.close();
  await waitFor('the session to end', async () => (await health()).relaySessions === 0, 5000);
});

test("a listed relay's presence counts only for hosts in its scope", async () => {
  const peer = await MuxPeer.connect(relayKey);
  const now = Date.now();
  const entries: PresenceEntry[] = [
    { host: 'h1', online: true, lastSeen: now },
    { host: 'h2', online: true, lastSeen: now },
    { host: 'prod-1', online: true, lastSeen: now },
    { host: '../../x', online: true, lastSeen: now },
  ];
  peer.send({ type: FRAME_PRESENCE, hosts: entries });
  const presenceUrl = `${httpBaseFromWs(coordinator.url)}/api/presence`;
  const read = async (): Promise<Record<string, { online: boolean }>> => {
    const response = await fetch(presenceUrl, { headers: await proofHeaders(presenceUrl, org.alice) });
    assert.is(response.status, 200);
    return ((await response.json()) as { hosts: Record<string, { online: boolean }> }).hosts;
  };
  const hosts = await waitFor('h1 online through its relay', async () => {
    const snapshot = await read();
    return snapshot.h1?.online ? snapshot : null;
  });
  assert.not.ok('h2' in hosts, 'h2 is not in r1 scope');
  assert.not.ok('prod-1' in hosts);
  assert.is(Object.keys(hosts).length, 1);
  assert.ok((await health()).refusals.relayPresence >= 3);
  // A lastSeen that is not a time does not break /api/presence for everyone. Read once the
  // coordinator has handled the frame (it counts the entry as refused), not after a fixed pause
  // that a loaded machine may outlast (the read would then prove nothing).
  const refusedBefore = (await health()).refusals.relayPresence;
  peer.send({ type: FRAME_PRESENCE, hosts: [{ host: 'h1', online: false, lastSeen: Number.NaN }] });
  await waitFor(
    'the coordinator to handle the presence entry without a time',
    async () => (await health()).refusals.relayPresence > refusedBefore,
    10_000,
    50,
  );
  assert.ok((await read()).h1);
  peer.ws.close();
});

test('the coordinator still serves an admin after all of it', async () => {
  const connection = connectDocument(coordinator.url, 'hosts/h1/desired', { identity: org.alice, maxBackoffMs: 300 });
  try {
    await waitForSync(connection, 10_000);
  } finally {
    connection.close();
  }
  assert.is(coordinator.child.exitCode, null);
});

test.run();
