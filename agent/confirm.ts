import type { ActivationAction } from '../shared/schemas/primitives.js';
import { currentProfileTarget, type ActivationConfig } from './activate.js';

export type ConfirmOutcome = { ok: true } | { ok: false; reason: string };

// After activation the host must show it really runs the target: for switch and boot the
// profile must point at the closure (a half-finished activation leaves it elsewhere).
export async function confirmActivation(closure: string, action: ActivationAction, config: ActivationConfig): Promise<ConfirmOutcome> {
  if (action === 'test') return { ok: true };
  const target = await currentProfileTarget(config);
  if (target !== closure) {
    return { ok: false, reason: `profile ${config.profile} points at ${target ?? 'nothing'}, expected ${closure}` };
  }
  return { ok: true };
}
