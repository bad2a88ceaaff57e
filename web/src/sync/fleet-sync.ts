import { IndexeddbPersistence } from 'y-indexeddb';
import * as Y from 'yjs';
import { z } from 'zod';
import type { SigningKey } from '../../../shared/crypto/keys.js';
import { preverifySignatures } from '../../../shared/crypto/verified-once.js';
import { ENROLLMENT_DOC } from '../../../shared/documents/fleet.js';
import {
  desiredDocName,
  documentGarbageCollects,
  parseDocName,
  statusDocName,
} from '../../../shared/documents/names.js';
import { rolloutIdOfDoc } from '../../../shared/rollout/document.js';
import { connectDocument, type DocumentConnection } from '../../../shared/sync/connect.js';
import { fetchAuthHeaders, httpBaseFromWs } from '../../../shared/sync/reconnect.js';
import { type FleetTrust, type Freshness, openFleetTrust } from '../../../shared/trust/fleet-trust.js';
import {
  type HostKeyAuthority,
  type HostPresence,
  type HostView,
  hostKeyAuthority,
  hostSignatureChecks,
  hostViewFromDocuments,
} from '../../../shared/views/host-view.js';
import { idbGet, idbPut } from '../storage/idb.js';
import { consoleLogger } from './log.js';
import { readBounded } from './read-bounded.js';
import { ViewBatcher } from './view-batcher.js';

// The page's copy of the fleet: the same documents, over the same stock y-websocket provider and
// the same challenge-response key proof as the CLI and agents (shared/sync/connect.ts), each also
// kept in IndexedDB (y-indexeddb) so the page shows its last view and takes signed actions with
// no link. Views are rebuilt with the CLI's own verification (shared/views/host-view.ts), only for
// hosts whose documents changed, at most once per animation frame.

export interface FleetSyncOptions {
  // ws:// or wss:// URL of the coordinator or relay that served the page.
  serverUrl: string;
  key: SigningKey;
  // Pinned org root keys; empty: nothing is checked against a policy (shown as unverified).
  orgRootKeys: string[];
}

export interface ConnectionSummary {
  documents: number;
  live: number;
  // Documents whose server refused this key (close codes 4401/4403), with the server's words.
  refused: { document: string; reason: string }[];
  // Every document the server lets this key read is live (an admin scoped to some hosts is
  // refused the others' documents: that is not a lost link).
  allLive: boolean;
}

interface OpenDocument {
  connection: DocumentConnection;
  persistence: IndexeddbPersistence;
  // True once what this browser stored of the document is loaded into it.
  loaded: boolean;
}

interface HostDocuments {
  desired: OpenDocument;
  status: OpenDocument;
}

const presenceSchema = z.object({
  hosts: z.record(z.string(), z.object({ online: z.boolean(), lastSeen: z.string().nullable() })),
});
const documentsSchema = z.object({ documents: z.array(z.string()) });
const hostListSchema = z.array(z.string()).max(100_000);

// Hosts followed at most (two sockets each): a server listing more (a bug, or a hostile one) does
// not make the page open sockets without bound; the bar says the list was cut.
export const MAX_FOLLOWED_HOSTS = 5_000;
const PRESENCE_EVERY_MS = 5_000;
const HOST_LIST_EVERY_MS = 30_000;
const LIVE_SAVE_EVERY_MS = 10_000;
// Agents freeze after a day without a signed timestamp (agent --freeze-after); the page says its
// policy view is stale after the same time.
const FREEZE_AFTER_MS = 86_400_000;
// Rollout documents followed at most (a host's rollout intent past it shows as unverified).
const MAX_ROLLOUT_DOCUMENTS = 64;

// The server's answers are read only up to a bound (a host list of 5,000 names is ~200 KiB).
const MAX_API_ANSWER_BYTES = 4 * 1024 * 1024;

export class FleetSync {
  readonly serverUrl: string;
  readonly key: SigningKey;
  readonly orgRootKeys: string[];
  private readonly hosts = new Map<string, HostDocuments>();
  private readonly presence = new Map<string, HostPresence>();
  private readonly loadListeners = new Set<(document: string) => void>();
  private readonly refused = new Map<string, string>();
  private readonly timers: ReturnType<typeof setInterval>[] = [];
  private readonly fleetDocuments: OpenDocument[] = [];
  private enrollment: OpenDocument | null = null;
  // fleet/rollout-<id> documents the hosts' rollout intents name, and the hosts that read each.
  private readonly followedRollouts = new Map<string, { open: OpenDocument; hosts: Set<string> }>();
  // Fleet documents by name (policy, timestamps), for the admin views.
  private readonly byName = new Map<string, OpenDocument>();
  private trust: FleetTrust | null = null;
  private authorityCache: HostKeyAuthority | null = null;
  private closed = false;
  private readonly batcher: ViewBatcher;
  private lastSaveOfLive = 0;
  // When every document was last live; persisted, so a page reloaded offline says how old its view is.
  lastLiveAt: number | null = null;

