import * as decoding from 'lib0/decoding';
import * as syncProtocol from 'y-protocols/sync';
import type { DocumentHost, HostedDocument } from '../coordinator/hosted-documents.js';
import type { PresenceTable } from '../coordinator/presence.js';
import { MESSAGE_SYNC, syncMessage } from '../coordinator/wire.js';
import { diffLosesContent, historySince } from '../shared/documents/history-forward.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import type { PresenceEntry } from '../shared/sync/mux-frames.js';
import type { UpstreamHandlers, UpstreamLink } from './upstream.js';

// Keeps the relay's documents and the upstream's in step, both ways, over the upstream link.
//
// A document has an upstream channel exactly while it is loaded here: because an agent has it
// open, because it holds local writes the upstream has not confirmed yet (then it is pinned, so
// writes made while the upstream is down are pushed when it returns), or because the upstream
// said it changed (a "pass": load, sync, let go). Updates from the upstream go through the
// document's queue like any peer's (applied, fsync'ed to the relay's own log, broadcast to the
// site's agents) under the principal "upstream:<url>"; local updates are forwarded upstream.
//
// Confirmation: the upstream answers a sync step 1 only after everything that came before it on
// the channel is on its disk (coordinator/hosted-documents.ts). So after pushing, the relay sends
// a step 1 ("probe") and counts its writes as confirmed when the answer arrives.

// One document as the bridge sees it.
export interface Bridged {
  name: string;
  hosted: HostedDocument;
  channel: number | null;
  // Local writes counted, and how many of them the upstream has confirmed.
  localSeq: number;
  ackedSeq: number;
  probes: number[];
  // We answered the upstream's step 1: from here on, live updates flow.
  answered: boolean;
  synced: boolean;
  refused: boolean;
  pinned: boolean;
}

export interface BridgeOptions {
  logger: Logger;
  passConcurrency: number;
  // Documents that only flow down (fleet/*: written by the coordinator alone).
  pullOnly(document: string): boolean;
  // Whether the upstream would let this relay sync the document at all.
  inScope(document: string): boolean;
  presenceGraceMs?: number;
  // The document's logged updates in order (the relay's update log): what the upstream lacks is
  // passed on from here when the document deleted some of it since (history-forward.ts).
  history?(document: string): AsyncIterable<Uint8Array>;
}

export interface Bridge {
  handlers: UpstreamHandlers;
  attach(link: UpstreamLink): void;
  // Documents that changed while nobody held them here (relay start: everything in the local log).
  enqueue(documents: Iterable<string>): void;
  stats(): { bridged: number; dirty: number; queued: number; passing: number };
}

// Everything the bridge knows, as one record the functions below take: unit tests build one with a
// stand-in host and link (test/unit/relay/bridge.test.ts).
export interface BridgeState {
  readonly host: DocumentHost;
  readonly presence: PresenceTable;
  readonly options: BridgeOptions;
  link: UpstreamLink | null;
  upstreamPrincipal: string;
  readonly bridged: Map<string, Bridged>;
  readonly byChannel: Map<number, Bridged>;
  // Documents waiting for a pass, and those being passed now.
  readonly queue: Set<string>;
  readonly passing: Set<string>;
  // The upstream's change feed position (FRAME_SINCE / FRAME_CHANGES).
  epoch: string;
  cursor: number;
  // Presence summaries: what is waiting to go up, what went up last, offline reports in grace.
  presenceTimer: ReturnType<typeof setTimeout> | null;
  readonly presenceChanges: Map<string, PresenceEntry>;
  readonly reported: Map<string, boolean>;
  readonly pendingOffline: Map<string, ReturnType<typeof setTimeout>>;
}

const NO_CHANNEL = null;
const PRESENCE_BATCH_MS = 50;
const REOPEN_DELAY_MS = 1000;
const QUOTA_REOPEN_DELAY_MS = 60_000;

export function createBridgeState(host: DocumentHost, presence: PresenceTable, options: BridgeOptions): BridgeState {
  return {
    host,
    presence,
    options,
    link: null,
    upstreamPrincipal: 'upstream',
    bridged: new Map(),
    byChannel: new Map(),
    queue: new Set(),
    passing: new Set(),
    epoch: '',
    cursor: 0,
    presenceTimer: null,
    presenceChanges: new Map(),
    reported: new Map(),
    pendingOffline: new Map(),
  };
}

