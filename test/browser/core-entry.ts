// What the web editor and an auditor's browser run from shared/: bundled for platform browser by
// test/unit/shared/browser-bundle.test.ts and called there inside a context with Web APIs only.
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { parseCacheKey, parseNarinfo, verifyNarinfo } from '../../shared/nix/narinfo.js';
import type { Intent, SignedIntent } from '../../shared/schemas/intent.js';
import { type Policy, policySchema, type SignedPolicy } from '../../shared/schemas/policy.js';
import { walkPolicyChain } from '../../shared/trust/policy-chain.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { verifyIntent } from '../../shared/trust/verify-intent.js';

export function newKey(name: string): SigningKey {
  return generateSigningKey(name);
}

export function signAndVerify(message: string): { valid: boolean; tamperedValid: boolean } {
  const key = generateSigningKey('browser');
  const signature = signPayload('status', { message }, key);
  return {
    valid: verifyPayloadSignature('status', { message }, signature),
    tamperedValid: verifyPayloadSignature('status', { message: `${message}!` }, signature),
  };
}

export function signIntentInBrowser(intent: Intent, key: SigningKey): SignedIntent {
  return signIntent(intent, key);
}

export function verifyIntentWithAdminKeys(signed: SignedIntent, host: string, adminKeys: string[], now: number) {
  return verifyIntent(signed, { host, trustedAdminKeys: new Set(adminKeys), now });
}

export function verifyIntentUnderSignedPolicies(
  signed: SignedIntent,
  host: string,
  rootKeys: string[],
  policies: SignedPolicy[],
  now: number,
) {
  const walk = walkPolicyChain([], new Set(rootKeys), policies);
  return {
    chainVersions: walk.chain.map((p: Policy) => p.version),
    verdict: verifyIntentUnderPolicy(signed, { host, chain: walk.chain, now }),
  };
}

export function checkPolicySchema(policy: unknown): boolean {
  return policySchema.safeParse(policy).success;
}

export function verifyNarinfoText(text: string, trustedKey: string) {
  return verifyNarinfo(parseNarinfo(text, 'browser'), [parseCacheKey(trustedKey)]);
}
