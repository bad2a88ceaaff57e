import type { SigningKey } from '../shared/crypto/keys.js';
import { appendIntent, readIntentEntries } from '../shared/documents/desired.js';
import { POLICY_DOC, readPolicies } from '../shared/documents/fleet.js';
import { desiredDocName } from '../shared/documents/names.js';
import { connectDocument, waitForSync } from '../shared/node/connect.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import type { ActivationAction } from '../shared/schemas/primitives.js';
import { sleep } from '../shared/time/sleep.js';
import { signIntent } from '../shared/trust/sign-intent.js';
import { intentDigest } from '../shared/trust/verify-intent.js';
import { highestGeneration } from '../shared/views/intent-draft.js';

export interface IntentRequest {
  host: string;
  closure: string;
  action: ActivationAction;
  generation?: number;
  validForSeconds: number;
  allowLowerGeneration?: boolean;
  // Policy version to sign under; by default the highest one in fleet/policy (none in open mode).
  policyVersion?: number;
}

// The newest policy version the coordinator holds. Agents check the intent against their own
// walked chain, so trusting the coordinator here can at worst make the intent be refused.
export async function latestPolicyVersion(
  serverUrl: string,
  timeoutMs: number,
  identity: SigningKey,
): Promise<number | undefined> {
  const connection = connectDocument(serverUrl, POLICY_DOC, { identity });
  try {
    await waitForSync(connection, timeoutMs);
    const versions = readPolicies(connection.doc).map((p) => p.policy.version);
    return versions.length ? Math.max(...versions) : undefined;
  } finally {
    connection.close();
  }
}

export { highestGeneration } from '../shared/views/intent-draft.js';

// Signs an intent, appends it to the host's desired document, and returns only once the
// coordinator has it stored: a second, fresh connection must see it (the coordinator answers a
// sync request only after everything before it is in its fsync'ed log). The key that signs also
// proves who connects (coordinators with --org-root require it).
export async function submitIntent(
  serverUrl: string,
  request: IntentRequest,
  key: SigningKey,
  timeoutMs: number,
): Promise<{ signed: SignedIntent; digest: string; previousHighest: number }> {
  const name = desiredDocName(request.host);
  const writer = connectDocument(serverUrl, name, { identity: key });
  try {
    await waitForSync(writer, timeoutMs);
    const previousHighest = highestGeneration(writer.doc, request.host);
    const generation = request.generation ?? previousHighest + 1;
    if (generation <= previousHighest && !request.allowLowerGeneration) {
      throw new Error(
        `generation ${generation} is not above ${previousHighest}, the highest already issued for ${request.host}; agents refuse it as a rollback. Omit --generation to use ${previousHighest + 1}, or pass --force to record it anyway`,
      );
    }
    const policyVersion = request.policyVersion ?? (await latestPolicyVersion(serverUrl, timeoutMs, key));
    const now = Date.now();
    const signed = signIntent(
      {
        kind: 'intent',
        host: request.host,
        generation,
        closure: request.closure,
        action: request.action,
        issuedAt: new Date(now).toISOString(),
        expiresAt: new Date(now + request.validForSeconds * 1000).toISOString(),
        issuer: key.name,
        ...(policyVersion === undefined ? {} : { policyVersion }),
      },
      key,
    );
    const digest = intentDigest(signed);
    appendIntent(writer.doc, signed);
    await waitUntilStored(serverUrl, name, digest, timeoutMs, key);
    return { signed, digest, previousHighest };
  } finally {
    writer.close();
  }
}

// Returns once a fresh connection sees the envelope: the coordinator has it in its log.
export async function waitUntilStored(
  serverUrl: string,
  name: string,
  digest: string,
  timeoutMs: number,
  identity: SigningKey,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const reader = connectDocument(serverUrl, name, { identity });
    try {
      await waitForSync(reader, Math.max(1, deadline - Date.now()));
      if (readIntentEntries(reader.doc).entries.some((e) => intentDigest(e.signed) === digest)) return;
    } finally {
      reader.close();
    }
    await sleep(100);
  }
  throw new Error(
    `the coordinator at ${serverUrl} did not confirm storing the intent within ${timeoutMs} ms; run 'outpost status' to check before deploying again`,
  );
}