const isUpstream = (principal: string): boolean => principal.startsWith('upstream:');

export function isDirty(doc: Bridged): boolean {
  return doc.localSeq > doc.ackedSeq;
}

function setPinned(bridge: BridgeState, doc: Bridged, wanted: boolean): void {
  if (doc.pinned === wanted) return;
  doc.pinned = wanted;
  if (wanted) void bridge.host.pin(doc.name);
  else bridge.host.unpin(doc.name);
}

// Asks the upstream for a step 2; its answer confirms every local write sent before it.
function probe(bridge: BridgeState, doc: Bridged): void {
  if (doc.channel === NO_CHANNEL || doc.probes.length > 0) return;
  doc.probes.push(doc.localSeq);
  bridge.link?.send(
    doc.channel,
    syncMessage((encoder) => syncProtocol.writeSyncStep1(encoder, doc.hosted.doc)),
  );
}

// Pinned while it holds unconfirmed writes; a pass ends once synced and clean (or refused).
export function settle(bridge: BridgeState, doc: Bridged): void {
  setPinned(bridge, doc, isDirty(doc) && !doc.refused);
  if (bridge.passing.has(doc.name) && ((doc.synced && !isDirty(doc)) || doc.refused || doc.channel === NO_CHANNEL)) {
    bridge.passing.delete(doc.name);
    bridge.host.unpin(doc.name);
    pump(bridge);
  }
}

export function openChannel(bridge: BridgeState, doc: Bridged): void {
  if (!bridge.link || doc.channel !== NO_CHANNEL || doc.refused || !bridge.options.inScope(doc.name)) return;
  const channel = bridge.link.open(doc.name);
  if (channel === null) return;
  doc.channel = channel;
  doc.answered = false;
  doc.synced = false;
  doc.probes = [];
  bridge.byChannel.set(channel, doc);
}

export function dropChannel(bridge: BridgeState, doc: Bridged): void {
  if (doc.channel !== NO_CHANNEL) bridge.byChannel.delete(doc.channel);
  doc.channel = NO_CHANNEL;
  doc.answered = false;
  doc.synced = false;
  doc.probes = [];
}

// Passes run a few at a time, only while the link is up.
export function pump(bridge: BridgeState): void {
  if (!bridge.link?.connectedUrl()) return;
  for (const name of bridge.queue) {
    if (bridge.passing.size >= bridge.options.passConcurrency) return;
    bridge.queue.delete(name);
    const known = bridge.bridged.get(name);
    if (known && known.channel !== NO_CHANNEL) continue; // already live
    bridge.passing.add(name);
    bridge.host.pin(name).then(
      (hosted) => {
        const current = bridge.bridged.get(name);
        if (!current || current.hosted !== hosted) return;
        if (current.channel === NO_CHANNEL) openChannel(bridge, current);
        settle(bridge, current);
      },
      (error: Error) => {
        bridge.options.logger.error(
          { event: 'relay-pass-failed', document: name, err: error },
          'cannot load document for upstream sync',
        );
        bridge.passing.delete(name);
        bridge.host.unpin(name);
        pump(bridge);
      },
    );
  }
}

export function documentLoaded(bridge: BridgeState, hosted: HostedDocument): void {
  const doc: Bridged = {
    name: hosted.name,
    hosted,
    channel: NO_CHANNEL,
    localSeq: 0,
    ackedSeq: 0,
    probes: [],
    answered: false,
    synced: false,
    refused: false,
    pinned: false,
  };
  bridge.bridged.set(hosted.name, doc);
  openChannel(bridge, doc);
}

// A local write is stored: forward it and ask for confirmation.
export function localUpdateAccepted(
  bridge: BridgeState,
  hosted: HostedDocument,
  delta: Uint8Array,
  principal: string,
): void {
  const doc = bridge.bridged.get(hosted.name);
  if (!doc || isUpstream(principal) || bridge.options.pullOnly(hosted.name)) return;
  doc.localSeq += 1;
  setPinned(bridge, doc, !doc.refused);
  if (doc.channel !== NO_CHANNEL && doc.answered) {
    bridge.link?.send(
      doc.channel,
      syncMessage((encoder) => syncProtocol.writeUpdate(encoder, delta)),
    );
    probe(bridge, doc);
  }
}

