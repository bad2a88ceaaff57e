import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { outdatedTimeout } from 'y-protocols/awareness';

// The coordinator's side of the y-protocols awareness protocol: the same wire format and the same
// clock rules as y-protocols/awareness.js 1.0.7 (applyAwarenessUpdate, removeAwarenessStates,
// encodeAwarenessUpdate, the 30 s timeout), kept in one Map per document. A y-protocols Awareness
// instance per document costs ~1 KB (an Observable with its own Map and listener Set, separate
// states and meta Maps, a listener on the Y.Doc and an interval timer), two of them per host; and
// the coordinator announces no state of its own, which is most of what that class is for.

export interface AwarenessChanges {
  added: number[];
  updated: number[];
  removed: number[];
}

interface ClientEntry {
  clock: number;
  // Unix ms of the last accepted update, for the timeout.
  lastUpdated: number;
  // null once removed: the entry stays so that the clock keeps stale updates from reviving it.
  state: unknown;
}

export type AwarenessListener = (changes: AwarenessChanges, origin: unknown) => void;

export class AwarenessTable {
  private readonly clients = new Map<number, ClientEntry>();
  private live = 0;

  constructor(private readonly onChange: AwarenessListener) {}

  // Peers with a state now.
  get size(): number {
    return this.live;
  }

  ids(): number[] {
    const ids: number[] = [];
    for (const [id, entry] of this.clients) if (entry.state !== null) ids.push(id);
    return ids;
  }

  // applyAwarenessUpdate: a newer clock replaces the state (null removes it); the same clock with
  // null removes a state still held. Throws on a malformed update before changing anything.
  apply(update: Uint8Array, origin: unknown): void {
    const decoder = decoding.createDecoder(update);
    const count = decoding.readVarUint(decoder);
    const incoming: { id: number; clock: number; state: unknown }[] = [];
    for (let i = 0; i < count; i++) {
      const id = decoding.readVarUint(decoder);
      const clock = decoding.readVarUint(decoder);
      incoming.push({ id, clock, state: JSON.parse(decoding.readVarString(decoder)) as unknown });
    }
    const now = Date.now();
    const changes: AwarenessChanges = { added: [], updated: [], removed: [] };
    for (const { id, clock, state } of incoming) {
      const entry = this.clients.get(id);
      const held = entry !== undefined && entry.state !== null;
      // An unknown client counts as clock 0, so its clock-0 state is ignored, as y-protocols does.
      const current = entry?.clock ?? 0;
      if (!(current < clock || (current === clock && state === null && held))) continue;
      if (held) this.live -= 1;
      if (state !== null) this.live += 1;
      if (entry) {
        entry.clock = clock;
        entry.lastUpdated = now;
        entry.state = state;
        // A state that comes back goes last, as in y-protocols' states Map (ids() keeps its order).
        if (!held && state !== null) {
          this.clients.delete(id);
          this.clients.set(id, entry);
        }
      } else {
        this.clients.set(id, { clock, lastUpdated: now, state });
      }
      // As y-protocols: "added" only the first time a client id is seen.
      if (entry === undefined && state !== null) changes.added.push(id);
      else if (entry !== undefined && state === null) changes.removed.push(id);
      else if (state !== null) changes.updated.push(id);
    }
    this.emit(changes, origin);
  }

  // removeAwarenessStates: drops the states (a peer disconnected, or timed out); the clocks stay.
  remove(ids: number[], origin: unknown): void {
    const removed: number[] = [];
    for (const id of ids) {
      const entry = this.clients.get(id);
      if (!entry || entry.state === null) continue;
      entry.state = null;
      this.live -= 1;
      removed.push(id);
    }
    this.emit({ added: [], updated: [], removed }, origin);
  }

  // Removes states not renewed within y-protocols' outdatedTimeout (30 s); peers renew every 15 s.
  expire(now: number): void {
    if (this.live === 0) return;
    const outdated: number[] = [];
    for (const [id, entry] of this.clients)
      if (entry.state !== null && outdatedTimeout <= now - entry.lastUpdated) outdated.push(id);
    if (outdated.length > 0) this.remove(outdated, 'timeout');
  }

  // encodeAwarenessUpdate: clientID, clock and JSON state (null when removed) for each id.
  encode(ids: number[]): Uint8Array {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, ids.length);
    for (const id of ids) {
      const entry = this.clients.get(id);
      encoding.writeVarUint(encoder, id);
      encoding.writeVarUint(encoder, entry?.clock ?? 0);
      // `||`, as y-protocols writes it: a falsy state (false, 0, '') goes out as null.
      encoding.writeVarString(encoder, JSON.stringify(entry?.state || null));
    }
    return encoding.toUint8Array(encoder);
  }

  private emit(changes: AwarenessChanges, origin: unknown): void {
    if (changes.added.length > 0 || changes.updated.length > 0 || changes.removed.length > 0)
      this.onChange(changes, origin);
  }
}

// One timer expires the peers of every table (y-protocols' Awareness has an interval of its own,
// every 3 s, per document).
const tables = new Set<AwarenessTable>();
let sweepTimer: NodeJS.Timeout | null = null;

export function trackExpiry(table: AwarenessTable): void {
  tables.add(table);
  sweepTimer ??= setInterval(
    () => {
      const now = Date.now();
      for (const each of tables) each.expire(now);
    },
    Math.floor(outdatedTimeout / 10),
  );
}

export function untrackExpiry(table: AwarenessTable): void {
  tables.delete(table);
  if (tables.size === 0 && sweepTimer) {
    clearInterval(sweepTimer);
    sweepTimer = null;
  }
}
