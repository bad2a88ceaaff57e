import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import type { ActivationAction } from '../shared/schemas/primitives.js';
import { storeArgs } from './fetch.js';
import { describeFailure, runCommand } from './run-command.js';

export interface ActivationConfig {
  store?: string;
  profile: string;
  timeoutMs: number;
  host: string;
}

export type ActivationOutcome = { ok: true; outputTail: string } | { ok: false; reason: string; outputTail: string };

// With a separate store root (--store DIR) the store paths live under DIR on disk.
export function onDisk(store: string | undefined, storePath: string): string {
  return store ? `${store.replace(/\/+$/, '')}${storePath}` : storePath;
}

export async function setSystemProfile(closure: string, config: ActivationConfig): Promise<ActivationOutcome> {
  await fs.mkdir(dirname(config.profile), { recursive: true });
  const outcome = await runCommand('nix-env', [...storeArgs(config.store), '--profile', config.profile, '--set', closure], { timeoutMs: 120_000 });
  if (outcome.code === 0) return { ok: true, outputTail: outcome.outputTail };
  return { ok: false, reason: describeFailure(`setting profile ${config.profile}`, outcome, 120_000), outputTail: outcome.outputTail };
}

export async function currentProfileTarget(config: ActivationConfig): Promise<string | null> {
  try {
    const link = await fs.readlink(config.profile);
    const generationLink = link.startsWith('/') ? link : `${dirname(config.profile)}/${link}`;
    return await fs.readlink(generationLink);
  } catch {
    return null;
  }
}

// Runs <closure>/bin/switch-to-configuration <action>, as nixos-rebuild does after setting the profile.
export async function switchToConfiguration(closure: string, action: ActivationAction, config: ActivationConfig): Promise<ActivationOutcome> {
  const script = `${onDisk(config.store, closure)}/bin/switch-to-configuration`;
  try {
    await fs.access(script);
  } catch {
    return { ok: false, reason: `${closure} has no bin/switch-to-configuration: it is not a NixOS system closure`, outputTail: '' };
  }
  const env = { ...process.env, OUTPOST_HOST: config.host, OUTPOST_CLOSURE: closure, OUTPOST_STORE_ROOT: config.store ?? '' };
  const outcome = await runCommand(script, [action], { timeoutMs: config.timeoutMs, env });
  if (outcome.code === 0) return { ok: true, outputTail: outcome.outputTail };
  return { ok: false, reason: describeFailure(`switch-to-configuration ${action}`, outcome, config.timeoutMs), outputTail: outcome.outputTail };
}
