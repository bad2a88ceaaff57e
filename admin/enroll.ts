import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { ENROLLMENT_DOC, POLICY_DOC } from '../shared/documents/fleet.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import {
  adminKeyOption,
  coordinatorListSchema,
  coordinatorOption,
  reachingCoordinator,
  reachingOptionalCoordinator,
} from './common-options.js';
import {
  enrollmentView,
  type PendingRequest,
  readTokenFile,
  signEnrollClear,
  signEnrollment,
  signEnrollRequest,
  signEnrollToken,
} from './enroll-entries.js';
import {
  type CommandGroup,
  fileSchema,
  jsonOption,
  keyListSchema,
  printResult,
  resolvePublicKey,
  resolvePublicKeys,
  runGroup,
  subcommand,
  timeoutOption,
  versionSchema,
} from './policy-cli-kit.js';
import { createFileExclusively } from './policy-file.js';
import { highestStoredVersion, postFleetEntry, readDocuments } from './policy-remote.js';

// `outpost enroll`: a new host proves its key and waits (request); an admin with `enroll` binds
// host id ↔ key (approve), or hands out a one-time token for unattended installs (token).

const json = jsonOption;
const orgRootHelp = 'a pinned org root key (base64, or a key file to take it from)';
const timeout = timeoutOption;

const requestSpec = defineCommand({
  name: 'enroll request',
  summary: 'ask to bind this host id to its key (run on the host); with a token it is bound at once',
  usage: 'outpost enroll request --coordinator URL --host ID --key HOSTKEYFILE [--token FILE] [--json]',
  options: z.object({
    coordinator: coordinatorOption,
    host: option(hostIdSchema, { placeholder: 'ID', description: 'the host id to enroll as' }),
    key: option(fileSchema("the host's key file"), {
      placeholder: 'HOSTKEYFILE',
      description: "the host's key file (outpost keygen); the request is signed with it",
    }),
    token: option(z.string().min(1).optional(), {
      placeholder: 'FILE',
      description: "a one-time token from 'outpost enroll token'",
    }),
    timeout,
    json,
  }),
  examples: [
    'outpost enroll request --coordinator wss://fleet.example.org --host clinic-3 --key /var/lib/outpost-agent/host.key',
  ],
});

const requestCommand = subcommand(
  requestSpec,
  reachingCoordinator(async (o) => {
    const hostKey = await readKeyFile(o.key);
    const token = o.token === undefined ? undefined : await readTokenFile(o.token);
    if (token && token.token.host !== o.host)
      throw new Error(
        `--token: ${o.token} is for host ${token.token.host}, not ${o.host}; use the token made for this host`,
      );
    const signed = signEnrollRequest(hostKey, o.host, token, new Date());
    const answer = await postFleetEntry(
      o.coordinator,
      '/api/enroll',
      signed,
      o.timeout * 1000,
      `the enrollment request for ${o.host}`,
    );
    const enrolled = answer.enrolled === true;
    printResult(
      o.json,
      {
        host: o.host,
        hostKey: hostKey.publicKey,
        enrolled,
        pending: !enrolled,
        ...(answer.conflict ? { conflict: answer.conflict } : {}),
      },
      enrolled
        ? [`enrolled: ${o.host} is bound to key ${hostKey.publicKey}${token ? ' by its token' : ''}`]
        : [
            ...(answer.conflict ? [`CONFLICT: ${answer.conflict}`] : []),
            `pending: ${o.host} asked to be bound to key ${hostKey.publicKey}`,
            `an admin with 'enroll' approves it after comparing that key with this host's: outpost enroll approve --coordinator ${o.coordinator} --key ADMIN-KEY --host ${o.host} --host-key ${hostKey.publicKey}`,
          ],
    );
    return 0;
  }),
);

