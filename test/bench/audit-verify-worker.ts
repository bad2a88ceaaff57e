import { parentPort, workerData } from 'node:worker_threads';
import { nodeEd25519Verify } from '../../shared/node/ed25519.js';

// The raw Node Ed25519 rate in one of N threads (test/bench/audit.ts): the ceiling for the audit.
const { message, signature, publicKey, count } = workerData as {
  message: Uint8Array;
  signature: Uint8Array;
  publicKey: Uint8Array;
  count: number;
};
for (let i = 0; i < count; i += 1)
  if (!nodeEd25519Verify(message, signature, publicKey)) throw new Error('verify failed');
parentPort?.postMessage('done');
