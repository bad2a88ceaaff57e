import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurably } from '../../shared/node/durable-file.js';
import { signedIntentSchema } from '../../shared/schemas/intent.js';
import { activationActionSchema, generationSchema, storePathSchema } from '../../shared/schemas/primitives.js';
import { agentPhaseSchema, signedResultSchema } from '../../shared/schemas/report.js';
import { loadStateFile } from '../state-file.js';

// The agent's persisted state machine. Written with write-to-temp, fsync, rename, fsync(dir) on
// every phase change, so a crash or power loss resumes from the last completed step.
const appliedSchema = z.object({ generation: generationSchema, closure: storePathSchema, digest: z.string() });
export type AppliedGeneration = z.infer<typeof appliedSchema>;

const epochMsSchema = z.number().int().nonnegative();

// A switch-to-configuration (or bin/activate) run as a process of its own. Persisted *before* it
// is launched, so an agent killed at any moment finds it again: the wrapper that runs it writes
// its pid, output and exit status next to the state (activation-runner.ts).
export const activationRunSchema = z.object({
  id: z.string().regex(/^[A-Za-z0-9._-]{1,100}$/),
  runner: z.enum(['direct', 'systemd-run']),
  // The boot the run belongs to: a pid from another boot is not ours.
  bootId: z.string().nullable(),
  startedAt: epochMsSchema,
  deadline: epochMsSchema,
  command: z.string(),
});
export type ActivationRun = z.infer<typeof activationRunSchema>;

// What has been done for the current target, so every step resumes instead of starting over.
export const workSchema = z.object({
  // When phase is waiting-for-window: the step that waits for its window.
  waitingFor: z.enum(['download', 'activation', 'reboot']).nullable().default(null),
  downloadStartedAt: epochMsSchema.nullable().default(null),
  downloaded: z.boolean().default(false),
  // The action actually run: a `switch` that changes the kernel or initrd becomes `boot` + reboot.
  effectiveAction: activationActionSchema.nullable().default(null),
  rebootNeeded: z.boolean().default(false),
  rebootRequestedAt: epochMsSchema.nullable().default(null),
  // The boot in which the reboot was requested: a different boot id afterwards means it happened.
  rebootBootId: z.string().nullable().default(null),
  activation: activationRunSchema.nullable().default(null),
  confirmDeadline: epochMsSchema.nullable().default(null),
  // Set while the previously active generation is being re-activated after a failure.
  rollback: z.object({ reason: z.string(), outputTail: z.string() }).nullable().default(null),
});
export type Work = z.infer<typeof workSchema>;

export function freshWork(): Work {
  return workSchema.parse({});
}

export const HISTORY_LENGTH = 20;

// Reserved results kept at most (one per report in flight, plus any a restart has not written yet).
export const MAX_RESERVED_RESULTS = 16;

export const agentStateSchema = z.object({
  version: z.literal(1),
  phase: agentPhaseSchema,
  // What runs now, and what ran before it (the rollback target: the previously *active* system).
  applied: appliedSchema.nullable(),
  previous: appliedSchema.nullable(),
  // The intent being worked on while phase is waiting-for-window/downloading/activating/confirming.
  target: z.object({ signed: signedIntentSchema, digest: z.string() }).nullable(),
  work: workSchema.default(freshWork),
  // Generations applied here, newest last (bounded): what a rollback intent may name.
  history: z.array(appliedSchema).max(HISTORY_LENGTH).default([]),
  // Highest (policy epoch, generation) applied or attempted: nothing at or below it is ever
  // installed again.
  floorEpoch: z.number().int().nonnegative().default(0),
  floorGeneration: z.number().int().nonnegative(),
  // Set on a state created from nothing (first start, or a wiped state directory): the floor is
  // rebuilt from the host's own signed results before any intent is considered (floor.ts).
  floorUnverified: z.boolean().default(false),
  // The highest result number taken. Saved, with the signed result (reservedResults), before the
  // result is written to the status document: peers see every change of it at once, so a number
  // saved only afterwards could be lost by a stop in between and used again (status-publish.ts).
  resultSeq: z.number().int().nonnegative(),
  // Results whose number is taken but which may not be in the status document on disk yet: one
  // is dropped from here once that document is saved with it; a restart finds the rest here and
  // writes those its document (synced with a peer first) lacks, the same signed bytes.
  reservedResults: z.array(signedResultSchema).max(MAX_RESERVED_RESULTS).default([]),
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
    work: freshWork(),
    history: [],
    floorEpoch: 0,
    floorGeneration: 0,
    floorUnverified: true,
    resultSeq: 0,
    reservedResults: [],
    statusSeq: 0,
    handledDigests: [],
    lastResultSeq: null,
  };
}

export function stateFile(stateDir: string): string {
  return join(stateDir, 'state.json');
}

export async function loadAgentState(stateDir: string): Promise<AgentState> {
  return loadStateFile(stateFile(stateDir), {
    schema: agentStateSchema,
    missing: initialAgentState,
    fix: 'move it aside to start fresh (the anti-rollback floor is then rebuilt from results)',
  });
}

export async function saveAgentState(stateDir: string, state: AgentState): Promise<void> {
  await writeFileDurably(stateFile(stateDir), JSON.stringify(agentStateSchema.parse(state), null, 2));
}
