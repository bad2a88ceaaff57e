import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { signatureSchema } from '../shared/crypto/signatures.js';
import { writeFileDurably } from '../shared/node/durable-file.js';
import { describeIssues, readJsonFile } from '../shared/node/json-file.js';
import { policySchema, type SignedPolicy, unknownPolicyFields } from '../shared/schemas/policy.js';

// A policy file is what the coordinator accepts at POST /api/policy ({ policy, signatures }),
// except that a draft may have no signatures yet: it is edited and passed between the org root
// holders (offline machines) as a file until enough of them have signed.
export const draftPolicySchema = z.object({ policy: policySchema, signatures: z.array(signatureSchema).max(32) });
export type DraftPolicy = z.infer<typeof draftPolicySchema>;

// Moved to the Node adapters (the agent reads token files too); kept here for admin's importers.
export { describeIssues, readJsonFile };

export async function readPolicyFile(path: string): Promise<DraftPolicy> {
  const draft = await readJsonFile(
    path,
    draftPolicySchema,
    'policy file',
    `fix it, or start a draft with 'outpost policy init --out ${path} --root-key …'`,
  );
  // Readers keep fields they do not know (a newer outpost wrote them); in a file being authored
  // or signed such a field is a typo that would silently mean nothing.
  const unknown = unknownPolicyFields(draft.policy);
  if (unknown.length > 0) {
    throw new Error(
      `policy file ${path} has fields this outpost does not know: ${unknown.join(', ')}; fix their spelling (see docs/trust.md for the fields), or use the outpost version that wrote them`,
    );
  }
  return draft;
}

// What the coordinator and readers accept: at least one signature.
export async function readSignedPolicyFile(path: string): Promise<SignedPolicy> {
  const draft = await readPolicyFile(path);
  if (draft.signatures.length === 0) {
    throw new Error(
      `policy file ${path} (version ${draft.policy.version}) has no signatures yet; sign it with 'outpost policy sign --policy ${path} --key ROOT-KEY-FILE'`,
    );
  }
  return draft;
}

function policyFileText(draft: DraftPolicy): string {
  return `${JSON.stringify(draftPolicySchema.parse(draft), null, 2)}\n`;
}

// Rewrites an existing policy file atomically: a crash leaves the old or the new file, never half.
export async function writePolicyFile(path: string, draft: DraftPolicy): Promise<void> {
  await writeFileDurably(path, policyFileText(draft));
}

// New files (a fresh draft, an enrollment token) never replace an existing one: overwriting a
// signed policy or a token by accident loses signatures that took an offline ceremony to make.
export async function createFileExclusively(path: string, text: string, flag: string): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true });
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(path, 'wx', 0o600);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST')
      throw new Error(
        `--${flag}: ${path} already exists and is never overwritten; choose another file or remove it deliberately`,
      );
    throw new Error(`--${flag}: cannot create ${path}: ${(error as Error).message}`);
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function createPolicyFile(path: string, draft: DraftPolicy, flag: string): Promise<void> {
  await createFileExclusively(path, policyFileText(draft), flag);
}