const tokenSpec = defineCommand({
  name: 'enroll token',
  summary: 'make a one-time enrollment token for an unattended install of one host',
  usage:
    'outpost enroll token --key ADMINKEYFILE --host ID --expires DURATION (--policy-version N | --coordinator URL) --out FILE [--json]',
  options: z
    .object({
      key: adminKeyOption(),
      host: option(hostIdSchema, { placeholder: 'ID', description: 'the only host id the token enrolls' }),
      expires: option(
        z
          .string({ error: 'give how long the token is valid, e.g. 12h or 2d' })
          .pipe(durationSchema)
          .refine((s) => s > 0, 'the token must be valid for some time, e.g. 12h or 2d'),
        { placeholder: 'DURATION', description: 'how long the token is valid (90m, 12h, 7d)' },
      ),
      policyVersion: option(versionSchema.optional(), {
        placeholder: 'N',
        description: 'the policy version you sign under',
      }),
      coordinator: option(coordinatorListSchema.optional(), {
        placeholder: 'URL',
        description:
          'instead of --policy-version: take the version the coordinator holds (several of one fleet: the first that answers)',
      }),
      out: option(fileSchema('the token file to create'), {
        placeholder: 'FILE',
        description: 'the token file to create (mode 0600; never overwritten)',
      }),
      timeout,
      json,
    })
    .refine((o) => (o.policyVersion !== undefined) !== (o.coordinator !== undefined), {
      path: ['policyVersion'],
      message: 'give either --policy-version N or --coordinator URL to read it from, one of the two',
    }),
  examples: [
    'outpost enroll token --key ~/.config/outpost/alice.key --host clinic-3 --expires 2d --coordinator wss://fleet.example.org --out clinic-3.token',
  ],
});

async function heldPolicyVersion(url: string, admin: SigningKey, timeoutMs: number): Promise<number> {
  const version = highestStoredVersion((await readDocuments(url, [POLICY_DOC], admin, timeoutMs))(POLICY_DOC));
  if (version === undefined)
    throw new Error(`${url} holds no fleet policy yet; push one first with 'outpost policy push'`);
  return version;
}

const tokenCommand = subcommand(
  tokenSpec,
  reachingOptionalCoordinator(async (o) => {
    const admin = await readKeyFile(o.key);
    const policyVersion = o.policyVersion ?? (await heldPolicyVersion(o.coordinator!, admin, o.timeout * 1000));
    const signed = signEnrollToken(admin, {
      host: o.host,
      expiresAt: new Date(Date.now() + o.expires * 1000).toISOString(),
      policyVersion,
    });
    await createFileExclusively(o.out, `${JSON.stringify(signed, null, 2)}\n`, 'out');
    printResult(
      o.json,
      { file: o.out, host: o.host, expiresAt: signed.token.expiresAt, policyVersion, signer: admin.publicKey },
      [
        `wrote ${o.out}: one-time enrollment token for ${o.host}, valid until ${signed.token.expiresAt}, signed by ${admin.name} under policy version ${policyVersion}`,
        `keep it secret: the first host key presented with it (signed with the secret in the file) is bound to ${o.host}. On the host: outpost enroll request --coordinator URL --host ${o.host} --key HOSTKEYFILE --token ${o.out}`,
      ],
    );
    return 0;
  }),
);

const listSpec = defineCommand({
  name: 'enroll list',
  summary: 'show bound hosts (by approval or token) and pending enrollment requests',
  usage: 'outpost enroll list --coordinator URL --key ADMINKEYFILE --org-root KEY [--org-root KEY …] [--json]',
  options: z.object({
    coordinator: coordinatorOption,
    key: adminKeyOption(),
    orgRoot: option(
      keyListSchema.refine(
        (k) => k.length > 0,
        'give the pinned org root key(s): the coordinator is not trusted to say which policy is real',
      ),
      { placeholder: 'KEY', description: orgRootHelp, common: 'orgRoot' },
    ),
    timeout,
    json,
  }),
  examples: [
    'outpost enroll list --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --org-root <root public key>',
  ],
});

function renderPending(pending: PendingRequest[]): string[] {
  return pending.map(
    (p) =>
      `${p.host}  key ${p.hostKey}  requested ${p.requestedAt}${p.tokenProblem ? `  (token not used: ${p.tokenProblem})` : ''}`,
  );
}

