import { createPrivateKey, createPublicKey, sign as ed25519Sign, type KeyObject, randomBytes } from 'node:crypto';
import * as Y from 'yjs';
import { canonicalBytes } from '../../shared/crypto/canonical.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { forgetVerifiedSignatures } from '../../shared/crypto/verified-once.js';
import { intentsArray, readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName, documentGarbageCollects, statusDocName } from '../../shared/documents/names.js';
import { writeCurrentStatus } from '../../shared/documents/status.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { SignedStatus, Status } from '../../shared/schemas/report.js';
import { sleep } from '../../shared/time/sleep.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { verifyIntent } from '../../shared/trust/verify-intent.js';
import type { StartCommand, VerifiedReport, WorkerCommand, WorkerReport } from './ipc.js';
import { LeanDocClient } from './lean-client.js';

// One process of simulated agents. Each host is what a real agent holds open: hosts/<id>/desired
// (read) and hosts/<id>/status (written once with a signed status, plus one awareness state that
// is renewed every 15 s like y-protocols' Awareness). On every remote update of a desired
// document the host reads the intents array (readIntentEntries, as the agent does) and runs
// verifyIntent on each new entry.

// agent/runtime.ts AGENT_VERSION at the time of writing; only its size matters here.
const AGENT_VERSION = '0.2.0';
const AWARENESS_RENEW_MS = 15_000;
const CONNECT_ATTEMPTS = 3;
const ATTEMPT_TIMEOUT_MS = 30_000;

interface SimulatedHost {
  host: string;
  desired: LeanDocClient;
  status: LeanDocClient;
  seen: number;
}

interface PendingVerification {
  host: string;
  signed: SignedIntent;
  receivedNs: bigint;
  handlingNs: bigint;
  decodedNs: bigint;
}

const hosts: SimulatedHost[] = [];
const queue: PendingVerification[] = [];
let draining = false;
let verification: 'deferred' | 'inline' = 'inline';
let quiescing = false;
let trustedAdminKeys: ReadonlySet<string> = new Set();
let renewTimer: NodeJS.Timeout | null = null;

function report(message: WorkerReport): void {
  process.send?.(message);
}

// Host keys and status signatures with node:crypto's Ed25519 (about 100× faster than tweetnacl):
// the same bytes and the same algorithm as signPayload('status', …), checked once at start.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const STATUS_PREFIX = Buffer.from('outpost-status-v1\n');

function hostKey(): { privateKey: KeyObject; publicKey: string } {
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519_PREFIX, randomBytes(32)]),
    format: 'der',
    type: 'pkcs8',
  });
  const spki = createPublicKey(privateKey).export({ format: 'der', type: 'spki' });
  return { privateKey, publicKey: spki.subarray(spki.length - 32).toString('base64') };
}

function signedStatus(host: string): SignedStatus {
  const key = hostKey();
  const status: Status = {
    kind: 'status',
    host,
    seq: 1,
    updatedAt: new Date().toISOString(),
    phase: 'idle',
    applied: null,
    target: null,
    lastResultSeq: null,
    agentVersion: AGENT_VERSION,
  };
  const signature = ed25519Sign(null, Buffer.concat([STATUS_PREFIX, canonicalBytes(status)]), key.privateKey);
  return { status, signature: { publicKey: key.publicKey, signature: signature.toString('base64') } };
}

// The verification path (tweetnacl) is JIT-compiled before measuring: one worker stands for
// thousands of hosts, so its first intents would otherwise pay a cold start no steady agent pays
// twice. Measured: ~20 ms cold, ~9.5 ms warm per verifyIntent on the reference machine.
function warmUp(): void {
  const status = signedStatus('warm-up');
  if (!verifyPayloadSignature('status', status.status, status.signature)) {
    throw new Error(
      'node:crypto Ed25519 status signature does not verify with tweetnacl; the bench signing shortcut is broken',
    );
  }
  const admin = generateSigningKey('warm-up');
  const now = Date.now();
  const signed = signIntent(
    {
      kind: 'intent',
      host: 'warm-up',
      generation: 1,
      closure: `/nix/store/${'0'.repeat(32)}-nixos-system-warm-up`,
      action: 'switch',
      issuedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + 3_600_000).toISOString(),
      issuer: 'warm-up',
    },
    admin,
  );
  for (let i = 0; i < 20; i++) {
    // verifyIntent keeps verdicts: forget them, so each round runs tweetnacl as a host's first
    // check of a new intent does.
    forgetVerifiedSignatures();
    const verdict = verifyIntent(signed, {
      host: 'warm-up',
      trustedAdminKeys: new Set([admin.publicKey]),
      now: Date.now(),
    });
    if (!verdict.ok) throw new Error(`warm-up intent refused: ${verdict.reason}`);
  }
}

function drain(): void {
  const item = queue.shift();
  if (!item) {
    draining = false;
    return;
  }
  const verifyStartNs = process.hrtime.bigint();
  const verdict = verifyIntent(item.signed, { host: item.host, trustedAdminKeys, now: Date.now() });
  const verifiedNs = process.hrtime.bigint();
  const message: VerifiedReport = {
    type: 'verified',
    host: item.host,
    generation: item.signed.intent.generation,
    ok: verdict.ok,
    reason: verdict.ok ? null : verdict.reason,
    receivedNs: item.receivedNs,
    handlingNs: item.handlingNs,
    decodedNs: item.decodedNs,
    verifyStartNs,
    verifiedNs,
  };
  report(message);
  // One verification per turn of the event loop: arriving messages are timestamped between them.
  setImmediate(drain);
}

