import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { signPayload } from '../shared/crypto/signatures.js';
import { appendIntent, readIntentEntries } from '../shared/documents/desired.js';
import { POLICY_DOC } from '../shared/documents/fleet.js';
import { desiredDocName } from '../shared/documents/names.js';
import { connectDocument } from '../shared/node/connect.js';
import { readKeyFile } from '../shared/node/key-file.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import { generationSchema, hostIdSchema, storePathSchema } from '../shared/schemas/primitives.js';
import { type CoSignProgress, describeCoSignProgress } from '../shared/trust/co-signatures.js';
import { intentCoSigning } from '../shared/trust/policy-intent.js';
import { intentDigest } from '../shared/trust/verify-intent.js';
import { alreadySigned, coSignedIntent, findProposal, mayApprove } from '../shared/views/co-sign.js';
import { adminKeyOption, coordinatorOption, reachingCoordinator, type WithCoordinator } from './common-options.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';
import { readDocuments, syncOrRefusal, walkStoredPolicies } from './policy-remote.js';
import { waitUntilStored } from './submit-intent.js';

// `outpost approve`: the second (third…) admin of a group that needs k signatures co-signs the
// intent another admin deployed. It signs the *same* content — never a new intent — so every
// copy counts together and agents apply it once k distinct admins signed (co-signatures.ts).
// What it approves is checked first, under the policy walked from the pinned org root: the
// coordinator could otherwise show a forged intent or lie about who signed already.
export const approveCommand = defineCommand({
  name: 'approve',
  summary: "co-sign the intent another admin deployed, where the host's group needs several admins",
  usage: 'outpost approve --coordinator URL --key FILE --org-root KEY --host ID [--generation N] [--closure PATH]',
  options: z.object({
    coordinator: coordinatorOption,
    key: adminKeyOption(),
    orgRoot: option(keyListSchema, {
      placeholder: 'KEY',
      description:
        'pinned org root key (base64 or key file): the policy that says who may sign is walked from it, never taken from the coordinator',
      common: 'orgRoot',
    }),
    host: option(hostIdSchema, { placeholder: 'ID', description: 'host whose pending intent you approve' }),
    generation: option(z.coerce.number().pipe(generationSchema).optional(), {
      placeholder: 'N',
      description: 'generation to approve',
      defaultText: 'the newest for the host',
    }),
    closure: option(storePathSchema.optional(), {
      placeholder: 'PATH',
      description: 'approve only if the intent installs exactly this closure (what you reviewed)',
    }),
    dryRun: option(z.boolean().default(false), {
      description: 'show the intent and who has signed, sign nothing',
    }),
    timeout: option(durationSchema.prefault('30s'), {
      placeholder: 'DURATION',
      description: 'how long to wait for the coordinator',
      common: 'timeout',
    }),
    json: option(z.boolean().default(false), { description: 'print the outcome as JSON' }),
  }),
  examples: [
    'outpost approve --coordinator wss://fleet.example.org --key ~/.config/outpost/bob.key --org-root <root key> --host prod-1',
    'outpost approve --host prod-1 --generation 7 --closure /nix/store/…-nixos-system-prod-1 --dry-run',
  ],
});

export function runApproveCommand(argv: string[]): Promise<number> {
  return runCommand(approveCommand, argv, reachingCoordinator(approve));
}

type ApproveOptions = WithCoordinator<z.output<typeof approveCommand.options>>;

class ApproveRefused extends Error {}

async function approve(options: ApproveOptions): Promise<number> {
  const orgRoot = await resolvePublicKeys(approveCommand, 'org-root', options.orgRoot);
  if (orgRoot.length === 0) {
    console.error(
      "outpost approve: give --org-root (or OUTPOST_ORG_ROOT): who may sign, and who already did, is checked under the policy walked from the pinned org root; the coordinator's word is not enough",
    );
    return 2;
  }
  const key = await readKeyFile(options.key);
  try {
    const outcome = await approveIntent(options, key, orgRoot);
    if (options.json) console.log(JSON.stringify(outcome, null, 2));
    else console.log(outcome.lines.join('\n'));
    return 0;
  } catch (error) {
    if (!(error instanceof ApproveRefused)) throw error;
    console.error(`outpost approve: ${error.message}`);
    return 1;
  }
}

interface ApproveOutcome {
  host: string;
  generation: number;
  closure: string;
  digest: string | null;
  signed: boolean;
  progress: CoSignProgress;
  lines: string[];
}

async function approveIntent(options: ApproveOptions, key: SigningKey, orgRoot: string[]): Promise<ApproveOutcome> {
  const timeoutMs = options.timeout * 1000;
  const doc = await readDocuments(options.coordinator, [POLICY_DOC], key, timeoutMs);
  const walk = walkStoredPolicies(doc(POLICY_DOC), orgRoot);
  const chain = walk.chain;
  const current = chain.at(-1);
  if (!current)
    throw new ApproveRefused(
      `${options.coordinator} holds no policy signed by the pinned org root; check --org-root, or push the policy with 'outpost policy push'`,
    );
  const name = desiredDocName(options.host);
  const writer = connectDocument(options.coordinator, name, { identity: key });
  try {
    await syncOrRefusal(writer, key, timeoutMs);
    const found = findProposal(readIntentEntries(writer.doc).entries, options.host, chain, {
      ...(options.generation !== undefined ? { generation: options.generation } : {}),
      ...(options.closure !== undefined ? { closure: options.closure } : {}),
      now: Date.now(),
    });
    if (!found.ok) throw new ApproveRefused(found.reason);
    const { intent, generation } = found;
    const allowed = mayApprove(current, key.publicKey, options.host);
    if (!allowed.ok) throw new ApproveRefused(allowed.reason);
    const summary = [
      `${options.host} generation ${generation} (${intent.action}) ${intent.closure}`,
      `  deployed by ${intent.issuer} at ${intent.issuedAt}, valid until ${intent.expiresAt}, under policy version ${intent.policyVersion}`,
    ];
    const mine = alreadySigned(found, key.publicKey);
    if (mine || options.dryRun) {
      const progress = found.signing.progress;
      return {
        host: options.host,
        generation,
        closure: intent.closure,
        digest: null,
        signed: false,
        progress,
        lines: [
          ...summary,
          `  ${describeCoSignProgress(progress)}`,
          mine ? 'you have already signed it; nothing to do' : 'dry run: nothing signed',
        ],
      };
    }
    const signed: SignedIntent = coSignedIntent(found, signPayload('intent', intent, key));
    const after = intentCoSigning(intent, signed.signatures, chain);
    if ('error' in after) throw new ApproveRefused(after.error);
    const digest = intentDigest(signed);
    appendIntent(writer.doc, signed);
    await waitUntilStored(options.coordinator, name, digest, timeoutMs, key);
    const done = after.progress.missing === 0;
    return {
      host: options.host,
      generation,
      closure: intent.closure,
      digest,
      signed: true,
      progress: after.progress,
      lines: [
        ...summary,
        `signed by ${key.name}: ${describeCoSignProgress(after.progress)}`,
        done
          ? `enough admins signed: ${options.host} applies it when it next syncs; follow it with 'outpost status --host ${options.host}'`
          : 'the host waits for the remaining signatures',
      ],
    };
  } finally {
    writer.close();
  }
}
