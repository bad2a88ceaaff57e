import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option, UsageError, urlSchema } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import {
  ENROLLMENT_DOC,
  POLICY_DOC,
  readEnrollments,
  readEnrollRequests,
  readPolicies,
} from '../shared/documents/fleet.js';
import { readKeyFile } from '../shared/node/key-file.js';
import type { Policy } from '../shared/schemas/policy.js';
import {
  activationActionSchema,
  generationSchema,
  hostIdSchema,
  storePathSchema,
} from '../shared/schemas/primitives.js';
import { signatureThreshold } from '../shared/trust/capabilities.js';
import { enrollmentState, type HostBinding } from '../shared/trust/enrollment.js';
import { checkClosureInCache } from './cache-check.js';
import { adminKeyOption, coordinatorOption, reachingCoordinator, type WithCoordinator } from './common-options.js';
import { hostResultBaseline, type WaitOutcome, waitForHostOutcome } from './deploy-wait.js';
import { type HostKeyAuthority, readHostKeyAuthority } from './fleet-view.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';
import { readDocuments } from './policy-remote.js';
import { refusedOrSubmitted, submitIntent } from './submit-intent.js';

export const deployCommand = defineCommand({
  name: 'deploy',
  summary: 'sign an intent "host H runs closure C as generation G" and submit it',
  usage: 'outpost deploy --coordinator URL --key FILE --host ID --closure /nix/store/… [options]',
  options: z.object({
    coordinator: coordinatorOption,
    key: adminKeyOption(),
    host: option(hostIdSchema, { placeholder: 'ID', description: 'host to deploy to' }),
    closure: option(storePathSchema, {
      placeholder: 'PATH',
      description: 'system closure already pushed to the signed binary cache',
    }),
    generation: option(z.coerce.number().pipe(generationSchema).optional(), {
      placeholder: 'N',
      description: 'generation number',
      defaultText: 'one above the highest issued',
    }),
    action: option(activationActionSchema.default('switch'), {
      placeholder: 'ACTION',
      description: 'switch, boot or test',
    }),
    // Long enough for a site offline for 60 days: a host in contact still refuses an intent that
    // reaches it later than its --delivery-window (docs/trust.md, "Expiry and hosts offline").
    expires: option(durationSchema.prefault('90d'), {
      placeholder: 'DURATION',
      description:
        'how long the intent may still be applied, by a host offline meanwhile too (90m, 12h, 7d, 13w); hosts in contact take it only within their --delivery-window',
    }),
    timeout: option(durationSchema.prefault('30s'), {
      placeholder: 'DURATION',
      description: 'how long to wait for the coordinator',
      common: 'timeout',
    }),
    policyVersion: option(z.coerce.number().int().positive().optional(), {
      placeholder: 'N',
      description: 'fleet policy version to sign under',
      defaultText: 'the newest in fleet/policy',
    }),
    force: option(z.boolean().default(false), {
      description: 'record a generation not above the highest issued (agents will refuse it)',
    }),
    newHost: option(z.boolean().default(false), {
      description:
        'deploy to a host the enrollment records do not know yet (without it, an unknown host id is refused as a likely typo)',
    }),
    orgRoot: option(keyListSchema, {
      placeholder: 'KEY',
      description:
        "pinned org root key (base64 or key file): check enrollment, and with --wait the host's result, under the policy walked from it",
      defaultText: "the coordinator's newest policy, unverified",
      common: 'orgRoot',
    }),
    substituter: option(urlSchema(['http:', 'https:']).optional(), {
      placeholder: 'URL',
      description: "before signing, check that the closure's narinfos (every path) are in this binary cache",
    }),
    trustedCacheKey: option(z.array(z.string().min(1)).default([]), {
      placeholder: 'NAME:KEY',
      description: "with --substituter: every path's narinfo must be signed by one of these cache keys",
    }),
    wait: option(z.boolean().default(false), {
      description:
        'block until the host reports the result: exit 0 applied; 1 refused, failed, rolled back or superseded; 3 no result within --wait-timeout',
    }),
    waitTimeout: option(durationSchema.prefault('1h'), {
      placeholder: 'DURATION',
      description: 'with --wait: how long to wait for the result (--timeout is for each coordinator request)',
    }),
    json: option(z.boolean().default(false), { description: 'print the signed intent as JSON' }),
  }),
  examples: [
    'outpost deploy --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1 --closure /nix/store/…-nixos-system-clinic-1',
    'outpost deploy --host clinic-1 --closure /nix/store/…-nixos-system-clinic-1 --substituter https://cache.example.org --trusted-cache-key cache.example.org-1:… --wait --wait-timeout 30m',
  ],
});

export function runDeployCommand(argv: string[]): Promise<number> {
  return runCommand(deployCommand, argv, reachingCoordinator(deploy));
}

// Exit codes of --wait, for CI: 0 applied, 1 any other answer, 3 none in time.
const WAIT_EXIT: Record<WaitOutcome, number> = {
  applied: 0,
  refused: 1,
  failed: 1,
  'rolled-back': 1,
  superseded: 1,
  timeout: 3,
};

