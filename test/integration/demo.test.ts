import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';

// What `npm start` runs, end to end, in its non-interactive form.
test('the demo fleet builds, deploys two generations and prints status and next steps', async () => {
  const script = fileURLToPath(new URL('../demo/run-demo.js', import.meta.url));
  const dir = temporaryDirectory('demo');
  const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, [script, '--once'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, OUTPOST_DEMO_DIR: dir },
    });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 240_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
  removeDirectory(dir);
  assert.is(code, 0, output);
  assert.match(output, /clinic-1\s+2 \S+\s+2 \S+\s+applied\s+yes/);
  assert.match(output, /clinic-2\s+1 \S+\s+1 \S+\s+applied\s+yes/);
  assert.match(output, /Try next/);
  assert.match(output, /The web editor: open http:\/\/127\.0\.0\.1:\d+\/ in a browser/);
});

test.run();
