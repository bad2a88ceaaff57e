import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import WebSocket from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import type * as Y from 'yjs';

// A minimal y-websocket client for the benchmark: one raw `ws` socket and one Y.Doc, speaking
// exactly what y-websocket's WebsocketProvider speaks (src/y-websocket.js), without its per-
// provider Awareness (3 s interval), process 'exit' listener, BroadcastChannel, resync timer and
// reconnect loop, so that 10,000 simulated hosts × 2 documents fit in a couple of processes.
//
//   open            → send SyncStep1 (our state vector) and, if set, one awareness update
//   server Step1    → reply Step2 (what the server lacks), then a second Step1 as a barrier
//   Step2 / Update  → apply to the doc (origin = this client, so it is not sent back)
//   local update    → send it as an Update
//
// Both servers answer a Step1 in order with what came before it on the connection, and ours
// only after the Step2 before it is applied and fsync'ed into its update log; so the reply to
// the barrier Step1 (the second Step2 we receive) means "everything this host had is stored".

const MESSAGE_SYNC = 0;
const MESSAGE_AWARENESS = 1;
const MESSAGE_QUERY_AWARENESS = 3;

export interface LeanClientOptions {
  // Base server URL (ws://127.0.0.1:port); the document name is the path, as with y-websocket.
  serverUrl: string;
  name: string;
  // URL parameters, as y-websocket's `params` (a key proof for coordinators run with --org-root).
  params?: Record<string, string>;
  doc: Y.Doc;
  // Set once at open and renewed by renewAwareness(), like an agent's status-document awareness.
  awarenessState?: Record<string, unknown>;
  // Called after a remote Update/Step2 was applied; `receivedNs` is taken on entry of the socket
  // message handler, before decoding; `handlingNs` when this message's handling began.
  onRemoteApplied?: (receivedNs: bigint, handlingNs: bigint) => void;
  // Only timestamp a message on arrival and handle it on the next turn of the event loop, after
  // every message that arrived with it was timestamped. One process simulates hundreds of hosts:
  // handled on arrival, a burst of updates to many hosts would put each host's timestamp behind
  // the decoding of every update before it, work that real hosts do on their own CPUs.
  deferHandling?: boolean;
  // Connection ended (by either side) — after the first open, or failed to open.
  onClosed?: (code: number, reason: string) => void;
}

export class LeanDocClient {
  readonly name: string;
  readonly doc: Y.Doc;
  private readonly ws: WebSocket;
  private readonly options: LeanClientOptions;
  private step2Received = 0;
  private awarenessClock = 0;
  private syncedWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  private storedWaiters: { resolve: () => void; reject: (error: Error) => void }[] = [];
  // barrier(): Step2 replies still awaited, each with the count of Step2s that answers it.
  private barrierWaiters: { step2: number; resolve: () => void; reject: (error: Error) => void }[] = [];
  private barriersSent = 0;
  private closedError: Error | null = null;
  lastAwarenessMs = 0;

  constructor(options: LeanClientOptions) {
    this.options = options;
    this.name = options.name;
    this.doc = options.doc;
    const query = options.params ? `?${new URLSearchParams(options.params).toString()}` : '';
    this.ws = new WebSocket(`${options.serverUrl.replace(/\/+$/, '')}/${options.name}${query}`);
    this.ws.binaryType = 'nodebuffer';
    this.doc.on('update', this.onLocalUpdate);
    this.ws.on('open', () => {
      this.send(encodeSync((encoder) => syncProtocol.writeSyncStep1(encoder, this.doc)));
      if (this.options.awarenessState) this.renewAwareness();
    });
    this.ws.on('message', (data: Buffer) =>
      options.deferHandling ? deferMessage(this, data, process.hrtime.bigint()) : this.onMessage(data),
    );
    this.ws.on('error', (error: Error) => this.fail(error));
    this.ws.on('close', (code: number, reason: Buffer) => {
      this.fail(new Error(`${this.name}: connection closed (${code} ${reason.toString()})`));
      this.options.onClosed?.(code, reason.toString());
    });
  }

  get synced(): boolean {
    return this.step2Received >= 1;
  }

  get stored(): boolean {
    return this.step2Received >= 2;
  }

