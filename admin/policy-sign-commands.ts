import { z } from 'zod';
import { defineCommand, option } from '../cli/options.js';
import { signPayload } from '../shared/crypto/signatures.js';
import { POLICY_DOC } from '../shared/documents/fleet.js';
import { readKeyFile } from '../shared/node/key-file.js';
import {
  type PolicyVerdict,
  verifiedSigners,
  verifyAnchorPolicy,
  verifyPolicySuccessor,
} from '../shared/trust/policy-chain.js';
import {
  coordinatorListSchema,
  coordinatorOption,
  reachingCoordinator,
  reachingOptionalCoordinator,
} from './common-options.js';
import {
  fileSchema,
  jsonOption,
  keyListSchema,
  printResult,
  resolvePublicKeys,
  type Subcommand,
  subcommand,
  timeoutOption,
} from './policy-cli-kit.js';
import { short } from './policy-edit.js';
import { type DraftPolicy, readPolicyFile, readSignedPolicyFile, writePolicyFile } from './policy-file.js';
import { postFleetEntry, readDocuments, walkStoredPolicies } from './policy-remote.js';
import { renderPolicy, renderTally, tallySignatures } from './policy-render.js';

// Signing, checking and publishing policies. `verify` runs the very checks readers and the
// coordinator run (shared/trust/policy-chain.ts), so "accepted" here means accepted there.

const json = jsonOption;
const orgRootHelp = 'a pinned org root key (base64, or a key file to take it from), as given to agents with --org-root';

const signSpec = defineCommand({
  name: 'policy sign',
  summary: 'add your signature (root key, offline) to a policy file',
  usage: 'outpost policy sign --policy FILE --key KEYFILE [--json]',
  options: z.object({
    policy: option(fileSchema('the policy file'), { placeholder: 'FILE', description: 'the policy file to sign' }),
    key: option(fileSchema('your key file'), {
      placeholder: 'KEYFILE',
      description: 'a root key file of this version or of the previous one (root rotation)',
    }),
    json,
  }),
  examples: ['outpost policy sign --policy fleet-policy.json --key /media/offline/root.key'],
});

const signCommand = subcommand(signSpec, async (o) => {
  const draft = await readPolicyFile(o.policy);
  const key = await readKeyFile(o.key);
  if (draft.signatures.some((s) => s.publicKey === key.publicKey)) {
    throw new Error(
      `${o.policy} is already signed by ${key.name} (${short(key.publicKey)}); a key counts once toward a threshold, so a second signature adds nothing. Sign with another root key`,
    );
  }
  const signed: DraftPolicy = {
    policy: draft.policy,
    signatures: [...draft.signatures, signPayload('policy', draft.policy, key)],
  };
  await writePolicyFile(o.policy, signed);
  const tally = tallySignatures(signed.policy, signed.signatures);
  const ownRoot = signed.policy.root.keys.includes(key.publicKey);
  const notes = ownRoot
    ? []
    : [
        `${key.name} is not one of version ${signed.policy.version}'s own root keys: the signature counts only toward the previous version's root (root rotation)`,
      ];
  printResult(o.json, { file: o.policy, version: signed.policy.version, signer: key.publicKey, tally, notes }, [
    `signed ${o.policy} (version ${signed.policy.version}) with ${key.name} (${short(key.publicKey)})`,
    ...renderTally(tally),
    ...notes.map((n) => `note: ${n}`),
  ]);
  return 0;
});

const verifySpec = defineCommand({
  name: 'policy verify',
  summary: 'say whether readers will accept a policy file, and why not',
  usage: 'outpost policy verify --policy FILE (--previous FILE | --org-root KEY …) [--json]',
  options: z
    .object({
      policy: option(fileSchema('the policy file'), { placeholder: 'FILE', description: 'the policy file to check' }),
      previous: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description: 'the version before it: checks it as the successor (version 2 and up)',
      }),
      orgRoot: option(keyListSchema, {
        placeholder: 'KEY',
        description: `${orgRootHelp}: checks it as the first version readers anchor on`,
      }),
      json,
    })
    .refine((o) => (o.previous !== undefined) !== o.orgRoot.length > 0, {
      path: ['previous'],
      message:
        'give either --previous FILE (the version before) or --org-root KEY (for the first version), one of the two',
    }),
  examples: [
    'outpost policy verify --policy v1.json --org-root <root public key>',
    'outpost policy verify --policy v2.json --previous v1.json',
  ],
});

