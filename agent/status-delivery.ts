import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import * as syncProtocol from 'y-protocols/sync';
import type { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';

// What of the status document a history keeper holds: the agent deletes an old result only once
// its upstream has it (agent/status-prune.ts), else the result never reaches the coordinator's
// update log (the agent's document collects garbage, so a deleted result's content is gone and the
// next sync carries only its tombstone), and `outpost audit verify` shows a gap for an honest host.
//
// Both upstreams an agent talks to, a coordinator and a relay, keep an update log and reach the
// coordinator with everything they logged (a relay forwards the content of what was deleted since
// from its log, relay/bridge.ts). Their sync step 1 says what they hold: the first message a
// server sends on a connection is its state vector, built after everything it took is on its disk
// (coordinator/connection.ts). For what the agent writes later on a long connection, it asks again
// ("probe"): the server answers a client's step 1 in the document's queue, after every message that
// came before it on the connection is stored, so the answer (a step 2) confirms all the agent had
// sent before asking. Probes go only after the agent answered the server's step 1 (its answer
// carries whatever the server lacked), and answers are matched in order: the provider's own step 1
// when the socket opens is answered first.
//
// The vector is in memory: after a restart the agent deletes nothing until an upstream said again
// what it holds.

// client id → clock: every item of that client below the clock is held upstream.
export type DeliveredVector = Map<number, number>;

export function addToDelivered(delivered: DeliveredVector, vector: ReadonlyMap<number, number>): boolean {
  let grew = false;
  for (const [client, clock] of vector)
    if ((delivered.get(client) ?? 0) < clock) {
      delivered.set(client, clock);
      grew = true;
    }
  return grew;
}

export function isDelivered(delivered: ReadonlyMap<number, number>, id: { client: number; clock: number }): boolean {
  return id.clock < (delivered.get(id.client) ?? 0);
}

export interface DeliveryTracker {
  // Asks the upstream what it holds now (coalesced; sent once the connection is ready).
  requestProbe(): void;
  stop(): void;
}

const PROBE_DELAY_MS = 250;

// Watches one status document connection; `confirmed` is called when the delivered vector grew.
export function trackDelivery(
  provider: WebsocketProvider,
  delivered: DeliveredVector,
  confirmed: () => void,
): DeliveryTracker {
  const doc = provider.doc;
  // Per connection: whether the server's step 1 was answered, and what each step 1 we sent
  // confirms when its answer comes (null: the provider's own, sent before we answered the server).
  let ready = false;
  let asked: (Map<number, number> | null)[] = [];
  let wanted = false;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let stopped = false;

  const grow = (vector: ReadonlyMap<number, number>): void => {
    if (addToDelivered(delivered, vector)) confirmed();
  };

  const sendProbe = (): void => {
    timer = null;
    const ws = provider.ws;
    if (stopped || !ready || !wanted || !provider.wsconnected || !ws || asked.length > 0) return;
    wanted = false;
    const vector = Y.decodeStateVector(Y.encodeStateVector(doc));
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0); // messageSync
    syncProtocol.writeSyncStep1(encoder, doc);
    asked.push(vector);
    ws.send(encoding.toUint8Array(encoder));
  };
  const schedule = (delayMs: number): void => {
    if (!timer && !stopped) timer = setTimeout(sendProbe, delayMs);
  };

  const original = provider.messageHandlers[0]!;
  provider.messageHandlers[0] = (encoder, decoder, p, emitSynced, messageType) => {
    // Peek at the sync message's type (and a step 1's vector) on a copy of the decoder.
    const peek = decoding.clone(decoder);
    let subtype = -1;
    let serverVector: Map<number, number> | null = null;
    try {
      subtype = decoding.readVarUint(peek);
      if (subtype === syncProtocol.messageYjsSyncStep1)
        serverVector = Y.decodeStateVector(decoding.readVarUint8Array(peek));
    } catch {
      subtype = -1;
    }
    original(encoder, decoder, p, emitSynced, messageType);
    if (serverVector) {
      grow(serverVector);
      // The provider sends our answer when this handler returns; probes go after it.
      ready = true;
      wanted = true;
      schedule(0);
    } else if (subtype === syncProtocol.messageYjsSyncStep2) {
      const vector = asked.shift();
      if (vector) grow(vector);
      if (asked.length === 0 && wanted) schedule(PROBE_DELAY_MS);
    }
  };
  const onStatus = ({ status }: { status: string }): void => {
    ready = false;
    // The provider sends its own step 1 right after 'connected'.
    asked = status === 'connected' ? [null] : [];
  };
  provider.on('status', onStatus);
  return {
    requestProbe() {
      wanted = true;
      if (ready && asked.length === 0) schedule(PROBE_DELAY_MS);
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      provider.off('status', onStatus);
      provider.messageHandlers[0] = original;
    },
  };
}
