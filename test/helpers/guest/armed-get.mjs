// Run inside a guest namespace: prints "armed", waits for a line on stdin, then sends one GET for
// PATH to 169.254.169.254 on a new connection and prints one JSON line:
//   {"status": 200, "body": "…", "connect_ms": 0.4, "ms": 2.1}  or  {"error": "ETIMEDOUT", "ms": …}
// so that a test can ask at the very moment something else finished (the CLI returning), with no
// process start in between.
//   node armed-get.mjs PATH [TIMEOUT_MS]
import http from 'node:http';
import { createInterface } from 'node:readline';

const [path = '/', timeout = '10000'] = process.argv.slice(2);
const done = (result) => {
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
};
const rl = createInterface({ input: process.stdin });
rl.once('line', () => {
  const t0 = performance.now();
  const ms = () => Math.round((performance.now() - t0) * 10) / 10;
  let connectMs;
  const req = http.get({ host: '169.254.169.254', port: 80, path, agent: false, timeout: Number(timeout) }, (res) => {
    const chunks = [];
    res.on('data', (c) => chunks.push(c));
    res.on('end', () => done({ status: res.statusCode, body: Buffer.concat(chunks).toString(), connect_ms: connectMs, ms: ms() }));
    res.on('error', (err) => done({ error: err.code ?? err.message, ms: ms() }));
  });
  req.on('socket', (s) => s.once('connect', () => (connectMs = ms())));
  req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
  req.on('error', (err) => done({ error: err.code ?? err.message, connect_ms: connectMs, ms: ms() }));
});
process.stdout.write('armed\n');