  constructor(options: FleetSyncOptions) {
    this.serverUrl = options.serverUrl;
    this.key = options.key;
    this.orgRootKeys = options.orgRootKeys;
    this.batcher = new ViewBatcher(
      (host, now) => this.buildView(host, now),
      () => this.hosts.keys(),
      (now) => this.noteLiveness(now),
      (hosts) => this.preverify(hosts),
    );
  }

  private storeKey(what: string): string {
    return `${what} ${this.serverUrl}`;
  }

  async start(): Promise<void> {
    const saved = z.number().safeParse(await idbGet('settings', this.storeKey('live-at')));
    this.lastLiveAt = saved.success ? saved.data : null;
    if (this.orgRootKeys.length) {
      this.trust = await openFleetTrust({
        orgRootKeys: this.orgRootKeys,
        store: {
          where: `this browser's saved trust state for ${this.serverUrl}`,
          load: async () =>
            z
              .string()
              .nullable()
              .catch(null)
              .parse((await idbGet('trust', this.serverUrl)) ?? null),
          save: (text) => idbPut('trust', this.serverUrl, text),
        },
        follow: (name) => {
          const open = this.open(name, () => this.invalidateAll());
          this.fleetDocuments.push(open);
          this.byName.set(name, open);
          return { doc: open.connection.doc, close: () => this.closeDocument(open) };
        },
        freezeAfterMs: FREEZE_AFTER_MS,
        logger: consoleLogger,
      });
      this.trust.onChange(() => this.invalidateAll());
      this.enrollment = this.open(ENROLLMENT_DOC, () => this.invalidateAll());
      this.fleetDocuments.push(this.enrollment);
    }
    const cached = hostListSchema.safeParse(await idbGet('settings', this.storeKey('hosts')));
    for (const host of cached.success ? cached.data : []) this.addHost(host);
    const onOffline = (): void => this.dropLinks();
    window.addEventListener('offline', onOffline);
    this.timers.push(setInterval(() => void this.refreshPresence(), PRESENCE_EVERY_MS));
    this.timers.push(setInterval(() => void this.refreshHostList(), HOST_LIST_EVERY_MS));
    this.timers.push(setInterval(() => this.schedule(), 1000));
    void this.refreshHostList();
    void this.refreshPresence();
    this.schedule();
  }

  // The browser says the link is gone: close the sockets now (their reconnect loop takes over)
  // rather than wait for the provider's 30 s silence timeout.
  private dropLinks(): void {
    for (const open of this.allDocuments()) open.connection.provider.ws?.close();
    this.schedule();
  }

  private open(name: string, changed: () => void): OpenDocument {
    const doc = new Y.Doc({ gc: documentGarbageCollects(name) });
    const persistence = new IndexeddbPersistence(`outpost ${this.serverUrl} ${name}`, doc);
    const connection = connectDocument(this.serverUrl, name, {
      doc,
      identity: this.key,
      baseBackoffMs: 500,
      maxBackoffMs: 4_000,
      onRetry: (retry) => {
        if (retry.code === 4401 || retry.code === 4403) this.refused.set(name, retry.reason);
        this.schedule();
      },
    });
    // The page only reads presence: it publishes no awareness state of its own, or the
    // coordinator (which counts any peer's state in a status document) would show hosts online.
    connection.provider.awareness.setLocalState(null);
    const open: OpenDocument = { connection, persistence, loaded: false };
    void persistence.whenSynced.then(() => {
      open.loaded = true;
      changed();
      for (const listener of this.loadListeners) listener(name);
    });
    doc.on('update', changed);
    connection.provider.on('status', () => this.schedule());
    connection.provider.on('sync', (synced: boolean) => {
      if (synced) this.refused.delete(name);
      this.schedule();
    });
    return open;
  }

  private closeDocument(open: OpenDocument): void {
    const index = this.fleetDocuments.indexOf(open);
    if (index >= 0) this.fleetDocuments.splice(index, 1);
    for (const [name, known] of this.byName) if (known === open) this.byName.delete(name);
    open.connection.close();
    void open.persistence.destroy();
  }

