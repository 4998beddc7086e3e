// Run inside a guest namespace (plain Node): a bounded, seeded fuzz run against 169.254.169.254:80.
// Malformed request lines, random methods and paths (traversal, encodings, junk bytes), huge
// headers, broken chunked and oversized bodies, pipelined or one per connection. Prints one JSON
// line: requests sent, responses by status, any response containing one of the FORBIDDEN markers
// (another VM's data), and every connection that got no status line at all, classified:
//
//   owed                 it sent a complete request head and got nothing, for no reason below: a
//                        fault (a handler that drops the socket, a stall past the client's 30 s
//                        idle timeout, a connection never accepted). The test wants none.
//   reset_while_sending  the server reset the connection while this client still had bytes to
//                        write, and the write error reached Node before the answer in the socket's
//                        receive queue did: Node destroys the socket on the write error and the
//                        answer is never read (Python's recv() after the failed send reads it).
//                        The server sent a status line; the test checks each one on the wire
//                        (`resets` lists them: local port and times).
//   no_complete_head     it never got a complete request head out (nothing is owed; node:http
//                        answers 400 at the client's EOF anyway, so this stays empty in practice).
//
//   node fuzz.mjs REQUESTS CONCURRENCY SEED FORBIDDEN_MARKER...
import net from 'node:net';

const [total, concurrency, seed, ...forbidden] = process.argv.slice(2);
const TOTAL = Number(total);
let state = Number(seed) >>> 0 || 1;
function rnd(n) {
  // xorshift32: reproducible from the seed
  state ^= state << 13;
  state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5;
  state >>>= 0;
  return state % n;
}
const pick = (xs) => xs[rnd(xs.length)];
const METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'TRACE',
  'CONNECT',
  'PROPFIND',
  'get',
  'G ET',
  '',
  'GET\0',
  'X'.repeat(100),
];
const PATHS = [
  '/',
  '/openstack',
  '/openstack/latest/meta_data.json',
  '/openstack/latest/user_data',
  '/openstack/latest/password',
  '/openstack/2012-08-10/meta_data.json',
  '/latest/meta-data/',
  '/latest/meta-data/instance-id',
  '/latest/user-data',
  '/latest/api/token',
  '/2009-04-04/meta-data/public-keys/0/openssh-key',
  '/ec2/latest/meta-data/',
  '/../../etc/passwd',
  '/openstack/../../../etc/shadow',
  '/%2e%2e/%2e%2e/etc/passwd',
  '/openstack/latest/%2e%2e/%2e%2e/x',
  '/%',
  '/%zz',
  '/%00',
  '/openstack//latest///meta_data.json',
  '/openstack/latest/meta_data.json?x=1&y=../../',
  '/openstack/latest/meta_data.json#frag',
  '*',
  'http://169.254.169.254/latest/meta-data/',
  '//evil.example/',
  '/\\..\\..\\',
  '/latest/meta-data/' + 'a/'.repeat(500),
  '/' + '%41'.repeat(2000),
  '/v1/vms',
  '/metrics',
];
const VERSIONS = ['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1 extra', 'HTTX/1.1', ''];
function junk(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += String.fromCharCode(rnd(256));
  return s;
}
function randomPath() {
  switch (rnd(6)) {
    case 0:
      return junk(1 + rnd(40));
    case 1:
      return `${pick(PATHS)}${junk(rnd(8))}`;
    default:
      return pick(PATHS);
  }
}
/** One request's bytes. */
function request() {
  const kind = rnd(12);
  const host = 'Host: 169.254.169.254\r\n';
  switch (kind) {
    case 0:
      return `${pick(METHODS)} ${randomPath()} ${pick(VERSIONS)}\r\n${host}\r\n`;
    case 1:
      return `GET ${pick(PATHS)} HTTP/1.1\r\n${host}X-Big: ${'x'.repeat(8000 + rnd(40000))}\r\n\r\n`;
    case 2:
      return `GET ${pick(PATHS)} HTTP/1.1\r\n${host}${Array.from({ length: 50 + rnd(300) }, (_, i) => `X-H${i}: ${junk(10)}`).join('\r\n')}\r\n\r\n`;
    case 3:
      return (
        `POST ${pick(PATHS)} HTTP/1.1\r\n${host}Transfer-Encoding: ` +
        `chunked\r\n\r\n${pick(['zz\r\nabc\r\n', '5\r\nab', 'ffffffffffffffff\r\n', '3\r\nabc\r\n0\r\n', '-1\r\n\r\n'])}\r\n`
      );
    case 4:
      return (
        `POST /openstack/latest/password HTTP/1.1\r\n${host}Content-Length: ` +
        `${pick(['5000', '-1', 'abc', '99999999999999999999', '10, 20'])}\r\n\r\n${junk(rnd(100))}`
      );
    case 5:
      return (
        `PUT /latest/api/token HTTP/1.1\r\n${host}X-aws-ec2-metadata-token-ttl-seconds: ` +
        `${pick(['0', '1', '21600', '21601', '-5', 'x', '1e3', ' 60 ', junk(5)])}\r\n${rnd(2) ? 'X-Forwarded-For: 1.2.3.4\r\n' : ''}\r\n`
      );
    case 6:
      return `GET ${pick(PATHS)} HTTP/1.1\r\n${host}X-aws-ec2-metadata-token: ${pick(['', 'x', 'A'.repeat(50), junk(30), 'A'.repeat(10000)])}\r\n\r\n`;
    case 7:
      return `GET ${pick(PATHS)} HTTP/1.1\r\n${host}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`;
    case 8:
      return `GET ${pick(PATHS)} HTTP/1.1\r\n${host} folded: x\r\n\r\n`;
    case 9:
      return junk(1 + rnd(200)) + '\r\n\r\n';
    case 10:
      return `GET ${pick(PATHS)} HTTP/1.1\n${host.replace('\r\n', '\n')}\n`;
    default:
      return `${pick(['GET', 'HEAD'])} ${pick(PATHS)} HTTP/1.1\r\n${host}Connection: keep-alive\r\n\r\n`;
  }
}

