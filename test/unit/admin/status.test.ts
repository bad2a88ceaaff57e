import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../../admin/fleet-view.js';
import { renderStatusTable } from '../../../admin/status.js';

test('outpost status: a progress bar on a terminal, plain numbers in a pipe, and why a host waits', () => {
  const view = {
    host: 'clinic-1',
    found: true,
    unreadable: null,
    desired: null,
    applied: null,
    phase: 'downloading',
    target: { generation: 2, closure: '/nix/store/x' },
    hostKeys: 'unverified',
    enrolledKey: null,
    statusSignatureValid: true,
    rejectedStatus: null,
    rejectedResults: { count: 0, firstReason: null },
    hostKey: null,
    online: true,
    lastSeen: null,
    lastResult: null,
    results: [],
    window: null,
    trust: null,
    progress: {
      pathsDone: 3,
      pathsTotal: 7,
      bytesDone: 512 * 1024,
      bytesTotal: 1024 * 1024,
      bytesPerSecond: 2048,
      startedAt: new Date(0).toISOString(),
      live: true,
    },
  } as HostView;
  const tty = renderStatusTable([view], { progressBars: true });
  assert.match(tty, /downloading 50%/);
  assert.match(tty, /\n {2}\[##########----------\] 50% 3\/7 paths, 512\.0 KiB\/1\.0 MiB, 2\.0 KiB\/s/);
  assert.not.match(renderStatusTable([view]), /\[#/);
  const waiting = renderStatusTable([
    {
      ...view,
      phase: 'waiting-for-window',
      progress: null,
      window: { waitingFor: 'reboot', windows: '01:00-05:00 (UTC)', nextStart: '2026-11-24T01:00:00.000Z' },
    },
  ]);
  assert.match(waiting, /waiting-for-window \(reboot; next 2026-11-24T01:00:00\.000Z\)/);

  // A freeze says which of its two causes holds: they have different fixes.
  const frozen = (trust: NonNullable<HostView['trust']>) =>
    renderStatusTable([{ ...view, phase: 'idle', progress: null, trust }]);
  assert.match(
    frozen({ mode: 'policy', policyVersion: 1, frozen: true, lastTimestampAt: null }),
    /idle \(FROZEN: no fresh timestamp since ever\)/,
  );
  const behind = frozen({
    mode: 'policy',
    policyVersion: 1,
    frozen: true,
    lastTimestampAt: '2026-12-02T06:00:00.000Z',
    waitingForPolicyVersion: 2,
  });
  assert.match(behind, /idle \(FROZEN: waiting for policy v2, which a signed timestamp names\)/);
  assert.not.match(behind, /no fresh timestamp/);
});

test.run();
