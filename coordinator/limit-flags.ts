import type { z } from 'zod';
import { bytesSchema, numberSchema, option, secondsSchema } from '../cli/options.js';
import { DEFAULT_ENROLLMENT_LIMITS, type EnrollmentLimits } from './enrollment-limits.js';
import { DEFAULT_LIMITS, type ResourceLimits } from './limits.js';

// The resource-limit options, shared by `outpost coordinator` and `outpost relay` (both serve the
// same endpoint): spread into each command's options, and turned into limits by limitsFromOptions.
const countSchema = () => numberSchema('a whole number').int().min(1).max(10_000_000);

export const limitOptionsShape = {
  maxConnectionsPerAddress: option(countSchema().default(DEFAULT_LIMITS.maxConnectionsPerAddress), {
    placeholder: 'N',
    description:
      'open connections one client address may hold (behind a reverse proxy every client has the proxy address: raise it, and limit per client in the proxy)',
  }),
  maxPendingUpgrades: option(countSchema().default(DEFAULT_LIMITS.maxPendingUpgradesPerAddress), {
    placeholder: 'N',
    description: 'connections one address may hold that have not sent a complete request yet',
  }),
  upgradeTimeout: option(secondsSchema(3600).default(DEFAULT_LIMITS.upgradeTimeoutMs / 1000), {
    placeholder: 'SECONDS',
    description: 'drop a connection that has not sent a complete request (or websocket upgrade) by then',
  }),
  maxDocumentsPerConnection: option(countSchema().default(DEFAULT_LIMITS.maxDocumentsPerConnection), {
    placeholder: 'N',
    description: 'documents one relay link may hold open, and hosts it may report presence for',
  }),
  maxUpdateSize: option(bytesSchema().default(DEFAULT_LIMITS.maxUpdateBytes), {
    placeholder: 'BYTES',
    description: 'new content one update may add to a document; a bigger write is refused (close code 4413)',
  }),
  maxWriterBytesPerHour: option(bytesSchema().default(DEFAULT_LIMITS.maxWriterBytesPerHour), {
    placeholder: 'BYTES',
    description:
      'new content one writer (host, admin; a relay per document) may add per hour; beyond it writes are refused (4429) until the quota refills',
  }),
  maxDocumentSize: option(bytesSchema().default(DEFAULT_LIMITS.maxDocumentBytes), {
    placeholder: 'BYTES',
    description: 'largest state a document may grow to (what every reader syncs); writes past it are refused (4413)',
  }),
  maxValueDepth: option(countSchema().default(DEFAULT_LIMITS.maxValueDepth), {
    placeholder: 'N',
    description:
      'levels a value written into a document may nest (canonical JSON signs 64); a deeper write is refused (4413)',
  }),
  maxValueObjectsPerKib: option(countSchema().default(DEFAULT_LIMITS.maxValueObjectsPerKib), {
    placeholder: 'N',
    description:
      'objects and arrays the values of one update may hold per KiB of update (each costs ~100 bytes of memory in every server that opens the document); more is refused (4413)',
  }),
};

type LimitOptions = { [K in keyof typeof limitOptionsShape]: z.output<(typeof limitOptionsShape)[K]> };

export function limitsFromOptions(options: LimitOptions): ResourceLimits {
  return {
    maxConnectionsPerAddress: options.maxConnectionsPerAddress,
    maxPendingUpgradesPerAddress: options.maxPendingUpgrades,
    upgradeTimeoutMs: options.upgradeTimeout * 1000,
    maxDocumentsPerConnection: options.maxDocumentsPerConnection,
    maxUpdateBytes: options.maxUpdateSize,
    maxWriterBytesPerHour: options.maxWriterBytesPerHour,
    maxDocumentBytes: options.maxDocumentSize,
    maxValueDepth: options.maxValueDepth,
    maxValueObjectsPerKib: options.maxValueObjectsPerKib,
  };
}

// What strangers may make the coordinator store through POST /api/enroll (coordinator only: a relay
// forwards enrollment requests upstream and the coordinator judges them).
export const enrollmentOptionsShape = {
  enrollBurst: option(countSchema().default(DEFAULT_ENROLLMENT_LIMITS.perSourceBurst), {
    placeholder: 'N',
    description: 'fleet POSTs (enroll, approve, policy) one source (IPv4 address or IPv6 /64) may make in a burst',
  }),
  enrollRefill: option(secondsSchema(3600).default(DEFAULT_ENROLLMENT_LIMITS.perSourceRefillMs / 1000), {
    placeholder: 'SECONDS',
    description: 'after a burst, one more fleet POST per source every this many seconds',
  }),
  maxPendingEnrollments: option(countSchema().default(DEFAULT_ENROLLMENT_LIMITS.maxPending), {
    placeholder: 'N',
    description:
      'enrollment requests without a token kept at once, waiting for an admin; more are refused (429) until some expire or `outpost enroll clear`',
  }),
  pendingEnrollmentTtl: option(secondsSchema(365 * 24 * 3600).default(DEFAULT_ENROLLMENT_LIMITS.pendingTtlMs / 1000), {
    placeholder: 'SECONDS',
    description: 'a pending enrollment request not approved by then is dropped (the agent asks again every hour)',
  }),
};

type EnrollmentOptions = { [K in keyof typeof enrollmentOptionsShape]: z.output<(typeof enrollmentOptionsShape)[K]> };

export function enrollmentLimitsFromOptions(options: EnrollmentOptions): Partial<EnrollmentLimits> {
  return {
    perSourceBurst: options.enrollBurst,
    perSourceRefillMs: options.enrollRefill * 1000,
    maxPending: options.maxPendingEnrollments,
    pendingTtlMs: options.pendingEnrollmentTtl * 1000,
  };
}
