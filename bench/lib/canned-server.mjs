// The floor: the least a Node.js server can do on this path. It answers every request on a
// connection with one canned response (no identity, no parsing, no routing), from N event loops
// sharing each namespace's port through SO_REUSEPORT, or through node:http ('http' mode). Used by
// `npm run bench -- --only floor` to show where Node itself stands against the lighttpd peer.
//   node canned-server.mjs raw|http NS1,NS2,... [THREADS]
import { createRequire } from 'node:module';
import net from 'node:net';
import http from 'node:http';
import { Worker, isMainThread, workerData } from 'node:worker_threads';
const require = createRequire(new URL('../../package.json', import.meta.url));
const addon = require('imds-netns');
const [mode, nsList, workers] = isMainThread
  ? [process.argv[2], process.argv[3].split(','), Number(process.argv[4] ?? 1)]
  : [workerData.mode, workerData.nsList, 1];
const body = Buffer.from(
  '{"uuid": "b0000000-0000-4000-8000-000000000000", "hostname": "vm-0-0.novalocal", "name": "vm-0-0", "launch_index": 0, ' +
    '"availability_zone": "nova", "project_id": "x"}',
);
const resp = Buffer.concat([
  Buffer.from(
    `HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ${body.length}\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n`,
  ),
  body,
]);
function serve() {
  for (const ns of nsList) {
    const fd = addon.listenInNetns('/run/netns/' + ns, '0.0.0.0', 8775, 4096, true);
    if (mode === 'raw') {
      const srv = net.createServer({ noDelay: true }, (s) => {
        s.on('data', (d) => {
          let i = 0;
          while ((i = d.indexOf('\r\n\r\n', i)) !== -1) {
            s.write(resp);
            i += 4;
          }
        });
        s.on('error', () => {});
      });
      srv.listen({ fd });
    } else {
      const srv = http.createServer((req, res) => {
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
        res.end(body);
      });
      srv.listen({ fd });
    }
  }
}
if (isMainThread && workers > 1) {
  for (let i = 1; i < workers; i++) new Worker(new URL(import.meta.url), { workerData: { mode, nsList } });
}
serve();
console.log('serving', mode, workers);
