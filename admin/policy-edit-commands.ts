import { z } from 'zod';
import { defineCommand, option } from '../cli/options.js';
import { timeZoneSchema, windowSchema } from '../shared/schedule/windows.js';
import { accountSchema } from '../shared/schemas/logins.js';
import { capabilitySchema, type Policy, policySchema } from '../shared/schemas/policy.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import {
  fileSchema,
  jsonOption,
  printResult,
  requiredListSchema,
  resolvePublicKey,
  resolvePublicKeys,
  resolveSshPublicKeys,
  type Subcommand,
  subcommand,
  thresholdSchema,
} from './policy-cli-kit.js';
import {
  addAdmin,
  addGroup,
  addLogin,
  addRelay,
  addRole,
  addTimestampKey,
  checkedPolicy,
  type Edited,
  nextVersion,
  removeAdmin,
  removeLogin,
  revokeKey,
  rotateRoot,
  setGroupWindows,
} from './policy-edit.js';
import { createPolicyFile, readPolicyFile, writePolicyFile } from './policy-file.js';

// `outpost policy init|next` create drafts; the other subcommands here edit one in place. Editing
// clears the draft's signatures: they covered the content before the edit and would not verify.

const policyOption = option(fileSchema('the policy file'), {
  placeholder: 'FILE',
  description: 'the draft policy file to edit',
});
const keyHelp = 'a base64 public key, or a key file (outpost keygen) to take it from';

// Names, capabilities and host ids are checked here with the policy's own rules, so a bad value is
// reported against its flag (exit 2) rather than as an invalid policy.
const nameSchema = policySchema.shape.roles.element.shape.name;
const hostOrAllSchema = z
  .string()
  .refine(
    (v) => v === '*' || hostIdSchema.safeParse(v).success,
    'expected a host id (lowercase letters, digits, dashes) or * for every host',
  );
const json = jsonOption;
// Every keyed entry (admin, role, group, relay) is named with --name; only its description differs.
const nameOption = (placeholder: string, description: string) => option(nameSchema, { placeholder, description });

// `outpost policy remove-KIND --policy FILE --name NAME`: the entry named goes from the draft.
function removeByNameCommand(
  kind: 'admin' | 'login',
  summary: string,
  remove: (policy: Policy, name: string) => Edited,
): Subcommand {
  const spec = defineCommand({
    name: `policy remove-${kind}`,
    summary,
    usage: `outpost policy remove-${kind} --policy FILE --name NAME [--json]`,
    options: z.object({ policy: policyOption, name: nameOption('NAME', `the ${kind} to remove`), json }),
  });
  return subcommand(spec, (o) => applyEdit(o.policy, o.json, (p) => remove(p, o.name)));
}

async function applyEdit(file: string, asJson: boolean, edit: (policy: Policy) => Edited): Promise<number> {
  const draft = await readPolicyFile(file);
  let edited: Edited;
  try {
    edited = edit(draft.policy);
  } catch (error) {
    throw new Error(`${file}: ${(error as Error).message}`);
  }
  const policy = checkedPolicy({ ...edited.policy, issuedAt: new Date().toISOString() });
  await writePolicyFile(file, { policy, signatures: [] });
  const cleared = draft.signatures.length;
  const notes = [...edited.notes];
  if (cleared)
    notes.push(
      `cleared ${cleared} signature${cleared === 1 ? '' : 's'}: they covered version ${policy.version} before this edit and no longer verify; sign again with 'outpost policy sign --policy ${file} --key …'`,
    );
  printResult(asJson, { file, version: policy.version, change: edited.summary, notes, clearedSignatures: cleared }, [
    `${file}: ${edited.summary}`,
    ...notes.map((n) => `note: ${n}`),
  ]);
  return 0;
}

const initSpec = defineCommand({
  name: 'policy init',
  summary: 'start a draft policy, version 1, with the org root keys',
  usage: 'outpost policy init --out FILE --root-key KEY [--root-key KEY …] [--threshold N] [--json]',
  options: z.object({
    out: option(fileSchema('the draft file to create'), {
      placeholder: 'FILE',
      description: 'the draft file to create; an existing file is never overwritten',
    }),
    rootKey: option(requiredListSchema('at least one org root key'), {
      placeholder: 'KEY',
      description: `an org root key: ${keyHelp}`,
    }),
    threshold: option(thresholdSchema.default(1), {
      placeholder: 'N',
      description: 'how many root keys must sign each next version',
    }),
    json,
  }),
  examples: ['outpost policy init --out fleet-policy.json --root-key /media/offline/root.key'],
});

