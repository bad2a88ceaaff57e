import { suite } from 'uvu';
import { openUpdateLog } from '../../../coordinator/update-log.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';
import { defineUpdateLogConformance } from '../../harness/update-log-conformance.js';

// The LevelDB update log against the suite every backend passes.
const test = suite('update log conformance: LevelDB');

defineUpdateLogConformance(test, {
  shared: false,
  async fresh() {
    const dir = temporaryDirectory('log-conformance');
    return { open: () => openUpdateLog(dir), cleanup: async () => removeDirectory(dir) };
  },
});

test.run();
