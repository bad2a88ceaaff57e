import { Gauge, type Registry } from 'prom-client';
import { mirroredCounter } from '../coordinator/metrics.js';
import type { Bridge } from './bridge.js';
import type { CacheMirror } from './cache-mirror.js';
import type { UpstreamLink } from './upstream.js';

// What a relay adds to the coordinator's /metrics (coordinator/metrics.ts): its uplink, the
// documents waiting to pass it, and the binary-cache mirror. Read at scrape time from the
// counters each part already keeps for /healthz; the link may not exist yet at registration.
export interface RelayMetricsSources {
  upstream(): UpstreamLink | null;
  bridge(): Bridge | null;
  cache: CacheMirror | null;
}

export function registerRelayMetrics(registry: Registry, sources: RelayMetricsSources): void {
  new Gauge({
    name: 'outpost_relay_uplink_up',
    help: '1 while the link to an upstream (coordinator or parent relay) is connected, else 0',
    registers: [registry],
    collect() {
      this.set(sources.upstream()?.connectedUrl() ? 1 : 0);
    },
  });
  new Gauge({
    name: 'outpost_relay_uplink_channels',
    help: 'Documents open on the uplink now',
    registers: [registry],
    collect() {
      this.set(sources.upstream()?.stats().channels ?? 0);
    },
  });
  mirroredCounter(
    registry,
    { name: 'outpost_relay_uplink_connects_total', help: 'Times the uplink connected (reconnects included)' },
    () => sources.upstream()?.stats().connects ?? 0,
  );
  mirroredCounter(
    registry,
    {
      name: 'outpost_relay_uplink_bytes_total',
      help: 'Bytes of frames on the uplink, by direction',
      labelNames: ['direction'],
    },
    () => {
      const stats = sources.upstream()?.stats();
      return [
        [{ direction: 'in' }, stats?.bytesIn ?? 0],
        [{ direction: 'out' }, stats?.bytesOut ?? 0],
      ];
    },
  );
  new Gauge({
    name: 'outpost_relay_documents',
    help: 'Documents the bridge tracks, by state: bridged (held here), dirty (changes the upstream has not confirmed), queued and passing (waiting for or in a catch-up sync)',
    labelNames: ['state'],
    registers: [registry],
    collect() {
      const stats = sources.bridge()?.stats() ?? { bridged: 0, dirty: 0, queued: 0, passing: 0 };
      for (const [state, count] of Object.entries(stats)) this.set({ state }, count);
    },
  });
  const cache = sources.cache;
  if (!cache) return;
  mirroredCounter(
    registry,
    {
      name: 'outpost_cache_mirror_requests_total',
      help: 'Binary-cache files asked of the mirror: hit (served from disk) or miss (fetched from an upstream cache)',
      labelNames: ['result'],
    },
    () => {
      const stats = cache.stats();
      return [
        [{ result: 'hit' }, stats.hits],
        [{ result: 'miss' }, stats.fetches],
      ];
    },
  );
  mirroredCounter(
    registry,
    { name: 'outpost_cache_mirror_fetched_bytes_total', help: 'Bytes fetched from upstream caches' },
    () => cache.stats().fetchedBytes,
  );
  new Gauge({
    name: 'outpost_cache_mirror_stored',
    help: 'What the mirror holds on disk: files and bytes',
    labelNames: ['unit'],
    registers: [registry],
    collect() {
      const stats = cache.stats();
      this.set({ unit: 'files' }, stats.files);
      this.set({ unit: 'bytes' }, stats.bytes);
    },
  });
}
