import { render } from 'preact';
import { useCallback } from 'preact/hooks';
import * as Y from 'yjs';
import { type HostKeyAuthority, type HostView, hostViewFromDocuments } from '../../shared/admin/host-view.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendResult, writeCurrentStatus } from '../../shared/documents/status.js';
import type { BenchFixture, BenchResult } from '../../test/bench/web-fixture.js';
import { ViewBatcher } from '../src/sync/view-batcher.js';
import { FleetView } from '../src/ui/fleet.js';
import { useSubscription } from '../src/ui/hooks.js';

// test/bench/web.ts drives this page in Chromium: the fleet view over N synthetic hosts whose
// documents hold real signed intents, statuses and results (signed in Node), rebuilt by the
// page's own ViewBatcher with the CLI's verification and rendered by the real FleetView. Not part
// of the app build.
const nextFrame = (): Promise<void> =>
  new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(() => resolve())));

function Fleet({ batcher }: { batcher: ViewBatcher }) {
  const subscribe = useCallback((l: () => void) => batcher.subscribe(l), [batcher]);
  useSubscription(subscribe);
  return <FleetView views={batcher.all()} now={Date.now()} />;
}

function setUp(fixture: BenchFixture) {
  const docs = new Map<string, { desired: Y.Doc; status: Y.Doc }>();
  for (const h of fixture.hosts) {
    const desired = new Y.Doc();
    const status = new Y.Doc();
    appendIntent(desired, h.intent);
    writeCurrentStatus(status, h.status);
    appendResult(status, h.result);
    docs.set(h.host, { desired, status });
  }
  const authority: HostKeyAuthority = {
    chain: [fixture.policy],
    bindings: new Map(fixture.hosts.map((h) => [h.host, { host: h.host, hostKey: h.hostKey, via: 'approval' }])),
  };
  const build = (host: string, now: number): HostView | null => {
    const d = docs.get(host);
    return d
      ? hostViewFromDocuments(host, { desired: d.desired, status: d.status, awarenessStates: [], authority, now })
      : null;
  };
  return { docs, build };
}

// Mounts a fleet view in `container` and waits until every host's view is built and painted.
async function mount(
  container: HTMLElement,
  fixture: BenchFixture,
  build: ReturnType<typeof setUp>['build'],
): Promise<{ batcher: ViewBatcher; ms: number }> {
  const hosts = fixture.hosts.map((h) => h.host);
  const started = performance.now();
  const batcher = new ViewBatcher(build, () => hosts);
  render(<Fleet batcher={batcher} />, container);
  batcher.invalidateAll();
  await nextFrame();
  return { batcher, ms: performance.now() - started };
}

async function run(fixture: BenchFixture, rounds: number): Promise<BenchResult> {
  const windowed = document.getElementById('windowed')!;
  const live = setUp(fixture);
  const t0 = performance.now();
  for (const h of fixture.hosts) live.build(h.host, Date.now());
  const verifyAllMs = performance.now() - t0;

  // The page as shipped: only the rows in view are rendered.
  const first = await mount(windowed, fixture, live.build);
  const firstRenderRows = windowed.querySelectorAll('tr.row').length;

  // The peer: the same view with every row in view (a viewport as tall as the fleet).
  const tall = document.createElement('div');
  tall.className = 'workspace';
  tall.style.height = `${fixture.hosts.length * 30 + 200}px`;
  document.body.append(tall);
  const peer = await mount(tall, fixture, setUp(fixture).build);
  const peerRows = tall.querySelectorAll('tr.row').length;
  render(null, tall);
  tall.remove();

  // Live updates: k hosts' statuses change within one frame; the batcher rebuilds those k views.
  const liveBatcher = first.batcher;
  let next = 0;
  const updates: BenchResult['updates'] = [];
  for (const batch of [1, 10, 100]) {
    let total = 0;
    for (let round = 0; round < rounds; round++) {
      const started = performance.now();
      for (let i = 0; i < batch; i++) {
        const signed = fixture.updates[next++ % fixture.updates.length]!;
        writeCurrentStatus(live.docs.get(signed.status.host)!.status, signed);
        liveBatcher.invalidate(signed.status.host);
      }
      await nextFrame();
      total += performance.now() - started;
    }
    updates.push({ batch, rounds, msPerFrame: total / rounds, msPerUpdate: total / rounds / batch });
  }
  // The peer: one update that rebuilds every host's view (what a page without the batcher's
  // per-host invalidation would do).
  let peerTotal = 0;
  for (let round = 0; round < rounds; round++) {
    const started = performance.now();
    const signed = fixture.updates[next++ % fixture.updates.length]!;
    writeCurrentStatus(live.docs.get(signed.status.host)!.status, signed);
    liveBatcher.invalidateAll();
    await nextFrame();
    peerTotal += performance.now() - started;
  }
  return {
    hosts: fixture.hosts.length,
    verifyAllMs,
    firstRenderMs: first.ms,
    firstRenderRows,
    peerFirstRenderMs: peer.ms,
    peerRows,
    updates,
    peerUpdateMs: peerTotal / rounds,
  };
}

(window as unknown as { outpostBench: { run: typeof run } }).outpostBench = { run };