const listCommand = subcommand(
  listSpec,
  reachingCoordinator(async (o) => {
    const orgRoot = await resolvePublicKeys(listSpec, 'org-root', o.orgRoot);
    const admin = await readKeyFile(o.key);
    const doc = await readDocuments(o.coordinator, [POLICY_DOC, ENROLLMENT_DOC], admin, o.timeout * 1000);
    const view = enrollmentView(doc(POLICY_DOC), doc(ENROLLMENT_DOC), orgRoot);
    const refused = view.walk?.refused ?? [];
    printResult(
      o.json,
      {
        coordinator: o.coordinator,
        policyVersion: view.policyVersion ?? null,
        bound: view.bound,
        pending: view.pending,
        conflicts: view.conflicts,
        refusedPolicies: refused,
      },
      [
        view.policyVersion === undefined
          ? 'no policy version is signed by the pinned org root keys: no host can be bound'
          : `policy version ${view.policyVersion} in force (walked from the pinned org root)`,
        ...refused.map((r) => `refused policy version ${r.version}: ${r.reason}`),
        `bound hosts (${view.bound.length}):`,
        ...view.bound.map((b) => `  ${b.host}  key ${b.hostKey}  via ${b.via}`),
        `pending requests (${view.pending.length}):`,
        ...renderPending(view.pending).map((l) => `  ${l}`),
        ...(view.pending.length
          ? [
              `approve one with: outpost enroll approve --coordinator ${o.coordinator} --key ADMIN-KEY --host HOST --host-key KEY`,
              `drop the ones nobody recognises with: outpost enroll clear --coordinator ${o.coordinator} --key ADMIN-KEY (--host HOST [--host-key KEY] | --all)`,
            ]
          : []),
        ...(view.conflicts.length
          ? [
              `TOKEN CONFLICTS (${view.conflicts.length}): a token was presented for another key than the one its host is bound to; the token file was copied, or the host reinstalled:`,
              ...view.conflicts.map(
                (c) => `  ${c.host}  bound to key ${c.boundKey}  also claimed by key ${c.otherKey} at ${c.requestedAt}`,
              ),
              `check with the host which key is its own, then: outpost enroll approve --coordinator ${o.coordinator} --key ADMIN-KEY --host HOST --host-key KEY`,
            ]
          : []),
      ],
    );
    return 0;
  }),
);

const approveSpec = defineCommand({
  name: 'enroll approve',
  summary: "bind a host id to its key, signed with your admin key (needs 'enroll' for that host)",
  usage:
    'outpost enroll approve --coordinator URL --key ADMINKEYFILE --host ID [--host-key KEY] [--policy-version N] [--org-root KEY …] [--json]',
  options: z.object({
    coordinator: coordinatorOption,
    key: adminKeyOption(),
    host: option(hostIdSchema, { placeholder: 'ID', description: 'the host to bind' }),
    hostKey: option(z.string().min(1).optional(), {
      placeholder: 'KEY',
      description: "the host's public key (base64 or a key file), confirmed with the host",
      defaultText: 'the key of its single pending request',
    }),
    policyVersion: option(versionSchema.optional(), {
      placeholder: 'N',
      description: 'the policy version you sign under',
      defaultText: 'the newest the coordinator holds',
    }),
    orgRoot: option(keyListSchema, {
      placeholder: 'KEY',
      description: `${orgRootHelp}; walks the policy to tell pending requests exactly`,
      common: 'orgRoot',
    }),
    timeout,
    json,
  }),
  examples: [
    'outpost enroll approve --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-3',
  ],
});

function pickPendingKey(pending: PendingRequest[], host: string, url: string): string {
  const forHost = pending.filter((p) => p.host === host);
  if (forHost.length === 0)
    throw new Error(
      `${url} holds no pending enrollment request for ${host}; the host asks first ('outpost enroll request'), or give its key with --host-key`,
    );
  if (forHost.length > 1) {
    throw new Error(
      `${forHost.length} pending requests for ${host} with different keys:\n  ${renderPending(forHost).join('\n  ')}\nconfirm the host's real key with the host and give it with --host-key`,
    );
  }
  return forHost[0]!.hostKey;
}