  private allDocuments(): OpenDocument[] {
    return [...this.fleetDocuments, ...[...this.hosts.values()].flatMap((h) => [h.desired, h.status])];
  }

  // Hosts the page did not follow because it follows MAX_FOLLOWED_HOSTS already.
  hostsNotFollowed = 0;

  // Opens (once) and follows the host's two documents.
  addHost(host: string): void {
    if (this.hosts.has(host) || this.closed) return;
    if (this.hosts.size >= MAX_FOLLOWED_HOSTS) {
      this.hostsNotFollowed += 1;
      return;
    }
    const changed = (): void => this.invalidate(host);
    const documents: HostDocuments = {
      desired: this.open(desiredDocName(host), changed),
      status: this.open(statusDocName(host), changed),
    };
    documents.status.connection.provider.awareness.on('change', changed);
    this.hosts.set(host, documents);
    this.invalidate(host);
  }

  private async saveHostList(): Promise<void> {
    await idbPut('settings', this.storeKey('hosts'), [...this.hosts.keys()].sort());
  }

  async getJson<S extends z.ZodType>(path: string, schema: S): Promise<z.infer<S> | null> {
    const url = `${httpBaseFromWs(this.serverUrl)}${path}`;
    try {
      const headers = await fetchAuthHeaders(url, this.key, 10_000);
      const response = await fetch(url, { headers, signal: AbortSignal.timeout(10_000) });
      if (!response.ok) return null;
      const text = await readBounded(response, MAX_API_ANSWER_BYTES);
      if (text === null) return null;
      const parsed = schema.safeParse(JSON.parse(text));
      return parsed.success ? parsed.data : null;
    } catch {
      // Offline or unreachable: the persisted view stays, marked stale.
      return null;
    }
  }

  async refreshHostList(): Promise<void> {
    const listed = await this.getJson('/api/documents', documentsSchema);
    const hosts = new Set<string>();
    for (const name of listed?.documents ?? []) {
      const parsed = parseDocName(name);
      if (parsed) hosts.add(parsed.host);
    }
    for (const host of this.authority()?.bindings.keys() ?? []) hosts.add(host);
    const before = this.hosts.size;
    this.hostsNotFollowed = 0;
    for (const host of hosts) this.addHost(host);
    if (this.hosts.size !== before) await this.saveHostList();
  }

  async refreshPresence(): Promise<void> {
    const answer = await this.getJson('/api/presence', presenceSchema);
    if (!answer) return;
    for (const [host, presence] of Object.entries(answer.hosts)) {
      const before = this.presence.get(host);
      this.presence.set(host, presence);
      if (before?.online !== presence.online || before?.lastSeen !== presence.lastSeen) this.invalidate(host);
    }
  }

  private invalidate(host: string): void {
    this.batcher.invalidate(host);
  }

  private invalidateAll(): void {
    this.authorityCache = null;
    this.batcher.invalidateAll();
    this.followEnrolledHosts();
  }

  // Hosts enrolled since the last listing (or before the enrollment document had synced, as at the
  // first listing right after unlock) are followed at once, not at the next listing 30 s later.
  private followEnrolledHosts(): void {
    const before = this.hosts.size;
    for (const host of this.authority()?.bindings.keys() ?? [])
      if (!this.hosts.has(host) && this.hosts.size < MAX_FOLLOWED_HOSTS) this.addHost(host);
    if (this.hosts.size !== before) void this.saveHostList();
  }

  // Connection changes re-render without rebuilding any host's view.
  private schedule(): void {
    if (!this.closed) this.batcher.schedule();
  }

  // The signatures of the hosts about to be rebuilt, checked natively first (WebCrypto Ed25519).
  private async preverify(hosts: string[]): Promise<void> {
    const checks = hosts.flatMap((host) => {
      const documents = this.hosts.get(host);
      return documents
        ? hostSignatureChecks(host, documents.desired.connection.doc, documents.status.connection.doc)
        : [];
    });
    await preverifySignatures(checks);
  }

  private buildView(host: string, now: number): HostView | null {
    const documents = this.hosts.get(host);
    if (!documents) return null;
    const presence = this.presence.get(host);
    return hostViewFromDocuments(host, {
      desired: documents.desired.connection.doc,
      status: documents.status.connection.doc,
      awarenessStates: documents.status.connection.provider.awareness.getStates().values(),
      authority: this.authority(),
      ...(presence ? { presence } : {}),
      rolloutDocument: this.rolloutDocuments(host),
      now,
    });
  }