const verifyCommand = subcommand(verifySpec, async (o) => {
  const draft = await readPolicyFile(o.policy);
  const { policy, signatures } = draft;
  const tally = tallySignatures(policy, signatures);
  const details = renderTally(tally);
  let verdict: PolicyVerdict;
  if (signatures.length === 0) {
    verdict = { ok: false, reason: `policy version ${policy.version} has no signatures` };
  } else if (o.previous !== undefined) {
    const previous = (await readPolicyFile(o.previous)).policy;
    const signers = verifiedSigners('policy', policy, signatures, new Set(previous.root.keys)).size;
    details.push(`${signers} of version ${previous.version}'s root keys signed, ${previous.root.threshold} needed`);
    verdict = verifyPolicySuccessor(previous, draft);
  } else {
    verdict = verifyAnchorPolicy(draft, new Set(await resolvePublicKeys(verifySpec, 'org-root', o.orgRoot)));
  }
  const against = o.previous !== undefined ? `readers that trust ${o.previous}` : 'readers pinning these org root keys';
  printResult(
    o.json,
    {
      file: o.policy,
      version: policy.version,
      accepted: verdict.ok,
      reason: verdict.ok ? null : verdict.reason,
      tally,
    },
    [
      verdict.ok
        ? `accepted: ${against} will accept ${o.policy} (version ${policy.version})`
        : `REFUSED: ${verdict.reason}`,
      ...details,
    ],
  );
  return verdict.ok ? 0 : 1;
});

const showSpec = defineCommand({
  name: 'policy show',
  summary: 'print a policy: from a file, or the version in force at a coordinator walked from the pinned org root',
  usage: 'outpost policy show (--policy FILE | --coordinator URL --org-root KEY … [--key KEYFILE]) [--json]',
  options: z
    .object({
      policy: option(z.string().min(1).optional(), { placeholder: 'FILE', description: 'a policy file' }),
      coordinator: option(coordinatorListSchema.optional(), {
        placeholder: 'URL',
        description:
          'read fleet/policy from this coordinator, ws:// or wss:// (several of one fleet: the first that answers)',
      }),
      orgRoot: option(keyListSchema, {
        placeholder: 'KEY',
        description: `with --coordinator: ${orgRootHelp}`,
        common: 'orgRoot',
      }),
      key: option(z.string().min(1).optional(), {
        placeholder: 'KEYFILE',
        description: 'with --coordinator: your admin key file, to authenticate',
        common: 'key',
        defaultText: 'connect without a key (open coordinators)',
      }),
      timeout: timeoutOption,
      json,
    })
    .refine((o) => (o.policy !== undefined) !== (o.coordinator !== undefined), {
      path: ['policy'],
      message: 'give either --policy FILE or --coordinator URL, one of the two',
    })
    .refine((o) => o.coordinator === undefined || o.orgRoot.length > 0, {
      path: ['orgRoot'],
      message:
        'with --coordinator, give the pinned org root key(s): the coordinator is not trusted to say which policy is real',
    }),
  examples: [
    'outpost policy show --policy fleet-policy.json',
    'outpost policy show --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --org-root <root public key>',
  ],
});

async function showFile(file: string, asJson: boolean): Promise<number> {
  const { policy, signatures } = await readPolicyFile(file);
  const tally = tallySignatures(policy, signatures);
  printResult(asJson, { source: file, policy, signatures, tally }, [...renderPolicy(policy), ...renderTally(tally)]);
  return 0;
}

const showCommand = subcommand(
  showSpec,
  reachingOptionalCoordinator(async (o) => {
    if (o.policy !== undefined) return showFile(o.policy, o.json);
    const url = o.coordinator!;
    const orgRoot = await resolvePublicKeys(showSpec, 'org-root', o.orgRoot);
    const identity = o.key === undefined ? null : await readKeyFile(o.key);
    const walk = walkStoredPolicies(
      (await readDocuments(url, [POLICY_DOC], identity, o.timeout * 1000))(POLICY_DOC),
      orgRoot,
    );
    const current = walk.chain.at(-1);
    const refused = walk.refused.map((r) => `refused version ${r.version}: ${r.reason}`);
    printResult(
      o.json,
      {
        source: url,
        version: current?.version ?? null,
        chain: walk.chain.map((p) => p.version),
        policy: current ?? null,
        refused: walk.refused,
      },
      [
        ...(current
          ? [
              `in force at ${url}: version ${current.version} (walked ${walk.chain.map((p) => p.version).join(' → ')} from the pinned org root)`,
              ...renderPolicy(current),
            ]
          : [`no policy version at ${url} is signed by the pinned org root keys`]),
        ...refused,
      ],
    );
    return current ? 0 : 1;
  }),
);

const pushSpec = defineCommand({
  name: 'policy push',
  summary: 'publish a signed policy through the coordinator (which checks it as every reader will)',
  usage: 'outpost policy push --policy FILE --coordinator URL [--json]',
  options: z.object({
    policy: option(fileSchema('the policy file'), { placeholder: 'FILE', description: 'the signed policy file' }),
    coordinator: coordinatorOption,
    timeout: timeoutOption,
    json,
  }),
  examples: ['outpost policy push --policy fleet-policy.json --coordinator wss://fleet.example.org'],
});

const pushCommand = subcommand(
  pushSpec,
  reachingCoordinator(async (o) => {
    const signed = await readSignedPolicyFile(o.policy);
    await postFleetEntry(o.coordinator, '/api/policy', signed, o.timeout * 1000, o.policy);
    printResult(o.json, { coordinator: o.coordinator, version: signed.policy.version, accepted: true }, [
      `${o.coordinator} accepted policy version ${signed.policy.version}; readers walk to it as they sync fleet/policy`,
    ]);
    return 0;
  }),
);

export const policyTrustSubcommands: Subcommand[] = [signCommand, verifyCommand, showCommand, pushCommand];