const initCommand = subcommand(initSpec, async (o) => {
  const keys = await resolvePublicKeys(initSpec, 'root-key', o.rootKey);
  const policy = checkedPolicy({
    kind: 'policy',
    version: 1,
    epoch: 0,
    issuedAt: new Date().toISOString(),
    root: { keys, threshold: o.threshold },
    admins: [],
    roles: [],
    groups: [],
    relays: [],
    timestampKeys: [],
    revokedKeys: [],
  });
  await createPolicyFile(o.out, { policy, signatures: [] }, 'out');
  printResult(o.json, { file: o.out, version: 1, root: policy.root }, [
    `wrote ${o.out}: draft policy version 1, root ${o.threshold} of ${keys.length} key${keys.length === 1 ? '' : 's'}`,
    `next: add roles, groups and admins (outpost policy add-role|add-group|add-admin --policy ${o.out} …), then sign it with the root key (outpost policy sign)`,
  ]);
  return 0;
});

const addAdminSpec = defineCommand({
  name: 'policy add-admin',
  summary:
    'add an admin with keys and roles (an existing admin gains them: rotate a key with add-admin, then revoke-key)',
  usage: 'outpost policy add-admin --policy FILE --name NAME --key KEY [--key KEY …] [--role ROLE …] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('NAME', 'the admin'),
    key: option(requiredListSchema('at least one admin key'), {
      placeholder: 'KEY',
      description: `an admin key: ${keyHelp}`,
    }),
    role: option(z.array(nameSchema).default([]), { placeholder: 'ROLE', description: 'a role defined with add-role' }),
    json,
  }),
  examples: [
    'outpost policy add-admin --policy fleet-policy.json --name alice --key <alice public key> --role ops --role enroller',
  ],
});

const addAdminCommand = subcommand(addAdminSpec, async (o) => {
  const keys = await resolvePublicKeys(addAdminSpec, 'key', o.key);
  return applyEdit(o.policy, o.json, (p) => addAdmin(p, { name: o.name, keys, roles: o.role }));
});

const removeAdminCommand = removeByNameCommand(
  'admin',
  'remove an admin (revoke a compromised key with revoke-key as well)',
  removeAdmin,
);

const addRoleSpec = defineCommand({
  name: 'policy add-role',
  summary: 'define a role: capabilities on hosts and groups (an existing role is replaced)',
  usage:
    'outpost policy add-role --policy FILE --name ROLE --capability C [--capability C …] [--host ID|* …] [--group GROUP …] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('ROLE', 'the role'),
    capability: option(
      z.array(capabilitySchema, { error: 'give at least one capability' }).min(1, 'give at least one capability'),
      { placeholder: 'C', description: `one of ${capabilitySchema.options.join(', ')}` },
    ),
    host: option(z.array(hostOrAllSchema).default([]), {
      placeholder: 'ID',
      description: "a host the role covers, or '*' for every host",
    }),
    group: option(z.array(nameSchema).default([]), {
      placeholder: 'GROUP',
      description: 'a group (add-group) whose hosts the role covers',
    }),
    json,
  }),
  examples: [
    "outpost policy add-role --policy fleet-policy.json --name ops --capability deploy --capability rollback --capability read --host '*'",
  ],
});

const addRoleCommand = subcommand(addRoleSpec, (o) =>
  applyEdit(o.policy, o.json, (p) =>
    addRole(p, { name: o.name, capabilities: o.capability, hosts: o.host, groups: o.group }),
  ),
);

const addGroupSpec = defineCommand({
  name: 'policy add-group',
  summary: 'define a group of hosts and how many admin signatures its intents need (an existing group is replaced)',
  usage: 'outpost policy add-group --policy FILE --name GROUP --host ID [--host ID …] [--threshold N] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('GROUP', 'the group'),
    host: option(z.array(hostIdSchema, { error: 'give at least one host' }).min(1, 'give at least one host'), {
      placeholder: 'ID',
      description: 'a host in the group',
    }),
    threshold: option(thresholdSchema.default(1), {
      placeholder: 'N',
      description: 'distinct admin signatures an intent for these hosts needs',
    }),
    json,
  }),
  examples: [
    'outpost policy add-group --policy fleet-policy.json --name production --host clinic-1 --host clinic-2 --threshold 2',
  ],
});

const addGroupCommand = subcommand(addGroupSpec, (o) =>
  applyEdit(o.policy, o.json, (p) => addGroup(p, { name: o.name, hosts: o.host, threshold: o.threshold })),
);

