import { type CommandGroup, runGroup } from './policy-cli-kit.js';
import { policyEditSubcommands } from './policy-edit-commands.js';
import { policyTrustSubcommands } from './policy-sign-commands.js';

// `outpost policy`: the org root key stays offline, so policies travel as files. A draft is
// created (init, next), edited, signed by enough root keys, verified, then pushed; the coordinator
// and every reader check it again.
export const policyCommandGroup: CommandGroup = {
  name: 'policy',
  summary: 'write, sign, verify and publish the signed fleet policy (who may do what on which hosts)',
  subcommands: [...policyEditSubcommands, ...policyTrustSubcommands],
  notes: [
    'A policy file is {policy, signatures}. Editing a signed file clears its signatures; sign again.',
    'Workflow: init → add-role / add-group / add-admin … → sign → verify → push; later: next → edits → sign → verify --previous → push.',
  ],
};

export function runPolicyCommand(argv: string[]): Promise<number> {
  return runGroup(policyCommandGroup, argv);
}
