import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { loadActionsFile } from '../../../agent/actions.js';
import { loadAgentState } from '../../../agent/pipeline/state.js';
import { loadStateFile } from '../../../agent/state-file.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// One reader for the agent's JSON state files: missing → the default, anything else wrong → an
// error naming the file and the fix, never a silent default.
const dir = temporaryDirectory('state-file');
test.after(() => removeDirectory(dir));

const spec = {
  schema: z.object({ count: z.number().int() }),
  missing: () => ({ count: 0 }),
  fix: 'move it aside to start over',
};

const failure = async (load: () => Promise<unknown>): Promise<string> => {
  try {
    await load();
  } catch (error) {
    return (error as Error).message;
  }
  assert.unreachable('a damaged file must not load');
  return '';
};

test('a missing file is the default; a valid one is parsed', async () => {
  const path = join(dir, 'plain.json');
  assert.equal(await loadStateFile(path, spec), { count: 0 });
  await fs.writeFile(path, '{"count": 3}');
  assert.equal(await loadStateFile(path, spec), { count: 3 });
});

test('bad JSON, a schema mismatch or an unreadable path each name the file, and the fix where there is one', async () => {
  const path = join(dir, 'bad.json');
  await fs.writeFile(path, '{"count": ');
  assert.is(await failure(() => loadStateFile(path, spec)), `${path} is not valid JSON; move it aside to start over`);
  await fs.writeFile(path, '{"count": "x"}');
  const invalid = await failure(() => loadStateFile(path, spec));
  assert.ok(invalid.startsWith(`${path} is invalid (count: `), invalid);
  assert.ok(invalid.endsWith('; move it aside to start over'), invalid);
  // A directory where the file should be: not ENOENT, so no default either.
  const directory = join(dir, 'a-directory.json');
  await fs.mkdir(directory);
  assert.match(await failure(() => loadStateFile(directory, spec)), `cannot read ${directory}`);
});

test('the agent state and the actions file use it, each with its own fix', async () => {
  const stateDir = join(dir, 'agent');
  await fs.mkdir(stateDir);
  assert.is((await loadAgentState(stateDir)).floorUnverified, true, 'no state: a fresh one, floor to rebuild');
  assert.is((await loadActionsFile(stateDir)).resultSeq, 0);
  await fs.writeFile(join(stateDir, 'state.json'), 'not json');
  await fs.writeFile(join(stateDir, 'actions.json'), '{"version": 2}');
  assert.match(
    await failure(() => loadAgentState(stateDir)),
    /state\.json is not valid JSON; move it aside to start fresh/,
  );
  const actions = await failure(() => loadActionsFile(stateDir));
  assert.match(actions, /actions\.json is invalid \(version: .*\); it records which remote actions ran/);
});

test.run();
