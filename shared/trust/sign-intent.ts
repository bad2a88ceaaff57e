import type { SigningKey } from '../crypto/keys.js';
import { signPayload } from '../crypto/signatures.js';
import { type Intent, intentSchema, type SignedIntent } from '../schemas/intent.js';

// The admin's side of an intent (CLI, CI, web editor): validate, then sign the canonical form.
export function signIntent(intent: Intent, key: SigningKey): SignedIntent {
  const checked = intentSchema.parse(intent);
  return { intent: checked, signatures: [signPayload('intent', checked, key)] };
}
