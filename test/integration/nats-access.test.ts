import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { removeDirectory, runCli, temporaryDirectory, waitFor } from '../harness/processes.js';

// A NATS server that requires a token and TLS (its certificate from a CA made here with openssl;
// it names localhost too: the Node client checks a server given by IP address against
// "localhost", docs/scale-out.md),
// and coordinators connecting to it: with --nats-token-file and --nats-tls-ca they store and serve
// documents; without the token, with a wrong one, or without the CA they refuse to start and say
// which flag to check.
const test = suite('coordinator to NATS with credentials and TLS');
const dir = temporaryDirectory('nats-access');
const files = {
  caKey: join(dir, 'ca.key'),
  ca: join(dir, 'ca.pem'),
  serverKey: join(dir, 'server.key'),
  serverCsr: join(dir, 'server.csr'),
  server: join(dir, 'server.pem'),
  ext: join(dir, 'server.ext'),
  token: join(dir, 'token'),
  wrongToken: join(dir, 'wrong-token'),
};
let cluster: NatsCluster;
const onCluster = clusterCoordinators(dir, ['--nats-replicas', '1']);
const clients: DocumentConnection[] = [];

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' });
}

test.before(async () => {
  await fs.mkdir(dir, { recursive: true });
  // A new P-256 key and either a self-signed CA certificate or a request for the server's.
  const newKey = (key: string, out: string, subject: string, selfSigned: boolean): void =>
    openssl(
      ...[
        'req',
        ...(selfSigned ? ['-x509', '-days', '2'] : []),
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
      ],
      ...['-nodes', '-keyout', key, '-out', out, '-subj', subject],
    );
  newKey(files.caKey, files.ca, '/CN=outpost test CA', true);
  newKey(files.serverKey, files.serverCsr, '/CN=127.0.0.1', false);
  await fs.writeFile(files.ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  openssl(
    'x509',
    '-req',
    '-in',
    files.serverCsr,
    '-CA',
    files.ca,
    '-CAkey',
    files.caKey,
    '-CAcreateserial',
    '-out',
    files.server,
    '-days',
    '2',
    '-extfile',
    files.ext,
  );
  await fs.writeFile(files.token, 's3cret-token-for-the-test\n', { mode: 0o600 });
  await fs.writeFile(files.wrongToken, 'not-the-token\n', { mode: 0o600 });
  cluster = await startNatsCluster(join(dir, 'nats'), 1, [
    '--auth',
    's3cret-token-for-the-test',
    '--tls',
    '--tlscert',
    files.server,
    '--tlskey',
    files.serverKey,
  ]);
});

test.after(async () => {
  for (const client of clients) client.close();
  await onCluster.stopAll();
  await cluster?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('with the token file and the CA a coordinator stores and serves documents', async () => {
  const coordinator = await onCluster.start(cluster, 'ok', [
    '--nats-token-file',
    files.token,
    '--nats-tls-ca',
    files.ca,
  ]);
  const writer = connectDocument(coordinator.url, 'hosts/h1/desired', { identity: null, maxBackoffMs: 500 });
  clients.push(writer);
  await waitForSync(writer, 10_000);
  writer.doc.getArray('log').push(['through-tls']);
  await waitFor('the write to be stored and served to a second reader', async () => {
    const reader = connectDocument(coordinator.url, 'hosts/h1/desired', { identity: null, maxBackoffMs: 500 });
    clients.push(reader);
    await waitForSync(reader, 10_000);
    return reader.doc.getArray('log').toArray().includes('through-tls');
  });
});

for (const [what, flags, expected] of [
  ['no token', ['--nats-tls-ca', files.ca], /refused the credentials: check --nats-creds or --nats-token-file/],
  ['a wrong token', ['--nats-token-file', files.wrongToken, '--nats-tls-ca', files.ca], /refused the credentials/],
  [
    'no CA (the server certificate is not trusted)',
    ['--nats-token-file', files.token],
    /TLS failed: check --nats-tls-ca/,
  ],
  [
    'a token file that does not exist',
    ['--nats-token-file', join(dir, 'missing')],
    /--nats-token-file .*missing: ENOENT; check the path/,
  ],
] as const) {
  test(`with ${what} the coordinator does not start and says which flag to check`, async () => {
    const result = await runCli(
      [
        'coordinator',
        '--data-dir',
        join(dir, 'refused'),
        '--port',
        '0',
        '--backend',
        cluster.backend,
        '--nats-replicas',
        '1',
        ...flags,
      ],
      { timeoutMs: 60_000 },
    );
    assert.is.not(result.code, 0, 'it must not run');
    assert.match(result.stdout + result.stderr, expected);
  });
}

test('--nats-creds and --nats-token-file together, or a client certificate without its key, are refused before anything starts', async () => {
  for (const [flags, expected] of [
    [['--nats-creds', files.token, '--nats-token-file', files.token], /--nats-creds or --nats-token-file, not both/],
    [['--nats-tls-cert', files.server], /both --nats-tls-cert and --nats-tls-key/],
  ] as const) {
    const result = await runCli(['coordinator', '--backend', cluster.backend, ...flags]);
    assert.is(result.code, 2, result.stderr);
    assert.match(result.stderr, expected);
  }
});

test.run();
