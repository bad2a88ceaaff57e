import type { SigningKey } from '../shared/crypto/keys.js';
import { appendIntent, readIntentEntries } from '../shared/documents/desired.js';
import { POLICY_DOC, readPolicies } from '../shared/documents/fleet.js';
import { desiredDocName } from '../shared/documents/names.js';
import { connectDocument, waitForSync } from '../shared/node/connect.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import type { Policy } from '../shared/schemas/policy.js';
import type { ActivationAction } from '../shared/schemas/primitives.js';
import { sleep } from '../shared/time/sleep.js';
import { signIntent } from '../shared/trust/sign-intent.js';
import { intentDigest } from '../shared/trust/verify-intent.js';
import {
  chooseDeployGeneration,
  overRolloutWarning,
  type PendingPlacement,
  pendingPlacements,
} from '../shared/views/deploy-generation.js';
import { highestGeneration } from '../shared/views/intent-draft.js';
import { type RolloutDocument, readRolloutDocuments } from './rollout-remote.js';

export interface IntentRequest {
  host: string;
  closure: string;
  action: ActivationAction;
  generation?: number;
  validForSeconds: number;
  allowLowerGeneration?: boolean;
  // Policy version to sign under; by default the highest one in fleet/policy (none in open mode).
  policyVersion?: number;
  // The rollouts whose pending placements the generation must stay clear of, when the caller
  // read them already (abort --rollback, for many hosts); else read here.
  rollouts?: readonly RolloutDocument[];
  // The policy chain the rollouts are judged under (walked from --org-root); else the
  // coordinator's policies, unverified: they only decide whether a rollout still delivers.
  chain?: Policy[];
}

// The generation asked for collides with what is issued (a rollout still to come, or the desired
// document): nothing was signed; the message says what to do.
export class GenerationRefused extends Error {}

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

// The coordinator's policies in version order: unverified, enough to tell whether a rollout was
// aborted or completed (it can hide a rollout from this reader anyway).
async function coordinatorPolicies(serverUrl: string, timeoutMs: number, identity: SigningKey): Promise<Policy[]> {
  const connection = connectDocument(serverUrl, POLICY_DOC, { identity });
  try {
    await waitForSync(connection, timeoutMs);
    return readPolicies(connection.doc)
      .map((p) => p.policy)
      .sort((a, b) => a.version - b.version);
  } finally {
    connection.close();
  }
}

// Signs an intent, appends it to the host's desired document, and returns only once the
// coordinator has it stored: a second, fresh connection must see it (the coordinator answers a
// sync request only after everything before it is in its fsync'ed log). The key that signs also
// proves who connects (coordinators with --org-root require it).
export async function submitIntent(
  serverUrl: string,
  request: IntentRequest,
  key: SigningKey,
  timeoutMs: number,
): Promise<{ signed: SignedIntent; digest: string; previousHighest: number; overRollouts: PendingPlacement[] }> {
  const name = desiredDocName(request.host);
  const writer = connectDocument(serverUrl, name, { identity: key });
  try {
    await waitForSync(writer, timeoutMs);
    const desiredHighest = highestGeneration(writer.doc, request.host);
    const rollouts = request.rollouts ?? (await readRolloutDocuments(serverUrl, key, timeoutMs));
    const chain = request.chain ?? (rollouts.length ? await coordinatorPolicies(serverUrl, timeoutMs, key) : []);
    const pending = pendingPlacements(request.host, desiredHighest, rollouts, chain, Date.now());
    const choice = chooseDeployGeneration({
      host: request.host,
      desiredHighest,
      pending,
      ...(request.generation === undefined ? {} : { requested: request.generation }),
      force: request.allowLowerGeneration ?? false,
      canNameGeneration: true,
    });
    if (!choice.ok) throw new GenerationRefused(choice.reason);
    const { generation, previousHighest, overRollouts } = choice;
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
    return { signed, digest, previousHighest, overRollouts };
  } finally {
    writer.close();
  }
}

// For `outpost deploy` and `rollback`: a refused generation is said with the command's name (exit
// 1), and deploying over a rollout is said before anything else.
export async function refusedOrSubmitted(
  command: string,
  submit: () => ReturnType<typeof submitIntent>,
): Promise<Awaited<ReturnType<typeof submitIntent>> | null> {
  try {
    const submitted = await submit();
    for (const line of overRolloutWarning(
      submitted.signed.intent.host,
      submitted.signed.intent.generation,
      submitted.overRollouts,
    ))
      console.error(`outpost ${command}: warning: ${line}`);
    return submitted;
  } catch (error) {
    if (!(error instanceof GenerationRefused)) throw error;
    console.error(`outpost ${command}: ${error.message}`);
    return null;
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