const setGroupWindowsSpec = defineCommand({
  name: 'policy set-group-windows',
  summary:
    "set when a group's hosts may start work and reboot: its maintenance and reboot windows and their time zone (replaces all three)",
  usage:
    'outpost policy set-group-windows --policy FILE --name GROUP [--maintenance-window WINDOW …] [--reboot-window WINDOW …] [--timezone ZONE] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('GROUP', 'the group (add-group)'),
    maintenanceWindow: option(z.array(windowSchema).default([]), {
      placeholder: 'WINDOW',
      description:
        'downloads and activations start only inside these windows, as the agent flag: "Tue 03:00-05:00", "Mon-Fri 22:00-06:00", "01:00-05:00"',
      defaultText: 'none: any time',
    }),
    rebootWindow: option(z.array(windowSchema).default([]), {
      placeholder: 'WINDOW',
      description: 'a kernel or initrd change reboots the host only inside these windows',
      defaultText: 'none: right away',
    }),
    timezone: option(timeZoneSchema.optional(), {
      placeholder: 'ZONE',
      description: 'IANA time zone of the windows',
      defaultText: "each host's --timezone, else its local time",
    }),
    json,
  }),
  examples: [
    'outpost policy set-group-windows --policy fleet-policy.json --name kinshasa-clinics --maintenance-window 01:00-05:00 --reboot-window 01:00-05:00 --timezone Africa/Kinshasa',
    'outpost policy set-group-windows --policy fleet-policy.json --name kinshasa-clinics      # no windows any more',
  ],
});

const setGroupWindowsCommand = subcommand(setGroupWindowsSpec, (o) =>
  applyEdit(o.policy, o.json, (p) =>
    setGroupWindows(p, {
      name: o.name,
      maintenanceWindows: o.maintenanceWindow.map((w) => w.text),
      rebootWindows: o.rebootWindow.map((w) => w.text),
      ...(o.timezone !== undefined ? { timeZone: o.timezone } : {}),
    }),
  ),
);

const addRelaySpec = defineCommand({
  name: 'policy add-relay',
  summary: 'allow a relay key to serve hosts or groups (an existing relay is replaced)',
  usage: 'outpost policy add-relay --policy FILE --name NAME --key KEY [--host ID|* …] [--group GROUP …] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('NAME', 'the relay'),
    key: option(fileSchema("the relay's key"), { placeholder: 'KEY', description: `the relay's key: ${keyHelp}` }),
    host: option(z.array(hostOrAllSchema).default([]), {
      placeholder: 'ID',
      description: "a host it serves, or '*' for every host",
    }),
    group: option(z.array(nameSchema).default([]), {
      placeholder: 'GROUP',
      description: 'a group whose hosts it serves',
    }),
    json,
  }),
});

const addRelayCommand = subcommand(addRelaySpec, async (o) => {
  const key = await resolvePublicKey(addRelaySpec, 'key', o.key);
  return applyEdit(o.policy, o.json, (p) => addRelay(p, { name: o.name, key, hosts: o.host, groups: o.group }));
});

const addLoginSpec = defineCommand({
  name: 'policy add-login',
  summary:
    'let a person log in with SSH as a local account on hosts or groups; agents write the keys for sshd (an existing login is replaced)',
  usage:
    'outpost policy add-login --policy FILE --name NAME --account ACCOUNT --ssh-key KEY|FILE [--ssh-key …] [--host ID|* …] [--group GROUP …] [--json]',
  options: z.object({
    policy: policyOption,
    name: nameOption('NAME', 'the person (or team) the keys belong to'),
    account: option(accountSchema, { placeholder: 'ACCOUNT', description: 'the local unix account they log in as' }),
    sshKey: option(requiredListSchema('at least one SSH public key'), {
      placeholder: 'KEY|FILE',
      description:
        "an OpenSSH public key ('ssh-ed25519 AAAA… alice@laptop'), or a .pub / authorized_keys-style file to take the keys from; no options (command=, from=) are allowed",
    }),
    host: option(z.array(hostOrAllSchema).default([]), {
      placeholder: 'ID',
      description: "a host they may log in to, or '*' for every host",
    }),
    group: option(z.array(nameSchema).default([]), {
      placeholder: 'GROUP',
      description: 'a group (add-group) whose hosts they may log in to',
    }),
    json,
  }),
  examples: [
    'outpost policy add-login --policy fleet-policy.json --name alice --account ops --ssh-key ~/.ssh/id_ed25519.pub --group kinshasa-clinics',
    'outpost policy add-login --policy fleet-policy.json --name alice --account ops --ssh-key "ssh-ed25519 AAAAC3… alice@laptop" --host clinic-1',
  ],
});

const addLoginCommand = subcommand(addLoginSpec, async (o) => {
  const sshKeys = await resolveSshPublicKeys(addLoginSpec, 'ssh-key', o.sshKey);
  return applyEdit(o.policy, o.json, (p) =>
    addLogin(p, { name: o.name, account: o.account, sshKeys, hosts: o.host, groups: o.group }),
  );
});

const removeLoginCommand = removeByNameCommand(
  'login',
  "remove a login: hosts delete its keys from the account's authorized keys when the version arrives",
  removeLogin,
);

