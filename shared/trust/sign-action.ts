import type { SigningKey } from '../crypto/keys.js';
import { signPayload } from '../crypto/signatures.js';
import { type ActionRequest, actionRequestSchema, type SignedAction } from '../schemas/action.js';

// The admin's side of a remote action (CLI, web editor with its own signer): validate, then sign
// the canonical form under the 'action' domain.
export function signAction(request: ActionRequest, key: SigningKey): SignedAction {
  const checked = actionRequestSchema.parse(request);
  return { request: checked, signatures: [signPayload('action', checked, key)] };
}
