// Online / last seen per host, in memory only, never written into a document. Agents connected
// here are seen through awareness on their status document; hosts behind relays are reported by
// each relay as a summary (a PRESENCE frame on its upstream link, only when something changes),
// so a site's agents renewing their awareness every 15 s cost nothing on the relay's uplink.
export interface HostPresence {
  online: boolean;
  lastSeen: string | null;
}

const MAX_DEPARTED = 100_000;

interface Seen {
  online: boolean;
  lastSeen: number;
}

// local: seen through awareness here; otherwise reported by a relay below (or another coordinator).
export type PresenceListener = (host: string, online: boolean, lastSeen: number, local: boolean) => void;
// What this server itself knows of a host (its own awareness and its relays), without what other
// coordinators told it: the part it shares with them, so nothing echoes back and forth.
export type OwnPresenceListener = (host: string, online: boolean, lastSeen: number) => void;

export class PresenceTable {
  private readonly local = new Map<string, Seen>();
  private readonly remote = new Map<object, Map<string, Seen>>();
  // Hosts last reported by relay sessions that have ended (offline, with their last-seen time):
  // one table however often relays reconnect.
  private readonly departed = new Map<string, Seen>();
  // Sources that are other coordinators on a shared NATS log (setRemote with peer = true), and
  // the hosts of those that stopped reporting: counted in get() and snapshot(), never in getOwn().
  private readonly peers = new Set<object>();
  private readonly peerTables = new WeakSet<Map<string, Seen>>();
  private readonly peersDeparted = new Map<string, Seen>();
  private readonly listeners: PresenceListener[] = [];
  private readonly ownListeners: OwnPresenceListener[] = [];

  onChange(listener: PresenceListener): void {
    this.listeners.push(listener);
  }

  onOwnChange(listener: OwnPresenceListener): void {
    this.ownListeners.push(listener);
  }

  setLocal(host: string, online: boolean, at = Date.now()): void {
    this.set(this.local, host, online, at);
  }

  // False (nothing recorded) when the source already reports maxHosts other hosts: a relay's
  // summaries cannot grow this table past its bound.
  // `peer`: the source is another coordinator, whose hosts this one does not pass on.
  setRemote(
    source: object,
    host: string,
    online: boolean,
    lastSeen: number,
    maxHosts = Infinity,
    peer = false,
  ): boolean {
    let table = this.remote.get(source);
    if (!table) {
      table = new Map();
      this.remote.set(source, table);
      if (peer) {
        this.peers.add(source);
        this.peerTables.add(table);
      }
    }
    if (!table.has(host) && table.size >= maxHosts) return false;
    this.set(table, host, online, lastSeen);
    return true;
  }

  // A relay's link went away: the hosts it reported are offline as of now.
  dropSource(source: object, at = Date.now()): void {
    const table = this.remote.get(source);
    if (!table) return;
    for (const [host, seen] of table) if (seen.online) this.set(table, host, false, at);
    this.remote.delete(source);
    const departed = this.peers.delete(source) ? this.peersDeparted : this.departed;
    for (const [host, seen] of table) {
      const kept = departed.get(host);
      departed.delete(host);
      departed.set(host, { online: false, lastSeen: Math.max(kept?.lastSeen ?? 0, seen.lastSeen) });
    }
    // Oldest first out (Map keeps insertion order).
    while (departed.size > MAX_DEPARTED) departed.delete(departed.keys().next().value!);
  }

  get(host: string): Seen | null {
    return this.merged(host, [this.local, this.departed, this.peersDeparted, ...this.remote.values()]);
  }

  // What this server knows without the other coordinators.
  getOwn(host: string): Seen | null {
    const tables = [this.local, this.departed];
    for (const [source, table] of this.remote) if (!this.peers.has(source)) tables.push(table);
    return this.merged(host, tables);
  }

  private merged(host: string, tables: Map<string, Seen>[]): Seen | null {
    let best: Seen | null = null;
    for (const table of tables) {
      const seen = table.get(host);
      if (!seen) continue;
      best = best
        ? { online: best.online || seen.online, lastSeen: Math.max(best.lastSeen, seen.lastSeen) }
        : { ...seen };
    }
    return best;
  }

  hosts(): string[] {
    const names = new Set([...this.local.keys(), ...this.departed.keys(), ...this.peersDeparted.keys()]);
    for (const table of this.remote.values()) for (const host of table.keys()) names.add(host);
    return [...names];
  }

  // The /api/presence answer: an online host was last seen now.
  snapshot(now = Date.now()): Record<string, HostPresence> {
    const hosts: Record<string, HostPresence> = {};
    for (const host of this.hosts()) {
      const seen = this.get(host)!;
      hosts[host] = { online: seen.online, lastSeen: new Date(seen.online ? now : seen.lastSeen).toISOString() };
    }
    return hosts;
  }

  private set(table: Map<string, Seen>, host: string, online: boolean, at: number): void {
    const before = this.get(host);
    const own = this.ownListeners.length > 0 && !this.peerTables.has(table);
    const ownBefore = own ? this.getOwn(host) : null;
    const previous = table.get(host);
    table.set(host, { online, lastSeen: online || !previous ? at : Math.max(previous.lastSeen, at) });
    const after = this.get(host)!;
    if (!before || before.online !== after.online)
      for (const listener of this.listeners) listener(host, after.online, after.lastSeen, table === this.local);
    if (!own) return;
    const ownAfter = this.getOwn(host)!;
    if (!ownBefore || ownBefore.online !== ownAfter.online)
      for (const listener of this.ownListeners) listener(host, ownAfter.online, ownAfter.lastSeen);
  }
}
