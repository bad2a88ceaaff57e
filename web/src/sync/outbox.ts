import { z } from 'zod';
import { appendIntent, readIntentEntries } from '../../../shared/documents/desired.js';
import { desiredDocName } from '../../../shared/documents/names.js';
import { type SignedIntent, signedIntentSchema } from '../../../shared/schemas/intent.js';
import { connectDocument, waitForSync } from '../../../shared/sync/connect.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { idbPut, idbValues } from '../storage/idb.js';
import type { FleetSync } from './fleet-sync.js';

// Actions signed in this page, kept (in IndexedDB, awaited before the page says "signed") until
// the server has them. An intent is appended to the host's local desired document at once, so it
// merges when the link returns; it counts as delivered only when a fresh connection, synced from
// the server, holds it (as `outpost deploy` confirms: the server answers a sync only after its log
// is on disk). A page reloaded before y-indexeddb wrote the document re-appends it from here.
const outboxEntrySchema = z.object({
  digest: z.string(),
  server: z.string(),
  action: z.enum(['deploy', 'rollback', 'approve']),
  signed: signedIntentSchema,
  signedAt: z.string(),
  deliveredAt: z.string().nullable(),
});
export type OutboxEntry = z.infer<typeof outboxEntrySchema>;

const CHECK_EVERY_MS = 2_000;
const CONFIRM_TIMEOUT_MS = 8_000;

export class Outbox {
  private entries = new Map<string, OutboxEntry>();
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private checking = false;

  constructor(private readonly sync: FleetSync) {}

  async start(): Promise<void> {
    for (const raw of await idbValues('outbox')) {
      const parsed = outboxEntrySchema.safeParse(raw);
      if (parsed.success && parsed.data.server === this.sync.serverUrl)
        this.entries.set(parsed.data.digest, parsed.data);
    }
    for (const entry of this.pending()) this.sync.addHost(entry.signed.intent.host);
    this.sync.onDocumentLoaded(() => this.restorePending());
    this.timer = setInterval(() => void this.confirmDeliveries(), CHECK_EVERY_MS);
    this.restorePending();
  }

  // Puts pending intents back into their documents (a no-op when they are there), once the stored
  // copy is loaded (before that, a document that holds the intent would look as if it did not).
  restorePending(): void {
    for (const entry of this.pending()) {
      const doc = this.sync.desiredDoc(entry.signed.intent.host);
      if (!doc || !this.sync.desiredLoaded(entry.signed.intent.host)) continue;
      if (!readIntentEntries(doc).entries.some((e) => intentDigest(e.signed) === entry.digest))
        appendIntent(doc, entry.signed);
    }
  }

  async add(action: OutboxEntry['action'], signed: SignedIntent): Promise<OutboxEntry> {
    const entry: OutboxEntry = {
      digest: intentDigest(signed),
      server: this.sync.serverUrl,
      action,
      signed,
      signedAt: new Date().toISOString(),
      deliveredAt: null,
    };
    await idbPut('outbox', entry.digest, entry);
    this.entries.set(entry.digest, entry);
    const doc = this.sync.desiredDoc(signed.intent.host);
    if (!doc) throw new Error(`the page holds no document for ${signed.intent.host}`);
    appendIntent(doc, signed);
    this.changed();
    void this.confirmDeliveries();
    return entry;
  }

  pending(): OutboxEntry[] {
    return [...this.entries.values()].filter((e) => e.deliveredAt === null);
  }

  entry(digest: string): OutboxEntry | null {
    return this.entries.get(digest) ?? null;
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  // For each host with undelivered intents whose document is live: read the server's copy afresh.
  async confirmDeliveries(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    try {
      this.restorePending();
      const byHost = new Map<string, OutboxEntry[]>();
      for (const entry of this.pending()) {
        const host = entry.signed.intent.host;
        if (!this.sync.desiredLive(host)) continue;
        byHost.set(host, [...(byHost.get(host) ?? []), entry]);
      }
      for (const [host, entries] of byHost) {
        const reader = connectDocument(this.sync.serverUrl, desiredDocName(host), { identity: this.sync.key });
        reader.provider.awareness.setLocalState(null);
        try {
          await waitForSync(reader, CONFIRM_TIMEOUT_MS);
          const stored = new Set(readIntentEntries(reader.doc).entries.map((e) => intentDigest(e.signed)));
          for (const entry of entries) {
            if (!stored.has(entry.digest)) continue;
            const delivered = { ...entry, deliveredAt: new Date().toISOString() };
            await idbPut('outbox', entry.digest, delivered);
            this.entries.set(entry.digest, delivered);
            this.changed();
          }
        } catch {
          // Not confirmed this time; tried again at the next check.
        } finally {
          reader.close();
        }
      }
    } finally {
      this.checking = false;
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
  }
}
