import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import type { ActivationAction } from '../../shared/schemas/primitives.js';
import { describeFailure, runCommand } from '../nix/run-command.js';
import { storeArgs } from './fetch.js';

// The two kinds of system profile the agent can manage:
//   nixos           <closure>/bin/switch-to-configuration switch|boot|test (NixOS system profile)
//   system-manager  <closure>/bin/activate (numtide/system-manager on other distributions: no boot
//                   entries, no kernel, so `boot` is refused and `test` activates without setting
//                   the profile)
export type ProfileType = 'nixos' | 'system-manager';

export interface ProfileConfig {
  store?: string;
  profile: string;
  profileType: ProfileType;
}

export type ActivationOutcome = { ok: true; outputTail: string } | { ok: false; reason: string; outputTail: string };

// With a separate store root (--store DIR) the store paths live under DIR on disk.
export function onDisk(store: string | undefined, storePath: string): string {
  return store ? `${store.replace(/\/+$/, '')}${storePath}` : storePath;
}

export async function setSystemProfile(closure: string, config: ProfileConfig): Promise<ActivationOutcome> {
  await fs.mkdir(dirname(config.profile), { recursive: true });
  const outcome = await runCommand(
    'nix-env',
    [...storeArgs(config.store), '--profile', config.profile, '--set', closure],
    { timeoutMs: 120_000 },
  );
  if (outcome.code === 0) return { ok: true, outputTail: outcome.outputTail };
  return {
    ok: false,
    reason: describeFailure(`setting profile ${config.profile}`, outcome, 120_000),
    outputTail: outcome.outputTail,
  };
}

export async function currentProfileTarget(config: Pick<ProfileConfig, 'profile'>): Promise<string | null> {
  try {
    const link = await fs.readlink(config.profile);
    const generationLink = link.startsWith('/') ? link : `${dirname(config.profile)}/${link}`;
    return await fs.readlink(generationLink);
  } catch {
    return null;
  }
}

// Whether this action changes the profile (and so the boot default); `test` leaves it alone.
export function setsProfile(action: ActivationAction): boolean {
  return action !== 'test';
}

// The command that activates `closure` with `action`, or why this closure cannot be activated so.
export async function activationCommand(
  closure: string,
  action: ActivationAction,
  config: ProfileConfig,
): Promise<{ ok: true; command: string; args: string[] } | { ok: false; reason: string }> {
  const root = onDisk(config.store, closure);
  if (config.profileType === 'system-manager') {
    if (action === 'boot')
      return {
        ok: false,
        reason: 'a system-manager profile has no boot entries: deploy it with action switch or test',
      };
    const script = `${root}/bin/activate`;
    if (!(await isExecutable(script)))
      return {
        ok: false,
        reason: `${closure} has no bin/activate: it is not a system-manager closure (--profile-type system-manager)`,
      };
    return { ok: true, command: script, args: [] };
  }
  const script = `${root}/bin/switch-to-configuration`;
  if (!(await isExecutable(script)))
    return {
      ok: false,
      reason: `${closure} has no bin/switch-to-configuration: it is not a NixOS system closure (for system-manager closures use --profile-type system-manager)`,
    };
  return { ok: true, command: script, args: [action] };
}

async function isExecutable(path: string): Promise<boolean> {
  try {
    await fs.access(path, fs.constants.X_OK);
    return true;
  } catch {
    return false;
  }
}