function onDesiredUpdate(simulated: SimulatedHost, receivedNs: bigint, handlingNs: bigint): void {
  const doc = simulated.desired.doc;
  if (intentsArray(doc).length <= simulated.seen) return;
  const { entries } = readIntentEntries(doc);
  const decodedNs = process.hrtime.bigint();
  for (const entry of entries) {
    if (entry.index < simulated.seen) continue;
    queue.push({ host: simulated.host, signed: entry.signed, receivedNs, handlingNs, decodedNs });
    if (verification === 'deferred')
      report({
        type: 'delivered',
        host: simulated.host,
        generation: entry.signed.intent.generation,
        receivedNs,
        handlingNs,
        decodedNs,
      });
  }
  simulated.seen = intentsArray(doc).length;
  if (verification === 'inline') startDraining();
}

function startDraining(): void {
  if (draining || queue.length === 0) return;
  draining = true;
  setImmediate(drain);
}

function timeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function connectHost(
  serverUrl: string,
  host: string,
  status: SignedStatus,
): Promise<{ simulated: SimulatedHost; retries: number }> {
  let lastError: Error | null = null;
  for (let attempt = 0; attempt < CONNECT_ATTEMPTS; attempt++) {
    const statusDoc = new Y.Doc({ gc: documentGarbageCollects(statusDocName(host)) });
    writeCurrentStatus(statusDoc, status);
    // Closes during a failed attempt are retried, not reported.
    let established = false;
    let simulated: SimulatedHost | null = null;
    const onClosed =
      (document: string) =>
      (code: number, reason: string): void => {
        if (established && !quiescing) report({ type: 'unexpected-close', document, code, reason });
      };
    const desired = new LeanDocClient({
      serverUrl,
      name: desiredDocName(host),
      doc: new Y.Doc({ gc: documentGarbageCollects(desiredDocName(host)) }),
      onRemoteApplied: (receivedNs, handlingNs) => {
        if (simulated) onDesiredUpdate(simulated, receivedNs, handlingNs);
      },
      deferHandling: true,
      onClosed: onClosed(desiredDocName(host)),
    });
    const statusClient = new LeanDocClient({
      serverUrl,
      name: statusDocName(host),
      doc: statusDoc,
      awarenessState: { role: 'agent', host, phase: 'idle', generation: null, target: null },
      onClosed: onClosed(statusDocName(host)),
    });
    try {
      await timeout(
        Promise.all([desired.whenStored(), statusClient.whenStored()]),
        ATTEMPT_TIMEOUT_MS,
        `connecting ${host}`,
      );
      established = true;
      simulated = { host, desired, status: statusClient, seen: intentsArray(desired.doc).length };
      return { simulated, retries: attempt };
    } catch (error) {
      lastError = error as Error;
      desired.close();
      statusClient.close();
      await sleep(250 * (attempt + 1));
    }
  }
  throw new Error(`host ${host} could not connect and sync after ${CONNECT_ATTEMPTS} attempts: ${lastError?.message}`);
}

let retries = 0;

// Connects more hosts (the driver connects the fleet in parts); reports the totals so far.
async function start(command: StartCommand): Promise<void> {
  if (!renewTimer) {
    trustedAdminKeys = new Set([command.adminPublicKey]);
    warmUp();
    renewTimer = setInterval(() => {
      if (quiescing) return;
      const now = Date.now();
      for (const simulated of hosts)
        if (now - simulated.status.lastAwarenessMs >= AWARENESS_RENEW_MS) simulated.status.renewAwareness();
    }, 1000);
  }
  const started = Date.now();
  const deadline = started + command.timeoutMs;
  for (let i = 0; i < command.hosts.length; i += command.batch) {
    if (Date.now() > deadline)
      throw new Error(`connected only ${i} of ${command.hosts.length} more hosts within ${command.timeoutMs} ms`);
    const slice = command.hosts.slice(i, i + command.batch);
    const connected = await Promise.all(slice.map((host) => connectHost(command.serverUrl, host, signedStatus(host))));
    for (const { simulated, retries: r } of connected) {
      hosts.push(simulated);
      retries += r;
    }
    report({ type: 'progress', connected: hosts.length });
  }
  report({ type: 'ready', connected: hosts.length, retries, setupMs: Date.now() - started });
}

function exit(): void {
  quiescing = true;
  if (renewTimer) clearInterval(renewTimer);
  for (const simulated of hosts) {
    simulated.desired.close();
    simulated.status.close();
  }
  setTimeout(() => process.exit(0), 50);
}

process.on('message', (command: WorkerCommand) => {
  switch (command.type) {
    case 'start':
      start(command).catch((error: Error) => {
        report({ type: 'failed', error: error.message });
      });
      return;
    case 'mode':
      verification = command.verification;
      if (verification === 'inline') startDraining();
      return;
    case 'verify':
      startDraining();
      return;
    case 'quiesce':
      quiescing = true;
      if (renewTimer) clearInterval(renewTimer);
      return;
    case 'exit':
      exit();
      return;
  }
});
// The driver went away (crash, kill): do not linger with thousands of sockets.
process.on('disconnect', () => process.exit(0));
