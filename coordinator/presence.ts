// Online / last seen per host, in memory only, never written into a document. Agents connected
// here are seen through awareness on their status document; hosts behind relays are reported by
// each relay as a summary (a PRESENCE frame on its upstream link, only when something changes),
// so a site's agents renewing their awareness every 15 s cost nothing on the relay's uplink.
export interface HostPresence {
  online: boolean;
  lastSeen: string | null;
}

interface Seen {
  online: boolean;
  lastSeen: number;
}

// local: seen through awareness here; otherwise reported by a relay below.
export type PresenceListener = (host: string, online: boolean, lastSeen: number, local: boolean) => void;

export class PresenceTable {
  private readonly local = new Map<string, Seen>();
  private readonly remote = new Map<object, Map<string, Seen>>();
  private readonly listeners: PresenceListener[] = [];

  onChange(listener: PresenceListener): void {
    this.listeners.push(listener);
  }

  setLocal(host: string, online: boolean, at = Date.now()): void {
    this.set(this.local, host, online, at);
  }

  setRemote(source: object, host: string, online: boolean, lastSeen: number): void {
    let table = this.remote.get(source);
    if (!table) {
      table = new Map();
      this.remote.set(source, table);
    }
    this.set(table, host, online, lastSeen);
  }

  // A relay's link went away: the hosts it reported are offline as of now.
  dropSource(source: object, at = Date.now()): void {
    const table = this.remote.get(source);
    if (!table) return;
    for (const [host, seen] of table) if (seen.online) this.set(table, host, false, at);
  }

  get(host: string): Seen | null {
    let best: Seen | null = null;
    for (const table of [this.local, ...this.remote.values()]) {
      const seen = table.get(host);
      if (!seen) continue;
      best = best
        ? { online: best.online || seen.online, lastSeen: Math.max(best.lastSeen, seen.lastSeen) }
        : { ...seen };
    }
    return best;
  }

  hosts(): string[] {
    const names = new Set(this.local.keys());
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
    const previous = table.get(host);
    table.set(host, { online, lastSeen: online || !previous ? at : Math.max(previous.lastSeen, at) });
    const after = this.get(host)!;
    if (!before || before.online !== after.online)
      for (const listener of this.listeners) listener(host, after.online, after.lastSeen, table === this.local);
  }
}
