import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { signedIntentSchema } from '../shared/schemas/intent.js';
import { agentPhaseSchema } from '../shared/schemas/report.js';
import { generationSchema, storePathSchema } from '../shared/schemas/primitives.js';

// The agent's persisted state machine. Written with write-to-temp, fsync, rename, fsync(dir) on
// every phase change, so a crash or power loss resumes from the last completed step.
const appliedSchema = z.object({ generation: generationSchema, closure: storePathSchema, digest: z.string() });
export type AppliedGeneration = z.infer<typeof appliedSchema>;

export const agentStateSchema = z.object({
  version: z.literal(1),
  phase: agentPhaseSchema,
  // What runs now, and what ran before it (the rollback target: the previously *active* system).
  applied: appliedSchema.nullable(),
  previous: appliedSchema.nullable(),
  // The intent being worked on while phase is downloading/activating/confirming.
  target: z.object({ signed: signedIntentSchema, digest: z.string() }).nullable(),
  // Highest generation applied or attempted: nothing at or below it is ever installed again.
  floorGeneration: z.number().int().nonnegative(),
  resultSeq: z.number().int().nonnegative(),
  statusSeq: z.number().int().nonnegative(),
  // Intents already answered (attempted, refused or superseded), so each gets at most one result.
  handledDigests: z.array(z.string()),
  lastResultSeq: z.number().int().nonnegative().nullable(),
});
export type AgentState = z.infer<typeof agentStateSchema>;

export function initialAgentState(): AgentState {
  return {
    version: 1,
    phase: 'idle',
    applied: null,
    previous: null,
    target: null,
    floorGeneration: 0,
    resultSeq: 0,
    statusSeq: 0,
    handledDigests: [],
    lastResultSeq: null,
  };
}

export async function writeFileDurably(path: string, data: string | Uint8Array): Promise<void> {
  const temporary = `${path}.tmp-${process.pid}`;
  const handle = await fs.open(temporary, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(temporary, path);
  const dir = await fs.open(join(path, '..'), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

export function stateFile(stateDir: string): string {
  return join(stateDir, 'state.json');
}

export async function loadAgentState(stateDir: string): Promise<AgentState> {
  let text: string;
  try {
    text = await fs.readFile(stateFile(stateDir), 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return initialAgentState();
    throw error;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${stateFile(stateDir)} is not valid JSON; move it aside to start fresh (the anti-rollback floor is then rebuilt from results)`);
  }
  const parsed = agentStateSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(`${stateFile(stateDir)} is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  }
  return parsed.data;
}

export async function saveAgentState(stateDir: string, state: AgentState): Promise<void> {
  await writeFileDurably(stateFile(stateDir), JSON.stringify(agentStateSchema.parse(state), null, 2));
}
