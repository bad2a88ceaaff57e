import { render } from 'preact';
import { useCallback } from 'preact/hooks';
import * as Y from 'yjs';
import { preverifySignatures } from '../../shared/crypto/verified-once.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendResult, writeCurrentStatus } from '../../shared/documents/status.js';
import {
  type HostKeyAuthority,
  type HostView,
  hostSignatureChecks,
  hostViewFromDocuments,
} from '../../shared/views/host-view.js';
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

// Resolves once the batcher has flushed (its views rebuilt) and the result is painted.
function whenFlushed(batcher: ViewBatcher): Promise<void> {
  return new Promise((resolve) => {
    const stop = batcher.subscribe(() => {
      stop();
      void nextFrame().then(resolve);
    });
  });
}

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
  const prepare = async (hosts: string[]): Promise<void> => {
    await preverifySignatures(
      hosts.flatMap((host) => {
        const d = docs.get(host);
        return d ? hostSignatureChecks(host, d.desired, d.status) : [];
      }),
    );
  };
  return { docs, build, prepare };
}

// Mounts a fleet view in `container` and waits until every host's view is built and painted.
async function mount(
  container: HTMLElement,
  fixture: BenchFixture,
  setup: ReturnType<typeof setUp>,
): Promise<{ batcher: ViewBatcher; ms: number }> {
  const hosts = fixture.hosts.map((h) => h.host);
  const started = performance.now();
  const batcher = new ViewBatcher(setup.build, () => hosts, undefined, setup.prepare);
  render(<Fleet batcher={batcher} />, container);
  batcher.invalidateAll();
  await whenFlushed(batcher);
  return { batcher, ms: performance.now() - started };
}

async function run(fixture: BenchFixture, rounds: number): Promise<BenchResult> {
  const windowed = document.getElementById('windowed')!;
  // Time to the first full render, cold: every signature checked (natively ahead, as the page
  // does), every host's view built, the visible rows painted.
  const live = setUp(fixture);
  const first = await mount(windowed, fixture, live);
  const firstRenderRows = windowed.querySelectorAll('tr.row').length;
  console.log(`first render ${first.ms.toFixed(0)} ms`);

  // The same again with the verdicts known: what building the views and rendering cost alone,
  // windowed (as shipped) against the peer with every row in view (a viewport as tall as the fleet).
  const again = document.createElement('div');
  again.className = 'workspace';
  document.body.append(again);
  const warm = await mount(again, fixture, setUp(fixture));
  render(null, again);
  again.remove();
  const tall = document.createElement('div');
  tall.className = 'workspace';
  tall.style.height = `${fixture.hosts.length * 30 + 200}px`;
  document.body.append(tall);
  const peer = await mount(tall, fixture, setUp(fixture));
  const peerRows = tall.querySelectorAll('tr.row').length;
  render(null, tall);
  tall.remove();
  console.log(`warm render ${warm.ms.toFixed(0)} ms, every row ${peer.ms.toFixed(0)} ms`);

  // Live updates: k hosts' statuses change within one frame; the batcher rebuilds those k views
  // (each new status signature checked natively first).
  const liveBatcher = first.batcher;
  const docsOf = (host: string): Y.Doc => live.docs.get(host)!.status;
  let next = 0;
  // One update first, unmeasured: the first rebuild after mounting compiles code paths.
  const warmUp = fixture.updates[next++]!;
  writeCurrentStatus(docsOf(warmUp.status.host), warmUp);
  liveBatcher.invalidate(warmUp.status.host);
  await whenFlushed(liveBatcher);
  const updates: BenchResult['updates'] = [];
  for (const batch of [1, 10, 100]) {
    let total = 0;
    for (let round = 0; round < rounds; round++) {
      const started = performance.now();
      for (let i = 0; i < batch; i++) {
        const signed = fixture.updates[next++ % fixture.updates.length]!;
        writeCurrentStatus(docsOf(signed.status.host), signed);
        liveBatcher.invalidate(signed.status.host);
      }
      await whenFlushed(liveBatcher);
      total += performance.now() - started;
    }
    updates.push({ batch, rounds, msPerFrame: total / rounds, msPerUpdate: total / rounds / batch });
  }
  // The peer: one update that rebuilds every host's view (a page without per-host invalidation).
  let peerTotal = 0;
  for (let round = 0; round < rounds; round++) {
    const started = performance.now();
    const signed = fixture.updates[next++ % fixture.updates.length]!;
    writeCurrentStatus(docsOf(signed.status.host), signed);
    liveBatcher.invalidateAll();
    await whenFlushed(liveBatcher);
    peerTotal += performance.now() - started;
  }
  return {
    hosts: fixture.hosts.length,
    firstRenderMs: first.ms,
    firstRenderRows,
    warmRenderMs: warm.ms,
    peerFirstRenderMs: peer.ms,
    peerRows,
    updates,
    peerUpdateMs: peerTotal / rounds,
  };
}

(window as unknown as { outpostBench: { run: typeof run } }).outpostBench = { run };