export function documentUnloaded(bridge: BridgeState, name: string): void {
  const doc = bridge.bridged.get(name);
  if (!doc) return;
  bridge.bridged.delete(name);
  if (doc.channel !== NO_CHANNEL && bridge.link?.connectedUrl()) bridge.link.close(doc.channel);
  dropChannel(bridge, doc);
  if (isDirty(doc))
    bridge.options.logger.error(
      { event: 'relay-unconfirmed-unload', document: name },
      'document unloaded with writes the upstream has not confirmed',
    );
}

// Presence of the site's hosts goes up as summaries, only when it changes. Going offline here is
// reported after a grace period, so a flapping site LAN costs nothing upstream (relays below
// applied theirs already).
function reportPresence(bridge: BridgeState, entry: PresenceEntry): void {
  bridge.presenceChanges.set(entry.host, entry);
  bridge.presenceTimer ??= setTimeout(() => {
    bridge.presenceTimer = null;
    if (!bridge.link?.connectedUrl()) return;
    const entries = [...bridge.presenceChanges.values()].filter((e) => bridge.reported.get(e.host) !== e.online);
    bridge.presenceChanges.clear();
    for (const e of entries) bridge.reported.set(e.host, e.online);
    bridge.link.presence(entries);
  }, PRESENCE_BATCH_MS);
}

export function presenceChanged(
  bridge: BridgeState,
  host: string,
  online: boolean,
  lastSeen: number,
  local: boolean,
): void {
  const pending = bridge.pendingOffline.get(host);
  if (pending) clearTimeout(pending);
  bridge.pendingOffline.delete(host);
  if (online || !local) {
    reportPresence(bridge, { host, online, lastSeen });
    return;
  }
  bridge.pendingOffline.set(
    host,
    setTimeout(() => {
      bridge.pendingOffline.delete(host);
      reportPresence(bridge, { host, online: false, lastSeen });
    }, bridge.options.presenceGraceMs ?? 5000).unref(),
  );
}

// One sync message from the upstream on a document's channel.
export async function upstreamSyncMessage(bridge: BridgeState, doc: Bridged, decoder: decoding.Decoder): Promise<void> {
  const subtype = decoding.readVarUint(decoder);
  const payload = decoding.readVarUint8Array(decoder);
  if (subtype === syncProtocol.messageYjsSyncStep1) {
    await doc.hosted.run(async () => {
      if (doc.channel === NO_CHANNEL || bridge.options.pullOnly(doc.name)) return;
      const channel = doc.channel;
      // Results the site's agents deleted after this relay logged them (a long time without an
      // uplink): a diff of the document would carry only their tombstones, so their content goes
      // first, from the log, then the diff as always (it adds only what the log parts did not).
      const { history } = bridge.options;
      if (history && diffLosesContent(doc.hosted.doc, payload)) {
        const parts = await historySince(history(doc.name), payload);
        if (doc.channel !== channel) return;
        for (const part of parts)
          bridge.link?.send(
            channel,
            syncMessage((encoder) => syncProtocol.writeUpdate(encoder, part)),
          );
      }
      bridge.link?.send(
        channel,
        syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, doc.hosted.doc, payload)),
      );
    });
    doc.answered = true;
    probe(bridge, doc);
    return;
  }
  if (subtype !== syncProtocol.messageYjsSyncStep2 && subtype !== syncProtocol.messageYjsUpdate)
    throw new Error(`unknown sync message type ${subtype}`);
  await doc.hosted.run(() => bridge.host.acceptUpdate(doc.hosted, payload, bridge.upstreamPrincipal, null));
  if (subtype === syncProtocol.messageYjsSyncStep2) {
    const confirmed = doc.probes.shift();
    if (confirmed !== undefined) {
      doc.ackedSeq = Math.max(doc.ackedSeq, confirmed);
      doc.synced = true;
      if (isDirty(doc)) probe(bridge, doc);
    }
    settle(bridge, doc);
  }
}

export function upstreamConnected(bridge: BridgeState, url: string): void {
  bridge.upstreamPrincipal = `upstream:${url}`;
  bridge.link?.since(bridge.epoch, bridge.cursor);
  for (const doc of bridge.bridged.values()) {
    doc.refused = false;
    openChannel(bridge, doc);
  }
  // Everything the site saw while the link was down.
  const table = bridge.presence.hosts().map((h) => ({ host: h, ...bridge.presence.get(h)! }));
  bridge.reported.clear();
  for (const entry of table) bridge.reported.set(entry.host, entry.online);
  bridge.link?.presence(table);
  pump(bridge);
}