const addTimestampKeySpec = defineCommand({
  name: 'policy add-timestamp-key',
  summary:
    "allow an online key to sign freshness timestamps (the coordinator's --timestamp-key); it can do nothing else",
  usage: 'outpost policy add-timestamp-key --policy FILE --key KEY [--json]',
  options: z.object({
    policy: policyOption,
    key: option(fileSchema('the timestamp key'), { placeholder: 'KEY', description: `the timestamp key: ${keyHelp}` }),
    json,
  }),
});

const addTimestampKeyCommand = subcommand(addTimestampKeySpec, async (o) => {
  const key = await resolvePublicKey(addTimestampKeySpec, 'key', o.key);
  return applyEdit(o.policy, o.json, (p) => addTimestampKey(p, key));
});

const revokeKeySpec = defineCommand({
  name: 'policy revoke-key',
  summary:
    'revoke a key: it is removed from admins, relays and timestamp keys and never counts again, even under older versions',
  usage: 'outpost policy revoke-key --policy FILE --key KEY [--json]',
  options: z.object({
    policy: policyOption,
    key: option(fileSchema('the key to revoke'), { placeholder: 'KEY', description: `the key to revoke: ${keyHelp}` }),
    json,
  }),
});

const revokeKeyCommand = subcommand(revokeKeySpec, async (o) => {
  const key = await resolvePublicKey(revokeKeySpec, 'key', o.key);
  return applyEdit(o.policy, o.json, (p) => revokeKey(p, key));
});

const rotateRootSpec = defineCommand({
  name: 'policy rotate-root',
  summary: 'replace the root keys in a draft; the version must then be signed by BOTH the previous and the new root',
  usage: 'outpost policy rotate-root --policy FILE --root-key KEY [--root-key KEY …] [--threshold N] [--json]',
  options: z.object({
    policy: policyOption,
    rootKey: option(requiredListSchema('at least one new root key'), {
      placeholder: 'KEY',
      description: `a new root key: ${keyHelp}`,
    }),
    threshold: option(thresholdSchema.optional(), {
      placeholder: 'N',
      description: 'how many new root keys must sign',
      defaultText: 'the current threshold',
    }),
    json,
  }),
  examples: [
    'outpost policy next --from v1.json --out v2.json && outpost policy rotate-root --policy v2.json --root-key /media/offline/root-2025.key',
  ],
});

const rotateRootCommand = subcommand(rotateRootSpec, async (o) => {
  const keys = await resolvePublicKeys(rotateRootSpec, 'root-key', o.rootKey);
  return applyEdit(o.policy, o.json, (p) => rotateRoot(p, { keys, threshold: o.threshold ?? p.root.threshold }));
});

const nextSpec = defineCommand({
  name: 'policy next',
  summary: 'start the draft of the next version: same content, version + 1, no signatures',
  usage: 'outpost policy next --from FILE --out FILE [--raise-epoch] [--json]',
  options: z.object({
    from: option(fileSchema('the current version (--from FILE)'), {
      placeholder: 'FILE',
      description: 'the current (signed) version',
    }),
    out: option(fileSchema('the draft file to create'), {
      placeholder: 'FILE',
      description: 'the draft to create; an existing file is never overwritten',
    }),
    raiseEpoch: option(z.boolean().default(false), {
      description:
        "raise the epoch: intents under this version outrank every intent of lower epochs (recovery from a stolen deploy key's huge generation)",
    }),
    json,
  }),
  examples: ['outpost policy next --from fleet-policy-v1.json --out fleet-policy-v2.json'],
});

const nextCommand = subcommand(nextSpec, async (o) => {
  const current = await readPolicyFile(o.from);
  const policy = nextVersion(current.policy, new Date(), o.raiseEpoch);
  await createPolicyFile(o.out, { policy, signatures: [] }, 'out');
  const notes = current.signatures.length
    ? []
    : [
        `${o.from} has no signatures: version ${policy.version} is only accepted once version ${current.policy.version} is`,
      ];
  printResult(o.json, { file: o.out, version: policy.version, epoch: policy.epoch, notes }, [
    `wrote ${o.out}: draft policy version ${policy.version} (epoch ${policy.epoch}), a copy of version ${current.policy.version} to edit`,
    ...notes.map((n) => `note: ${n}`),
    `it must be signed by ${current.policy.root.threshold} of version ${current.policy.version}'s root keys and by the threshold of its own root`,
  ]);
  return 0;
});

export const policyEditSubcommands: Subcommand[] = [
  initCommand,
  addAdminCommand,
  removeAdminCommand,
  addRoleCommand,
  addGroupCommand,
  setGroupWindowsCommand,
  addRelayCommand,
  addLoginCommand,
  removeLoginCommand,
  addTimestampKeyCommand,
  revokeKeyCommand,
  nextCommand,
  rotateRootCommand,
];
