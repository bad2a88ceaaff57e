import type { ActivationAction } from '../../shared/schemas/primitives.js';
import { currentProfileTarget, setsProfile } from './activate.js';

export type ConfirmOutcome = { ok: true } | { ok: false; reason: string };

// After activation the host must show it really runs the target: for switch and boot the
// profile must point at the closure (a half-finished activation leaves it elsewhere).
export async function confirmProfile(
  closure: string,
  action: ActivationAction,
  profile: string,
): Promise<ConfirmOutcome> {
  if (!setsProfile(action)) return { ok: true };
  const target = await currentProfileTarget({ profile });
  if (target !== closure) {
    return { ok: false, reason: `profile ${profile} points at ${target ?? 'nothing'}, expected ${closure}` };
  }
  return { ok: true };
}