export function upstreamDisconnected(bridge: BridgeState): void {
  for (const doc of bridge.bridged.values()) {
    dropChannel(bridge, doc);
    if (bridge.passing.has(doc.name)) {
      bridge.passing.delete(doc.name);
      bridge.host.unpin(doc.name);
      bridge.queue.add(doc.name);
    }
  }
  bridge.byChannel.clear();
}

export function upstreamData(bridge: BridgeState, channel: number, message: Uint8Array): void {
  const doc = bridge.byChannel.get(channel);
  if (!doc) return;
  const decoder = decoding.createDecoder(message);
  let type: number;
  try {
    type = decoding.readVarUint(decoder);
  } catch {
    return;
  }
  // Awareness from above is not relayed down: the site's own peers see each other here.
  if (type !== MESSAGE_SYNC) return;
  upstreamSyncMessage(bridge, doc, decoder).catch((error: Error) => {
    bridge.options.logger.warn(
      { event: 'relay-upstream-message-failed', document: doc.name, reason: error.message },
      'could not apply a message from upstream',
    );
  });
}

export function upstreamClosedChannel(bridge: BridgeState, channel: number, code: number, reason: string): void {
  const doc = bridge.byChannel.get(channel);
  if (!doc) return;
  dropChannel(bridge, doc);
  if (code === 4403 || code === 1008 || code === 4404 || code === 4413) {
    // Not ours to sync (the policy changed, or it never was), a name the upstream refuses, or a
    // document over its size limit: retrying cannot help, so stop until the link is new.
    doc.refused = true;
    bridge.options.logger.warn(
      { event: 'relay-channel-refused', document: doc.name, code, reason },
      'upstream refused this document',
    );
  } else {
    bridge.options.logger.info(
      { event: 'relay-channel-closed', document: doc.name, code, reason },
      'upstream closed the channel; reopening',
    );
    // Over the writer's hourly quota (4429): try again much later, not every second.
    const delay = code === 4429 ? QUOTA_REOPEN_DELAY_MS : REOPEN_DELAY_MS;
    setTimeout(() => bridge.bridged.get(doc.name) === doc && openChannel(bridge, doc), delay).unref();
  }
  settle(bridge, doc);
}

export function upstreamChanges(bridge: BridgeState, epoch: string, cursor: number, documents: string[]): void {
  bridge.epoch = epoch;
  bridge.cursor = cursor;
  enqueuePasses(bridge, documents);
}

export function enqueuePasses(bridge: BridgeState, documents: Iterable<string>): void {
  for (const name of documents) if (bridge.options.inScope(name)) bridge.queue.add(name);
  pump(bridge);
}

export function bridgeStats(bridge: BridgeState): ReturnType<Bridge['stats']> {
  return {
    bridged: bridge.byChannel.size,
    dirty: [...bridge.bridged.values()].filter(isDirty).length,
    queued: bridge.queue.size,
    passing: bridge.passing.size,
  };
}

// Wires a bridge state to the document host, the presence table and the upstream link.
export function createBridge(host: DocumentHost, presence: PresenceTable, options: BridgeOptions): Bridge {
  const bridge = createBridgeState(host, presence, options);
  host.observe({
    loaded: (hosted) => documentLoaded(bridge, hosted),
    accepted: (hosted, delta, principal) => localUpdateAccepted(bridge, hosted, delta, principal),
    unloaded: (name) => documentUnloaded(bridge, name),
  });
  presence.onChange((host, online, lastSeen, local) => presenceChanged(bridge, host, online, lastSeen, local));
  return {
    handlers: {
      connected: (url) => upstreamConnected(bridge, url),
      disconnected: () => upstreamDisconnected(bridge),
      data: (channel, message) => upstreamData(bridge, channel, message),
      closed: (channel, code, reason) => upstreamClosedChannel(bridge, channel, code, reason),
      changes: (epoch, cursor, documents) => upstreamChanges(bridge, epoch, cursor, documents),
    },
    attach(link) {
      bridge.link = link;
    },
    enqueue: (documents) => enqueuePasses(bridge, documents),
    stats: () => bridgeStats(bridge),
  };
}

// Documents a relay keeps: its hosts' documents and the fleet documents.
export function isRelayedDocument(name: string): boolean {
  return parseDocName(name) !== null || name.startsWith('fleet/');
}
