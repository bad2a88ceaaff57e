import { promises as fs } from 'node:fs';
import { credsAuthenticator, type NodeConnectionOptions } from '@nats-io/transport-node';
import type { NatsAccess } from './backend-option.js';

// Credentials and TLS for the connection to the NATS cluster (--nats-creds, --nats-token-file,
// --nats-tls-*). Files are read here, bounded, so a wrong path or a huge file is a clear error at
// start rather than a hang or a crash inside the client.
const MAX_SECRET_FILE = 64 * 1024;

async function readSecret(file: string, flag: string): Promise<string> {
  let stat: Awaited<ReturnType<typeof fs.stat>>;
  try {
    stat = await fs.stat(file);
  } catch (error) {
    throw new Error(
      `${flag} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}; check the path`,
    );
  }
  if (!stat.isFile() || stat.size > MAX_SECRET_FILE)
    throw new Error(`${flag} ${file}: expected a file of at most ${MAX_SECRET_FILE} bytes`);
  return fs.readFile(file, 'utf8');
}

export async function natsAccessOptions(access: NatsAccess | undefined): Promise<Partial<NodeConnectionOptions>> {
  if (!access) return {};
  const options: Partial<NodeConnectionOptions> = {};
  if (access.credsFile) {
    const creds = await readSecret(access.credsFile, '--nats-creds');
    if (!/-----BEGIN NATS USER JWT-----/.test(creds) || !/-----BEGIN USER NKEY SEED-----/.test(creds))
      throw new Error(
        `--nats-creds ${access.credsFile}: not a NATS credentials file (expected a user JWT and an NKey seed block, as nsc writes)`,
      );
    options.authenticator = credsAuthenticator(new TextEncoder().encode(creds));
  }
  if (access.tokenFile) {
    const token = (await readSecret(access.tokenFile, '--nats-token-file')).trim();
    if (!token || /\s/.test(token))
      throw new Error(`--nats-token-file ${access.tokenFile}: expected one token on one line`);
    options.token = token;
  }
  if (access.tlsCa || access.tlsCert) {
    // Read up front only to fail early with the flag's name; the client reads the files itself.
    if (access.tlsCa) await readSecret(access.tlsCa, '--nats-tls-ca');
    if (access.tlsCert) await readSecret(access.tlsCert, '--nats-tls-cert');
    if (access.tlsKey) await readSecret(access.tlsKey, '--nats-tls-key');
    options.tls = {
      ...(access.tlsCa ? { caFile: access.tlsCa } : {}),
      ...(access.tlsCert ? { certFile: access.tlsCert } : {}),
      ...(access.tlsKey ? { keyFile: access.tlsKey } : {}),
    };
  }
  return options;
}

// What to do about a failed connection, by what the client said.
export function natsConnectHint(message: string): string {
  if (/authorization|authentication|user.*(expired|revoked)/i.test(message))
    return 'the cluster refused the credentials: check --nats-creds or --nats-token-file';
  if (/tls|certificate|ssl|self.signed|CERT_|ERR_TLS/i.test(message))
    return 'TLS failed: check --nats-tls-ca (and --nats-tls-cert/--nats-tls-key if the servers verify clients) and that the servers run with TLS';
  return 'is nats-server running with -js there?';
}
