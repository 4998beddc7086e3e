// Run inside a guest namespace (plain Node): several requests, one after the other, on ONE
// keep-alive connection to 169.254.169.254:80, each sent once the previous answer is complete.
// Prints one JSON line: the connection's local port and, per request, status, headers and body.
// "{token}" in a header value is replaced by the body of the last 200 answer to a PUT.
//   node keepalive.mjs '[{"method":"GET","path":"/...","headers":{"k":"v"}}, ...]'
import net from 'node:net';

const requests = JSON.parse(process.argv[2]);
const sock = net.connect({ host: '169.254.169.254', port: 80 });
await new Promise((resolve, reject) => {
  sock.once('connect', resolve);
  sock.once('error', reject);
});
sock.setTimeout(10_000, () => sock.destroy(new Error('no answer within 10 s')));
let buffered = Buffer.alloc(0);
let wake;
let failure;
sock.on('data', (c) => {
  buffered = Buffer.concat([buffered, c]);
  wake?.();
});
sock.on('error', (e) => {
  failure = e;
  wake?.();
});
sock.on('close', () => {
  failure ??= new Error('closed by the server');
  wake?.();
});

/** The next complete answer (every answer here carries content-length). */
async function answer(method) {
  for (;;) {
    const end = buffered.indexOf('\r\n\r\n');
    if (end >= 0) {
      const lines = buffered.subarray(0, end).toString('latin1').split('\r\n');
      const status = Number(lines[0].split(' ')[1]);
      const headers = {};
      for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
      const length = method === 'HEAD' ? 0 : Number(headers['content-length'] ?? 0);
      if (buffered.length >= end + 4 + length) {
        const body = buffered.subarray(end + 4, end + 4 + length).toString('latin1');
        buffered = buffered.subarray(end + 4 + length);
        return { status, headers, body };
      }
    }
    if (failure) throw failure;
    await new Promise((r) => (wake = r));
  }
}

const port = sock.localPort;
const out = [];
let token = '';
for (const r of requests) {
  const headers = Object.entries(r.headers ?? {})
    .map(([k, v]) => `${k}: ${String(v).replace('{token}', token)}\r\n`)
    .join('');
  sock.write(`${r.method} ${r.path} HTTP/1.1\r\nHost: 169.254.169.254\r\n${headers}\r\n`);
  const a = await answer(r.method);
  if (r.method === 'PUT' && a.status === 200) token = a.body;
  out.push(a);
}
sock.end();
console.log(JSON.stringify({ port, answers: out }));