async function deploy(options: WithCoordinator<z.output<typeof deployCommand.options>>): Promise<number> {
  const key = await readKeyFile(options.key);
  const timeoutMs = options.timeout * 1000;
  const orgRoot = await resolvePublicKeys(deployCommand, 'org-root', options.orgRoot);
  const fleet = await readFleetRecords(options.coordinator, orgRoot, key, timeoutMs);
  const refusal = unknownHostRefusal(options.host, fleet, options.newHost);
  if (refusal) {
    console.error(`outpost deploy: ${refusal}`);
    return 1;
  }
  if (options.substituter !== undefined) {
    const checked = await checkClosureInCache(options.substituter, options.closure, options.trustedCacheKey);
    if (!checked.ok) {
      console.error(`outpost deploy: ${checked.reason}; nothing was signed`);
      return 1;
    }
    if (!options.json) console.log(checked.summary);
  } else if (options.trustedCacheKey.length > 0) {
    throw new UsageError(
      "outpost deploy: --trusted-cache-key needs --substituter URL (the cache to check). Run 'outpost deploy --help' for the options.",
    );
  }
  const baseline = options.wait
    ? await hostResultBaseline(options.coordinator, options.host, {
        timeoutMs,
        authority: fleet.authority,
        identity: key,
      })
    : 0;
  const submitted = await refusedOrSubmitted('deploy', () =>
    submitIntent(
      options.coordinator,
      {
        host: options.host,
        closure: options.closure,
        action: options.action,
        generation: options.generation,
        validForSeconds: options.expires,
        allowLowerGeneration: options.force,
        policyVersion: options.policyVersion,
        ...(fleet.authority ? { chain: fleet.authority.chain } : {}),
      },
      key,
      timeoutMs,
    ),
  );
  if (!submitted) return 1;
  const { signed, digest } = submitted;
  const { intent } = signed;
  if (options.json && !options.wait) {
    console.log(JSON.stringify({ ...signed, digest }));
  } else if (!options.json) {
    console.log(`stored: ${intent.host} → generation ${intent.generation} (${intent.action}) ${intent.closure}`);
    console.log(
      `signed by ${key.name}, valid until ${intent.expiresAt}; follow it with 'outpost status --coordinator ${options.coordinator}'`,
    );
    if (fleet.threshold > 1)
      console.log(
        `${intent.host} needs ${fleet.threshold} admins' signatures (its group's threshold): another admin runs 'outpost approve --host ${intent.host} --generation ${intent.generation}'`,
      );
  }
  if (!options.wait) return 0;
  const result = await waitForHostOutcome(options.coordinator, {
    host: intent.host,
    generation: intent.generation,
    closure: intent.closure,
    timeoutMs: options.waitTimeout * 1000,
    readTimeoutMs: timeoutMs,
    authority: fleet.authority,
    identity: key,
    afterSeq: baseline,
    onProgress: (line) => {
      if (!options.json) console.error(`${new Date().toISOString()} ${intent.host}: ${line}`);
    },
  });
  const unverified =
    result.hostKeys === 'unverified'
      ? ' (host key unverified: give --org-root to check the result against the enrolled key)'
      : '';
  if (options.json) console.log(JSON.stringify({ ...signed, digest, wait: result }));
  else if (result.outcome === 'applied')
    console.log(`applied: ${intent.host} runs generation ${intent.generation} (result #${result.seq})${unverified}`);
  else
    console.error(
      `outpost deploy: ${intent.host} generation ${intent.generation} ${result.outcome}: ${result.reason}${unverified}`,
    );
  return WAIT_EXIT[result.outcome];
}

interface FleetRecords {
  // No policy at the coordinator: an open fleet, without enrollment records.
  policy: Policy | null;
  bindings: Map<string, HostBinding>;
  authority: HostKeyAuthority | null;
  // The strictest threshold of the host's groups (1 without a policy); filled by unknownHostRefusal.
  threshold: number;
}

// The enrollment records and the policy, as the pinned root (--org-root) or, without it, the
// coordinator says: enough to refuse a typo; agents decide for themselves what they trust.
async function readFleetRecords(
  serverUrl: string,
  orgRoot: string[],
  key: SigningKey,
  timeoutMs: number,
): Promise<FleetRecords> {
  if (orgRoot.length > 0) {
    const authority = await readHostKeyAuthority(serverUrl, orgRoot, key, timeoutMs);
    return { policy: authority.chain.at(-1)!, bindings: authority.bindings, authority, threshold: 1 };
  }
  const doc = await readDocuments(serverUrl, [POLICY_DOC, ENROLLMENT_DOC], key, timeoutMs);
  const policies = readPolicies(doc(POLICY_DOC)).map((p) => p.policy);
  const policy = policies.reduce<Policy | null>((best, p) => (!best || p.version > best.version ? p : best), null);
  const enrollment = doc(ENROLLMENT_DOC);
  return {
    policy,
    bindings: enrollmentState(policy, readEnrollments(enrollment), readEnrollRequests(enrollment)).bindings,
    authority: null,
    threshold: 1,
  };
}

function unknownHostRefusal(host: string, fleet: FleetRecords, newHost: boolean): string | null {
  if (!fleet.policy) return null;
  fleet.threshold = signatureThreshold(fleet.policy, host);
  if (fleet.bindings.has(host) || newHost) return null;
  const known = [...fleet.bindings.keys()].sort();
  return `${host} is not in the enrollment records under policy version ${fleet.policy.version} (enrolled: ${known.length ? known.slice(0, 20).join(', ') + (known.length > 20 ? ', …' : '') : 'none'}); check the host id, enroll it ('outpost enroll token' or 'outpost enroll approve'), or pass --new-host to deploy ahead of its enrollment`;
}