  whenSynced(): Promise<void> {
    if (this.synced) return Promise.resolve();
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => this.syncedWaiters.push({ resolve, reject }));
  }

  whenStored(): Promise<void> {
    if (this.stored) return Promise.resolve();
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => this.storedWaiters.push({ resolve, reject }));
  }

  // A new barrier: resolves once the server answered one more Step1, i.e. handled (on our
  // coordinator: stored in its update log) everything sent before it on this connection. A soak's
  // writer uses it as the acknowledgement of its write. Call after whenStored().
  barrier(): Promise<void> {
    if (this.closedError) return Promise.reject(this.closedError);
    this.barriersSent += 1;
    const step2 = 2 + this.barriersSent;
    const answered = new Promise<void>((resolve, reject) => this.barrierWaiters.push({ step2, resolve, reject }));
    this.send(encodeSync((encoder) => syncProtocol.writeSyncStep1(encoder, this.doc)));
    return answered;
  }

  // One awareness update for our client id with a higher clock: what y-protocols' Awareness sends
  // on setLocalState and every 15 s to keep the state from expiring (outdatedTimeout 30 s).
  renewAwareness(): void {
    const state = this.options.awarenessState;
    if (!state || this.ws.readyState !== WebSocket.OPEN) return;
    this.awarenessClock += 1;
    const inner = encoding.createEncoder();
    encoding.writeVarUint(inner, 1);
    encoding.writeVarUint(inner, this.doc.clientID);
    encoding.writeVarUint(inner, this.awarenessClock);
    encoding.writeVarString(inner, JSON.stringify(state));
    const outer = encoding.createEncoder();
    encoding.writeVarUint(outer, MESSAGE_AWARENESS);
    encoding.writeVarUint8Array(outer, encoding.toUint8Array(inner));
    this.send(encoding.toUint8Array(outer));
    this.lastAwarenessMs = Date.now();
  }

  close(): void {
    this.doc.off('update', this.onLocalUpdate);
    this.options.onClosed = undefined;
    if (this.ws.readyState === WebSocket.CONNECTING || this.ws.readyState === WebSocket.OPEN) this.ws.terminate();
  }

  private readonly onLocalUpdate = (update: Uint8Array, origin: unknown): void => {
    if (origin === this) return;
    this.send(encodeSync((encoder) => syncProtocol.writeUpdate(encoder, update)));
  };

  private send(message: Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(message);
  }

  // Handles one message; `receivedNs` is when it arrived, if it waited (deferHandling).
  onMessage(data: Buffer, received?: bigint): void {
    const handlingNs = process.hrtime.bigint();
    const receivedNs = received ?? handlingNs;
    const decoder = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    const type = decoding.readVarUint(decoder);
    if (type === MESSAGE_SYNC) {
      const reply = encoding.createEncoder();
      encoding.writeVarUint(reply, MESSAGE_SYNC);
      const subtype = syncProtocol.readSyncMessage(decoder, reply, this.doc, this);
      if (subtype === syncProtocol.messageYjsSyncStep1) {
        this.send(encoding.toUint8Array(reply));
        // Barrier: answered only after the Step2 just sent has been handled (stored).
        this.send(encodeSync((encoder) => syncProtocol.writeSyncStep1(encoder, this.doc)));
        return;
      }
      if (subtype === syncProtocol.messageYjsSyncStep2) {
        this.step2Received += 1;
        if (this.step2Received === 1) for (const waiter of this.syncedWaiters.splice(0)) waiter.resolve();
        if (this.step2Received === 2) for (const waiter of this.storedWaiters.splice(0)) waiter.resolve();
        while (this.barrierWaiters.length > 0 && this.barrierWaiters[0]!.step2 <= this.step2Received)
          this.barrierWaiters.shift()!.resolve();
      }
      this.options.onRemoteApplied?.(receivedNs, handlingNs);
      return;
    }
    if (type === MESSAGE_QUERY_AWARENESS) {
      if (this.options.awarenessState) this.renewAwareness();
      return;
    }
    // MESSAGE_AWARENESS from the server (other peers' states, our own echo): not kept.
  }

  private fail(error: Error): void {
    if (this.closedError) return;
    this.closedError = error;
    for (const waiter of [
      ...this.syncedWaiters.splice(0),
      ...this.storedWaiters.splice(0),
      ...this.barrierWaiters.splice(0),
    ])
      waiter.reject(error);
  }
}

// Messages timestamped on arrival and not handled yet (deferHandling), in arrival order, for
// every client of the process; handled in one batch after the poll phase that received them.
const deferred: { client: LeanDocClient; data: Buffer; receivedNs: bigint }[] = [];

function deferMessage(client: LeanDocClient, data: Buffer, receivedNs: bigint): void {
  deferred.push({ client, data, receivedNs });
  if (deferred.length === 1) setImmediate(handleDeferred);
}

function handleDeferred(): void {
  for (const { client, data, receivedNs } of deferred.splice(0)) client.onMessage(data, receivedNs);
}

function encodeSync(write: (encoder: encoding.Encoder) => void): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_SYNC);
  write(encoder);
  return encoding.toUint8Array(encoder);
}
