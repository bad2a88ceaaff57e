import type { HostView } from '../../../shared/views/host-view.js';

// Host views rebuilt only for hosts whose documents changed, at most once per animation frame
// however many updates arrive; then the listeners (the views) render once. FleetSync feeds it
// from live documents; test/bench/web.ts from synthetic ones, to measure exactly this path.
export class ViewBatcher {
  private readonly views = new Map<string, HostView>();
  private readonly listeners = new Set<() => void>();
  private dirty = new Set<string>();
  private allDirty = false;
  private frame: number | null = null;
  private flushing = false;
  private again = false;
  private closed = false;
  version = 0;

  constructor(
    // The host's view from its documents now; null when the host is not followed.
    private readonly build: (host: string, now: number) => HostView | null,
    private readonly hosts: () => Iterable<string>,
    // Runs before the listeners at every flush (connection bookkeeping).
    private readonly beforeNotify: (now: number) => void = () => undefined,
    // Runs before the views are built (the page checks their signatures ahead with WebCrypto:
    // shared/crypto/verified-once.ts); updates arriving meanwhile wait for the next frame.
    private readonly prepare: (hosts: string[]) => Promise<void> = async () => undefined,
  ) {}

  invalidate(host: string): void {
    this.dirty.add(host);
    this.schedule();
  }

  invalidateAll(): void {
    this.allDirty = true;
    this.schedule();
  }

  schedule(): void {
    if (this.closed) return;
    if (this.flushing) {
      this.again = true;
      return;
    }
    if (this.frame !== null) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = null;
      void this.flush();
    });
  }

  async flush(): Promise<void> {
    const hosts = this.allDirty ? [...this.hosts()] : [...this.dirty];
    this.allDirty = false;
    this.dirty = new Set();
    this.flushing = true;
    try {
      await this.prepare(hosts);
    } catch {
      // The synchronous checks decide without the prepared verdicts.
    } finally {
      this.flushing = false;
    }
    if (this.closed) return;
    const now = Date.now();
    for (const host of hosts) {
      const view = this.build(host, now);
      if (view) this.views.set(host, view);
    }
    this.beforeNotify(now);
    this.version += 1;
    for (const listener of this.listeners) listener();
    if (this.again) {
      this.again = false;
      this.schedule();
    }
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  view(host: string): HostView | null {
    return this.views.get(host) ?? null;
  }

  // Sorted by host name, as the fleet table shows them.
  all(): HostView[] {
    return [...this.views.values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  }

  close(): void {
    this.closed = true;
    if (this.frame !== null) cancelAnimationFrame(this.frame);
  }
}
