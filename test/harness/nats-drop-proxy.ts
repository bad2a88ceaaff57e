import { type AddressInfo, connect, createServer, type Socket } from 'node:net';

// A TCP proxy between a NATS client (a coordinator) and one real nats-server that reads the
// server's side of the NATS client protocol (INFO, PING, MSG, HMSG… lines; a message's payload
// by its byte count) so it can drop one message on a chosen subject before the client sees it:
// a delivery lost without the client noticing, as the NATS soak saw around reconnects
// (docs/scale-out.md). `cut` resets the client's connections, so it reconnects (here or to a
// server it learnt of) and the coordinator's log reports that it may have missed entries.

export interface NatsDropProxy {
  // nats://127.0.0.1:PORT, to give the client as its only server.
  url: string;
  // Drops the next message on `subject` that the server sends to a client; resolves once it has.
  dropNext(subject: string): Promise<void>;
  cut(): void;
  close(): Promise<void>;
}

const CRLF = Buffer.from('\r\n');

// Splits the server's byte stream into whole protocol frames (a control line, with its payload
// for MSG and HMSG) and passes each on, or not.
function frameReader(
  forward: (frame: Buffer) => void,
  keep: (op: string, subject: string) => boolean,
): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0);
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let start = 0;
    for (;;) {
      const lineEnd = pending.indexOf(CRLF, start);
      if (lineEnd < 0) break;
      const line = pending.subarray(start, lineEnd).toString('latin1');
      const words = line.split(' ');
      const op = words[0]!.toUpperCase();
      let end = lineEnd + 2;
      if (op === 'MSG' || op === 'HMSG') {
        // MSG <subject> <sid> [reply] <bytes>; HMSG <subject> <sid> [reply] <header bytes> <total bytes>
        end += Number(words.at(-1)) + 2;
        if (pending.length < end) break;
      }
      if (keep(op, words[1] ?? '')) forward(pending.subarray(start, end));
      start = end;
    }
    pending = pending.subarray(start);
  };
}

export async function startNatsDropProxy(targetPort: number): Promise<NatsDropProxy> {
  const pairs = new Set<{ client: Socket; target: Socket }>();
  const drops: { subject: string; dropped: () => void }[] = [];
  const server = createServer((client) => {
    const target = connect(targetPort, '127.0.0.1');
    const pair = { client, target };
    pairs.add(pair);
    const end = (): void => {
      pairs.delete(pair);
      client.destroy();
      target.destroy();
    };
    client.on('error', end).on('close', end);
    target.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => target.write(chunk));
    target.on(
      'data',
      frameReader(
        (frame) => client.write(Buffer.from(frame)),
        (op, subject) => {
          if (op !== 'MSG' && op !== 'HMSG') return true;
          const index = drops.findIndex((drop) => drop.subject === subject);
          if (index < 0) return true;
          drops.splice(index, 1)[0]!.dropped();
          return false;
        },
      ),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `nats://127.0.0.1:${port}`,
    dropNext: (subject) => new Promise((resolve) => drops.push({ subject, dropped: resolve })),
    cut() {
      for (const { client, target } of pairs) {
        client.resetAndDestroy();
        target.destroy();
      }
      pairs.clear();
    },
    async close() {
      for (const { client, target } of pairs) {
        client.destroy();
        target.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
