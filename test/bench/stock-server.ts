import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { setupWSConnection } from '@y/websocket-server/utils';
import { WebSocketServer } from 'ws';
import { documentGarbageCollects } from '../../shared/documents/names.js';

// The stock y-websocket server (@y/websocket-server 0.1.1, the last release for Yjs 13) as its
// own bin (src/server.js) runs it: an HTTP server whose upgrades go to a `ws` server, every
// connection handed to utils.js' setupWSConnection. Differences from the bin, all to make the
// comparison fair: the document name is given explicitly (the URL path), gc is off for desired
// documents and on for status documents exactly as in our coordinator, it listens on 127.0.0.1
// with the port from --port (0 = any), and it uses the project's ws 8 (the bin resolves ws 6).
// No persistence (YPERSISTENCE unset): y-leveldb does not fsync per update and compacts history
// (see /work/shared/reference/yjs-notes.md), so there is no configuration that does the work our
// coordinator's fsync'ed update log does; the stock figures are therefore a lower bound.
//
// The first stdout line is {"event":"listening","url":…,"port":…}, like `outpost coordinator`.
// The process exits when its stdin closes, so it never outlives the benchmark driver.

const { values } = parseArgs({
  options: { port: { type: 'string', default: '0' }, listen: { type: 'string', default: '127.0.0.1' } },
});
if (process.env.YPERSISTENCE !== undefined) {
  console.error(
    'stock-server: YPERSISTENCE is set; unset it, this benchmark runs the stock server without persistence',
  );
  process.exit(2);
}

const server = createServer((_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain' });
  res.end('okay');
});
const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const docName = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname).replace(/^\/+/, '');
  wss.handleUpgrade(req, socket, head, (ws) => {
    setupWSConnection(ws, req, { docName, gc: documentGarbageCollects(docName) });
  });
});

server.listen(Number(values.port), values.listen, () => {
  const { port } = server.address() as AddressInfo;
  console.log(JSON.stringify({ event: 'listening', url: `ws://${values.listen}:${port}`, port }));
});

const stop = (): void => {
  for (const ws of wss.clients) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
