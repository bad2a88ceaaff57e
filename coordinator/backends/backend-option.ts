import { z } from 'zod';
import { numberSchema, option } from '../../cli/options.js';

// Where the coordinator keeps its update log: `level` (the embedded LevelDB in --data-dir, the
// default) or `nats://host:4222,host2:4222` (a NATS JetStream cluster several coordinators share).

export interface NatsBackend {
  kind: 'nats';
  servers: string[];
  stream: string;
  replicas: number;
  access?: NatsAccess;
}

export type LogBackend = { kind: 'level' } | NatsBackend;

const MAX_SERVERS = 16;
const hostPort = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/;

// `level`, or nats:// followed by comma-separated host:port pairs (each may repeat nats://).
export const backendSchema = z
  .string()
  .max(2000, 'at most 2000 characters')
  .transform((text, ctx): { kind: 'level' } | { kind: 'nats'; servers: string[] } => {
    if (text === 'level') return { kind: 'level' };
    if (!text.startsWith('nats://')) {
      ctx.addIssue({
        code: 'custom',
        message: `expected "level" or nats://HOST:PORT[,HOST:PORT…], got ${JSON.stringify(text.slice(0, 80))}`,
      });
      return z.NEVER;
    }
    const parts = text
      .slice('nats://'.length)
      .split(',')
      .map((part) => part.trim().replace(/^nats:\/\//, ''));
    const bad = parts.find((part) => !hostPort.test(part) || Number(part.slice(part.lastIndexOf(':') + 1)) > 65535);
    if (bad !== undefined || parts.length === 0 || parts.length > MAX_SERVERS) {
      ctx.addIssue({
        code: 'custom',
        message:
          bad !== undefined
            ? `${JSON.stringify(bad.slice(0, 80))} is not HOST:PORT; write nats://HOST:PORT[,HOST:PORT…] (at most ${MAX_SERVERS} servers)`
            : `give 1 to ${MAX_SERVERS} servers: nats://HOST:PORT[,HOST:PORT…]`,
      });
      return z.NEVER;
    }
    return { kind: 'nats', servers: parts.map((part) => `nats://${part}`) };
  });

// JetStream stream names: letters, digits, - and _ (the stream's subjects use it in lower case).
export const streamNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,32}$/, 'expected 1-32 letters, digits, - or _ (a JetStream stream name)');

export const replicasSchema = numberSchema('a number of replicas')
  .int()
  .min(1)
  .max(5, 'JetStream keeps at most 5 replicas of a stream');

export function natsBackendText(backend: Pick<NatsBackend, 'servers' | 'stream'>): string {
  return `${backend.servers.join(',')} (stream ${backend.stream})`;
}

// The stream, for `outpost coordinator` and `outpost coordinator migrate` alike.
export const natsStreamOptionsShape = {
  natsStream: option(streamNameSchema.default('OUTPOST'), {
    placeholder: 'NAME',
    description: 'JetStream stream of the update log (with a nats:// backend)',
  }),
  natsReplicas: option(replicasSchema.default(3), {
    placeholder: 'N',
    description: 'replicas of the stream when it is created (1 for a single nats-server)',
  }),
};

// How a coordinator proves itself to the NATS cluster and checks the servers (files, never
// secrets on the command line, which `ps` shows to every local user).
export interface NatsAccess {
  credsFile?: string | undefined;
  tokenFile?: string | undefined;
  tlsCa?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
}

// Spread into `outpost coordinator` and `outpost coordinator migrate`, with natsAccessRules.
export const natsAccessOptionsShape = {
  natsCreds: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description:
      'NATS credentials file (.creds: user JWT and NKey seed, e.g. from nsc) for a cluster with decentralised auth',
  }),
  natsTokenFile: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description: 'file holding the token of a NATS cluster with token authorization',
  }),
  natsTlsCa: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description:
      'PEM CA certificate the NATS servers must present a certificate from; the connection then requires TLS',
  }),
  natsTlsCert: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description: 'PEM client certificate for NATS servers that verify clients (needs --nats-tls-key)',
  }),
  natsTlsKey: option(z.string().min(1).optional(), {
    placeholder: 'FILE',
    description: 'PEM private key for --nats-tls-cert',
  }),
};

type NatsAccessOptions = { [K in keyof typeof natsAccessOptionsShape]?: string | undefined };

const natsAccessRules: { check: (o: NatsAccessOptions) => boolean; message: string; path: string[] }[] = [
  {
    check: (o) => o.natsCreds === undefined || o.natsTokenFile === undefined,
    message: 'give --nats-creds or --nats-token-file, not both',
    path: ['natsCreds'],
  },
  {
    check: (o) => (o.natsTlsCert === undefined) === (o.natsTlsKey === undefined),
    message: 'give both --nats-tls-cert and --nats-tls-key, or neither',
    path: ['natsTlsCert'],
  },
];

export function refineNatsAccess(o: NatsAccessOptions, ctx: z.RefinementCtx): void {
  for (const rule of natsAccessRules)
    if (!rule.check(o)) ctx.addIssue({ code: 'custom', message: rule.message, path: rule.path });
}

export function natsAccessFrom(o: NatsAccessOptions): NatsAccess {
  return {
    credsFile: o.natsCreds,
    tokenFile: o.natsTokenFile,
    tlsCa: o.natsTlsCa,
    tlsCert: o.natsTlsCert,
    tlsKey: o.natsTlsKey,
  };
}
