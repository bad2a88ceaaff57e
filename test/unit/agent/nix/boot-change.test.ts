import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { rebootNeeded } from '../../../../agent/nix/boot-change.js';
import { removeDirectory, temporaryDirectory } from '../../../harness/processes.js';

const dir = temporaryDirectory('agent-units');
test.after(() => removeDirectory(dir));

test('reboot decision: a changed kernel or initrd needs a reboot; an unchanged one and no booted system do not', async () => {
  const root = join(dir, 'store-root');
  const system = async (name: string, kernel: string): Promise<string> => {
    const path = join(root, 'nix', 'store', name);
    await fs.mkdir(path, { recursive: true });
    await fs.symlink(`/nix/store/${'k'.repeat(32)}-linux-${kernel}/bzImage`, join(path, 'kernel'));
    await fs.symlink(`/nix/store/${'i'.repeat(32)}-initrd-${kernel}/initrd`, join(path, 'initrd'));
    return `/nix/store/${name}`;
  };
  const old = await system(`${'a'.repeat(32)}-nixos-system-old`, '6.1');
  const same = await system(`${'b'.repeat(32)}-nixos-system-same`, '6.1');
  const next = await system(`${'c'.repeat(32)}-nixos-system-next`, '6.6');
  const booted = join(dir, 'booted-system');
  await fs.symlink(join(root, old), booted);
  assert.equal(await rebootNeeded(root, same, booted), { reboot: false, why: 'kernel and initrd are unchanged' });
  const decision = await rebootNeeded(root, next, booted);
  assert.ok(decision.reboot);
  assert.match(decision.why, /^kernel, initrd changed from the booted system \/nix\/store\/a+-nixos-system-old$/);
  assert.is((await rebootNeeded(root, next, join(dir, 'nothing-booted'))).reboot, false);
});

test.run();