const statuses = {};
let sent = 0;
let connections = 0;
const leaks = [];
const forbiddenBufs = forbidden.map((f) => Buffer.from(f));
const silent = { owed: 0, reset_while_sending: 0, no_complete_head: 0 };
const owedSamples = [];
/** reset_while_sending connections: local port, connect and close times (epoch ms), for the wire check. */
const resets = [];

/** End of the first request head in `text` (index after its blank line), or -1. */
function firstHeadEnd(text) {
  const m = /\r?\n\r?\n/.exec(text);
  return m === null ? -1 : m.index + m[0].length;
}

function connection() {
  return new Promise((resolve) => {
    const batch = 1 + rnd(8);
    const reqs = Array.from({ length: batch }, request);
    const payload = reqs.join('');
    sent += batch;
    connections++;
    const chunks = [];
    let t0 = 0;
    let port = 0;
    let written = 0; // bytes the kernel took (write callbacks without error)
    let writeError; // the error of a write that failed
    let timedOut = false;
    const sock = net.connect({ host: '169.254.169.254', port: 80 });
    const write = (part, last) => {
      sock.write(part, 'latin1', (err) => {
        if (err) writeError ??= err;
        else written += part.length;
      });
      if (last) sock.end();
    };
    const done = () => {
      const all = Buffer.concat(chunks);
      const text = all.toString('latin1');
      const found = text.match(/HTTP\/1\.[01] \d{3}/g) ?? [];
      for (const f of found) {
        const code = f.slice(-3);
        statuses[code] = (statuses[code] ?? 0) + 1;
      }
      for (const b of forbiddenBufs) if (all.includes(b) && leaks.length < 10) leaks.push(b.toString());
      if (found.length === 0) {
        const head = firstHeadEnd(payload);
        const resetWriting = writeError !== undefined && ['ECONNRESET', 'EPIPE'].includes(writeError.code) && written < payload.length;
        let why;
        if (t0 === 0 || timedOut) why = 'owed';
        else if (resetWriting) why = 'reset_while_sending';
        else if (head < 0 || head > written) why = 'no_complete_head';
        else why = 'owed';
        silent[why]++;
        if (why === 'reset_while_sending')
          resets.push({ port, t0, t1: Date.now(), written, length: payload.length, payload: JSON.stringify(payload.slice(0, 200)) });
        if (why === 'owed' && owedSamples.length < 10) {
          owedSamples.push({
            port,
            t0,
            ms: Date.now() - t0,
            timedOut,
            connected: t0 !== 0,
            written,
            writeError: writeError?.code,
            got: all.length,
            payload: JSON.stringify(payload.slice(0, 600)),
            length: payload.length,
          });
        }
      }
      resolve();
    };
    // Longer than every server timeout (headers 2 s in the test, request 10 s): the server has
    // answered or closed by then, so an idle client here is a stalled server.
    sock.setTimeout(30_000, () => {
      timedOut = true;
      sock.destroy();
    });
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', () => undefined);
    sock.on('close', done);
    sock.on('connect', () => {
      t0 = Date.now();
      port = sock.localPort;
      // Sometimes in pieces, so partial heads are exercised too.
      if (rnd(4) === 0) {
        const cut = rnd(payload.length);
        write(payload.slice(0, cut), false);
        setTimeout(() => {
          if (!sock.destroyed) write(payload.slice(cut), true);
        }, rnd(20));
      } else write(payload, true);
    });
  });
}

async function worker() {
  while (sent < TOTAL) await connection();
}
const started = Date.now();
await Promise.all(Array.from({ length: Number(concurrency) }, worker));
console.log(JSON.stringify({ sent, connections, statuses, leaks, silent, owed_samples: owedSamples, resets, ms: Date.now() - started }));
