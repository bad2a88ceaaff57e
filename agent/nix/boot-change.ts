import { promises as fs } from 'node:fs';
import { onDisk } from '../pipeline/activate.js';

// Whether a NixOS closure can be switched to live, or needs a reboot: as comin and
// system.autoUpgrade decide it, by comparing the kernel, initrd and kernel modules of the new
// system with those of the system the machine booted (/run/booted-system).
const BOOT_ENTRIES = ['kernel', 'initrd', 'kernel-modules'] as const;

async function linkTarget(path: string): Promise<string | null> {
  try {
    return await fs.readlink(path);
  } catch {
    return null;
  }
}

// The store path a booted-system link names, whether it points into the system store or into a
// separate store root (tests): /nix/store/<hash>-name either way.
export async function bootedClosure(bootedSystem: string): Promise<string | null> {
  const target = await linkTarget(bootedSystem);
  if (!target) return null;
  const match = /\/nix\/store\/[0-9a-z]{32}-[^/]+$/.exec(target);
  return match ? match[0] : null;
}

export type BootDecision = { reboot: false; why: string } | { reboot: true; why: string };

export async function rebootNeeded(
  store: string | undefined,
  closure: string,
  bootedSystem: string,
): Promise<BootDecision> {
  const booted = await bootedClosure(bootedSystem);
  if (!booted)
    return { reboot: false, why: `${bootedSystem} does not exist: no booted NixOS system to compare the kernel with` };
  const changed: string[] = [];
  for (const entry of BOOT_ENTRIES) {
    const next = await linkTarget(`${onDisk(store, closure)}/${entry}`);
    const current = await linkTarget(`${bootedSystem}/${entry}`);
    if (next !== null && next !== current) changed.push(entry);
  }
  if (changed.length === 0) return { reboot: false, why: 'kernel and initrd are unchanged' };
  return { reboot: true, why: `${changed.join(', ')} changed from the booted system ${booted}` };
}
