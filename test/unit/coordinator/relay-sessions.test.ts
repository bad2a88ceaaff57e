import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createDocumentHost } from '../../../coordinator/hosted-documents.js';
import { createRefusals, DEFAULT_LIMITS, WriteLimits } from '../../../coordinator/limits.js';
import { PresenceTable } from '../../../coordinator/presence.js';
import { createMuxServer } from '../../../coordinator/relay-sessions.js';
import { createTrustState } from '../../../coordinator/trust-state.js';
import { openUpdateLog, type UpdateLog } from '../../../coordinator/update-log.js';
import { silentLogger } from '../../../shared/log.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The relay endpoint's hold on the log: its change feed follows the log (coordinator/followed-changes.ts)
// until the server closes. Tests start and stop many coordinators in one process, and a closed one
// must not keep following.

// The log as the mux server sees it, counting the deliveries it follows and has not stopped.
function countingFollows(log: UpdateLog): { log: UpdateLog; following: () => number } {
  let following = 0;
  return {
    log: {
      ...log,
      follow(deliver, missed) {
        following += 1;
        const stop = log.follow(deliver, missed);
        return () => {
          following -= 1;
          stop();
        };
      },
    },
    following: () => following,
  };
}

test('a mux server follows the log until it closes', async () => {
  const dir = temporaryDirectory('relay-sessions');
  const log = await openUpdateLog(dir);
  const host = createDocumentHost(log, silentLogger, 60_000);
  try {
    const trust = await createTrustState(host, [], silentLogger);
    const refusals = createRefusals();
    const counted = countingFollows(log);
    const mux = createMuxServer(host, counted.log, trust, new PresenceTable(), silentLogger, () => true, {
      limits: DEFAULT_LIMITS,
      refusals,
      writeLimits: new WriteLimits(DEFAULT_LIMITS, refusals, silentLogger),
    });
    assert.is(counted.following(), 1, 'the change feed follows the log');
    mux.close();
    assert.is(counted.following(), 0, 'closed: the log is no longer followed');
  } finally {
    await host.closeAll();
    await log.close();
    removeDirectory(dir);
  }
});

test.run();
