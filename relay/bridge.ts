import * as decoding from 'lib0/decoding';
import * as syncProtocol from 'y-protocols/sync';
import type { DocumentHost, HostedDocument } from '../coordinator/hosted-documents.js';
import type { PresenceTable } from '../coordinator/presence.js';
import { MESSAGE_SYNC, syncMessage } from '../coordinator/wire.js';
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

interface Bridged {
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
}

export interface Bridge {
  handlers: UpstreamHandlers;
  attach(link: UpstreamLink): void;
  // Documents that changed while nobody held them here (relay start: everything in the local log).
  enqueue(documents: Iterable<string>): void;
  stats(): { bridged: number; dirty: number; queued: number; passing: number };
}

const NO_CHANNEL = null;

export function createBridge(host: DocumentHost, presence: PresenceTable, options: BridgeOptions): Bridge {
  const { logger } = options;
  let link: UpstreamLink | null = null;
  let upstreamPrincipal = 'upstream';
  const bridged = new Map<string, Bridged>();
  const byChannel = new Map<number, Bridged>();
  const queue = new Set<string>();
  const passing = new Set<string>();
  let epoch = '';
  let cursor = 0;
  let _presenceTimer: NodeJS.Timeout | null = null;
  const presenceChanges = new Map<string, PresenceEntry>();

  const isUpstream = (principal: string): boolean => principal.startsWith('upstream:');

  function setPinned(state: Bridged, wanted: boolean): void {
    if (state.pinned === wanted) return;
    state.pinned = wanted;
    if (wanted) void host.pin(state.name);
    else host.unpin(state.name);
  }

  function dirty(state: Bridged): boolean {
    return state.localSeq > state.ackedSeq;
  }

  function probe(state: Bridged): void {
    if (state.channel === NO_CHANNEL || state.probes.length > 0) return;
    state.probes.push(state.localSeq);
    link?.send(
      state.channel,
      syncMessage((encoder) => syncProtocol.writeSyncStep1(encoder, state.hosted.doc)),
    );
  }

  function settle(state: Bridged): void {
    setPinned(state, dirty(state) && !state.refused);
    if (passing.has(state.name) && ((state.synced && !dirty(state)) || state.refused || state.channel === NO_CHANNEL)) {
      passing.delete(state.name);
      host.unpin(state.name);
      pump();
    }
  }

  function openChannel(state: Bridged): void {
    if (!link || state.channel !== NO_CHANNEL || state.refused || !options.inScope(state.name)) return;
    const channel = link.open(state.name);
    if (channel === null) return;
    state.channel = channel;
    state.answered = false;
    state.synced = false;
    state.probes = [];
    byChannel.set(channel, state);
  }

  function dropChannel(state: Bridged): void {
    if (state.channel !== NO_CHANNEL) byChannel.delete(state.channel);
    state.channel = NO_CHANNEL;
    state.answered = false;
    state.synced = false;
    state.probes = [];
  }

  // Passes run a few at a time, only while the link is up.
  function pump(): void {
    if (!link?.connectedUrl()) return;
    for (const name of queue) {
      if (passing.size >= options.passConcurrency) return;
      queue.delete(name);
      const state = bridged.get(name);
      if (state && state.channel !== NO_CHANNEL) continue; // already live
      passing.add(name);
      host.pin(name).then(
        (hosted) => {
          const current = bridged.get(name);
          if (!current || current.hosted !== hosted) return;
          if (current.channel === NO_CHANNEL) openChannel(current);
          settle(current);
        },
        (error: Error) => {
          logger.error(
            { event: 'relay-pass-failed', document: name, err: error },
            'cannot load document for upstream sync',
          );
          passing.delete(name);
          pump();
        },
      );
    }
  }

  host.observe({
    loaded(hosted) {
      const state: Bridged = {
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
      bridged.set(hosted.name, state);
      openChannel(state);
    },
    accepted(hosted, delta, principal) {
      const state = bridged.get(hosted.name);
      if (!state || isUpstream(principal) || options.pullOnly(hosted.name)) return;
      state.localSeq += 1;
      setPinned(state, !state.refused);
      if (state.channel !== NO_CHANNEL && state.answered) {
        link?.send(
          state.channel,
          syncMessage((encoder) => syncProtocol.writeUpdate(encoder, delta)),
        );
        probe(state);
      }
    },
    unloaded(name) {
      const state = bridged.get(name);
      if (!state) return;
      bridged.delete(name);
      if (state.channel !== NO_CHANNEL && link?.connectedUrl()) link.close(state.channel);
      dropChannel(state);
      if (dirty(state))
        logger.error(
          { event: 'relay-unconfirmed-unload', document: name },
          'document unloaded with writes the upstream has not confirmed',
        );
    },
  });

  // Presence of the site's hosts goes up as summaries, only when it changes. Going offline here is
  // reported after a grace period, so a flapping site LAN costs nothing upstream (relays below
  // applied theirs already).
  const reported = new Map<string, boolean>();
  const pendingOffline = new Map<string, NodeJS.Timeout>();
  const report = (entry: PresenceEntry): void => {
    presenceChanges.set(entry.host, entry);
    _presenceTimer ??= setTimeout(() => {
      _presenceTimer = null;
      if (!link?.connectedUrl()) return;
      const entries = [...presenceChanges.values()].filter((e) => reported.get(e.host) !== e.online);
      presenceChanges.clear();
      for (const e of entries) reported.set(e.host, e.online);
      link.presence(entries);
    }, 50);
  };
  presence.onChange((host, online, lastSeen, local) => {
    const pending = pendingOffline.get(host);
    if (pending) clearTimeout(pending);
    pendingOffline.delete(host);
    if (online || !local) return report({ host, online, lastSeen });
    pendingOffline.set(
      host,
      setTimeout(() => {
        pendingOffline.delete(host);
        report({ host, online: false, lastSeen });
      }, options.presenceGraceMs ?? 5000).unref(),
    );
  });

  async function onSync(state: Bridged, decoder: decoding.Decoder): Promise<void> {
    const subtype = decoding.readVarUint(decoder);
    const payload = decoding.readVarUint8Array(decoder);
    if (subtype === syncProtocol.messageYjsSyncStep1) {
      await state.hosted.run(() => {
        if (state.channel === NO_CHANNEL || options.pullOnly(state.name)) return;
        link?.send(
          state.channel,
          syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, state.hosted.doc, payload)),
        );
      });
      state.answered = true;
      probe(state);
      return;
    }
    if (subtype !== syncProtocol.messageYjsSyncStep2 && subtype !== syncProtocol.messageYjsUpdate)
      throw new Error(`unknown sync message type ${subtype}`);
    await state.hosted.run(() => host.acceptUpdate(state.hosted, payload, upstreamPrincipal, null));
    if (subtype === syncProtocol.messageYjsSyncStep2) {
      const confirmed = state.probes.shift();
      if (confirmed !== undefined) {
        state.ackedSeq = Math.max(state.ackedSeq, confirmed);
        state.synced = true;
        if (dirty(state)) probe(state);
      }
      settle(state);
    }
  }

  const handlers: UpstreamHandlers = {
    connected(url) {
      upstreamPrincipal = `upstream:${url}`;
      link?.since(epoch, cursor);
      for (const state of bridged.values()) {
        state.refused = false;
        openChannel(state);
      }
      // Everything the site saw while the link was down.
      const table = presence.hosts().map((h) => ({ host: h, ...presence.get(h)! }));
      reported.clear();
      for (const entry of table) reported.set(entry.host, entry.online);
      link?.presence(table);
      pump();
    },
    disconnected() {
      for (const state of bridged.values()) {
        dropChannel(state);
        if (passing.has(state.name)) {
          passing.delete(state.name);
          host.unpin(state.name);
          queue.add(state.name);
        }
      }
      byChannel.clear();
    },
    data(channel, message) {
      const state = byChannel.get(channel);
      if (!state) return;
      const decoder = decoding.createDecoder(message);
      let type: number;
      try {
        type = decoding.readVarUint(decoder);
      } catch {
        return;
      }
      // Awareness from above is not relayed down: the site's own peers see each other here.
      if (type !== MESSAGE_SYNC) return;
      onSync(state, decoder).catch((error: Error) => {
        logger.warn(
          { event: 'relay-upstream-message-failed', document: state.name, reason: error.message },
          'could not apply a message from upstream',
        );
      });
    },
    closed(channel, code, reason) {
      const state = byChannel.get(channel);
      if (!state) return;
      dropChannel(state);
      if (code === 4403 || code === 1008) {
        // Not ours to sync (the policy changed, or it never was): stop trying until the link is new.
        state.refused = true;
        logger.warn(
          { event: 'relay-channel-refused', document: state.name, code, reason },
          'upstream refused this document',
        );
      } else {
        logger.info(
          { event: 'relay-channel-closed', document: state.name, code, reason },
          'upstream closed the channel; reopening',
        );
        setTimeout(() => bridged.get(state.name) === state && openChannel(state), 1000).unref();
      }
      settle(state);
    },
    changes(newEpoch, newCursor, documents) {
      epoch = newEpoch;
      cursor = newCursor;
      for (const name of documents) if (options.inScope(name)) queue.add(name);
      pump();
    },
  };

  return {
    handlers,
    attach(upstream) {
      link = upstream;
    },
    enqueue(documents) {
      for (const name of documents) if (options.inScope(name)) queue.add(name);
      pump();
    },
    stats: () => ({
      bridged: byChannel.size,
      dirty: [...bridged.values()].filter(dirty).length,
      queued: queue.size,
      passing: passing.size,
    }),
  };
}

// Documents a relay keeps: its hosts' documents and the fleet documents.
export function isRelayedDocument(name: string): boolean {
  return parseDocName(name) !== null || name.startsWith('fleet/');
}