const approveCommand = subcommand(
  approveSpec,
  reachingCoordinator(async (o) => {
    // Flag values first, so a mistyped key is reported as a usage error before anything is read.
    let hostKey = o.hostKey === undefined ? undefined : await resolvePublicKey(approveSpec, 'host-key', o.hostKey);
    const admin = await readKeyFile(o.key);
    let policyVersion = o.policyVersion;
    if (hostKey === undefined || policyVersion === undefined) {
      const orgRoot = await resolvePublicKeys(approveSpec, 'org-root', o.orgRoot);
      const doc = await readDocuments(o.coordinator, [POLICY_DOC, ENROLLMENT_DOC], admin, o.timeout * 1000);
      const view = enrollmentView(doc(POLICY_DOC), doc(ENROLLMENT_DOC), orgRoot);
      policyVersion ??= view.policyVersion;
      if (policyVersion === undefined)
        throw new Error(
          `${o.coordinator} holds no fleet policy${orgRoot.length ? ' signed by the pinned org root' : ''}; push one first with 'outpost policy push'`,
        );
      hostKey ??= pickPendingKey(view.pending, o.host, o.coordinator);
    }
    const signed = signEnrollment(admin, { host: o.host, hostKey, policyVersion }, new Date());
    await postFleetEntry(o.coordinator, '/api/enroll/approve', signed, o.timeout * 1000, `the approval of ${o.host}`);
    printResult(o.json, { host: o.host, hostKey, policyVersion, approvedBy: admin.publicKey }, [
      `approved: ${o.host} is bound to key ${hostKey} (signed by ${admin.name} under policy version ${policyVersion})`,
    ]);
    return 0;
  }),
);

const clearSpec = defineCommand({
  name: 'enroll clear',
  summary: "drop pending enrollment requests (needs 'enroll' for their hosts); bindings are never dropped",
  usage: 'outpost enroll clear --coordinator URL --key ADMINKEYFILE (--host ID [--host-key KEY] | --all) [--json]',
  options: z
    .object({
      coordinator: coordinatorOption,
      key: adminKeyOption(),
      host: option(hostIdSchema.optional(), { placeholder: 'ID', description: "only this host's pending requests" }),
      hostKey: option(z.string().min(1).optional(), {
        placeholder: 'KEY',
        description: 'only the request of this key (base64 or a key file); needs --host',
      }),
      all: option(z.boolean().default(false), { description: 'every pending request of hosts you may enroll' }),
      timeout,
      json,
    })
    .refine((o) => (o.host !== undefined) !== o.all, {
      path: ['host'],
      message: 'give --host ID (optionally with --host-key KEY) or --all, one of the two',
    })
    .refine((o) => o.hostKey === undefined || o.host !== undefined, {
      path: ['hostKey'],
      message: 'give --host too: a key is cleared for one host',
    }),
  examples: [
    'outpost enroll clear --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --all',
    'outpost enroll clear --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-3',
  ],
});

const clearCommand = subcommand(
  clearSpec,
  reachingCoordinator(async (o) => {
    const hostKey = o.hostKey === undefined ? undefined : await resolvePublicKey(clearSpec, 'host-key', o.hostKey);
    const admin = await readKeyFile(o.key);
    const signed = signEnrollClear(
      admin,
      { ...(o.host ? { host: o.host } : {}), ...(hostKey ? { hostKey } : {}) },
      new Date(),
    );
    const what = o.host ? `pending requests of ${o.host}${hostKey ? ` with key ${hostKey}` : ''}` : 'pending requests';
    const answer = await postFleetEntry(
      o.coordinator,
      '/api/enroll/clear',
      signed,
      o.timeout * 1000,
      `the order to clear ${what}`,
    );
    const cleared = answer.cleared ?? 0;
    const notPermitted = answer.notPermitted ?? 0;
    printResult(o.json, { cleared, notPermitted }, [
      `cleared ${cleared} ${what} (bound hosts are untouched)`,
      ...(notPermitted
        ? [`kept ${notPermitted} of hosts ${admin.name} may not enroll; an admin with 'enroll' for them clears those`]
        : []),
    ]);
    return 0;
  }),
);

export const enrollCommandGroup: CommandGroup = {
  name: 'enroll',
  summary: 'enroll hosts: bind a host id to its key by admin approval or one-time token',
  subcommands: [requestCommand, tokenCommand, listCommand, approveCommand, clearCommand],
  notes: [
    "Approving needs the 'enroll' capability for the host under the policy in force; the coordinator checks it, and 'enroll list' checks every binding again from the pinned org root.",
    'Pending requests expire after 7 days at the coordinator; clear lets an admin drop them sooner.',
  ],
};

export function runEnrollCommand(argv: string[]): Promise<number> {
  return runGroup(enrollCommandGroup, argv);
}