  // The rollout documents `host`'s views need (hostViewFromDocuments, hostTimeline): a rollout
  // intent is checked against the plan in its rollout document, opened on first need.
  rolloutDocuments(host: string): (name: string) => Y.Doc | null {
    return (name) => this.rolloutDocument(name, host);
  }

  private rolloutDocument(name: string, host: string): Y.Doc | null {
    if (!this.followedRollouts.has(name) && (this.closed || this.followedRollouts.size >= MAX_ROLLOUT_DOCUMENTS))
      return null;
    const followed = this.followRollout(name);
    followed.hosts.add(host);
    return followed.open.connection.doc;
  }

  // One connection per rollout document, whether a host's view or the rollout pages asked first.
  private followRollout(name: string): { open: OpenDocument; hosts: Set<string> } {
    let followed = this.followedRollouts.get(name);
    if (!followed) {
      const hosts = new Set<string>();
      const open = this.open(name, () => {
        for (const reader of hosts) this.invalidate(reader);
        this.schedule();
      });
      this.fleetDocuments.push(open);
      followed = { open, hosts };
      this.followedRollouts.set(name, followed);
    }
    return followed;
  }

  private noteLiveness(now: number): void {
    const summary = this.connections();
    if (summary.allLive) {
      this.lastLiveAt = now;
      if (now - this.lastSaveOfLive > LIVE_SAVE_EVERY_MS) {
        this.lastSaveOfLive = now;
        void idbPut('settings', this.storeKey('live-at'), now);
      }
    }
  }

  subscribe(listener: () => void): () => void {
    return this.batcher.subscribe(listener);
  }

  // The policy walked from the pinned root and the enrolled host keys; null without a pinned root
  // or before the first policy arrives.
  authority(): HostKeyAuthority | null {
    if (!this.trust || !this.enrollment) return null;
    this.authorityCache ??= hostKeyAuthority(this.trust.chain(), this.enrollment.connection.doc);
    return this.authorityCache;
  }

  // A fleet document (fleet/policy, fleet/rollout-<id>…), followed and kept in IndexedDB from the
  // first call on; its changes re-render the page without rebuilding host views.
  fleetDocument(name: string): Y.Doc {
    if (name === ENROLLMENT_DOC && this.enrollment) return this.enrollment.connection.doc;
    if (rolloutIdOfDoc(name) !== null) return this.followRollout(name).open.connection.doc;
    let open = this.byName.get(name);
    if (!open) {
      open = this.open(name, () => this.schedule());
      this.fleetDocuments.push(open);
      this.byName.set(name, open);
    }
    return open.connection.doc;
  }

  freshness(): Freshness | null {
    return this.trust?.freshness() ?? null;
  }

  hostViews(): HostView[] {
    return this.batcher.all();
  }

  hostView(host: string): HostView | null {
    return this.batcher.view(host);
  }

  desiredDoc(host: string): Y.Doc | null {
    return this.hosts.get(host)?.desired.connection.doc ?? null;
  }

  // Whether what this browser stored of the host's desired document is loaded: only then can the
  // page tell whether an intent is missing from it.
  desiredLoaded(host: string): boolean {
    return this.hosts.get(host)?.desired.loaded ?? false;
  }

  onDocumentLoaded(listener: (document: string) => void): void {
    this.loadListeners.add(listener);
  }

  // Whether the host's desired document is live (delivery of a new intent can be confirmed).
  desiredLive(host: string): boolean {
    const provider = this.hosts.get(host)?.desired.connection.provider;
    return Boolean(provider?.wsconnected && provider.synced);
  }

  // Whether a fleet document (a rollout's) this page follows is live: only then does the page know
  // everything it holds (the generations a rollout plan already gave out).
  fleetDocumentLive(name: string): boolean {
    const open = this.followedRollouts.get(name)?.open ?? this.byName.get(name);
    return Boolean(open?.connection.provider.wsconnected && open.connection.provider.synced);
  }

  knowsHost(host: string): boolean {
    return this.hosts.has(host);
  }

  connections(): ConnectionSummary {
    const all = this.allDocuments();
    const live = all.filter((d) => d.connection.provider.wsconnected && d.connection.provider.synced).length;
    const readable = all.length - this.refused.size;
    return {
      documents: all.length,
      live,
      refused: [...this.refused].map(([document, reason]) => ({ document, reason })),
      allLive: readable > 0 && live >= readable,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.batcher.close();
    for (const timer of this.timers) clearInterval(timer);
    await this.trust?.close();
    for (const open of this.allDocuments()) this.closeDocument(open);
  }
}
