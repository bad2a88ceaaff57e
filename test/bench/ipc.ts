// Messages between the benchmark driver (dispatch.ts) and its agent worker processes
// (agent-worker.ts). Sent over the fork() IPC channel with serialization: 'advanced', so the
// bigint timestamps (process.hrtime.bigint(), CLOCK_MONOTONIC: one clock for all processes of
// the machine) arrive intact.

export interface StartCommand {
  type: 'start';
  serverUrl: string;
  hosts: string[];
  // Hosts connecting at once in this worker.
  batch: number;
  // Public key (base64) of the admin whose intents the simulated agents trust.
  adminPublicKey: string;
  // Give up connecting after this long.
  timeoutMs: number;
}

export interface StopCommand {
  // Stop renewing awareness and treat closes as expected (the server is about to go away).
  type: 'quiesce';
}

export interface ExitCommand {
  type: 'exit';
}

// deferred: report each new intent as 'delivered' when decoded and verify only on 'verify', so a
// burst of intents is timestamped on arrival without waiting behind the verifications of other
// simulated hosts in this process. inline: verify as they arrive (one per event-loop turn).
export interface ModeCommand {
  type: 'mode';
  verification: 'deferred' | 'inline';
}

export interface VerifyCommand {
  type: 'verify';
}

export type WorkerCommand = StartCommand | StopCommand | ExitCommand | ModeCommand | VerifyCommand;

export interface ProgressReport {
  type: 'progress';
  connected: number;
}

export interface ReadyReport {
  type: 'ready';
  connected: number;
  retries: number;
  setupMs: number;
}

export interface VerifiedReport {
  type: 'verified';
  host: string;
  generation: number;
  ok: boolean;
  reason: string | null;
  // Socket message handler entered (before decoding).
  receivedNs: bigint;
  // This message's handling began (after the messages that arrived with it were timestamped).
  handlingNs: bigint;
  // Update applied and the intents array read and parsed (readIntentEntries).
  decodedNs: bigint;
  // verifyIntent ran from verifyStartNs to verifiedNs.
  verifyStartNs: bigint;
  verifiedNs: bigint;
}

export interface DeliveredReport {
  type: 'delivered';
  host: string;
  generation: number;
  receivedNs: bigint;
  handlingNs: bigint;
  decodedNs: bigint;
}

export interface FailedReport {
  type: 'failed';
  error: string;
}

export interface UnexpectedCloseReport {
  type: 'unexpected-close';
  document: string;
  code: number;
  reason: string;
}

export type WorkerReport =
  | ProgressReport
  | ReadyReport
  | DeliveredReport
  | VerifiedReport
  | FailedReport
  | UnexpectedCloseReport;
