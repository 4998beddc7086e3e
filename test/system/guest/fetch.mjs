// Run inside a guest namespace with the package's Node: one GET of PATH from 169.254.169.254 on a
// new connection; prints {"status", "body"} or {"error"} as one JSON line and exits 0 either way.
//   node fetch.mjs PATH [TIMEOUT_MS]
import http from 'node:http';

const [path = '/openstack/latest/meta_data.json', timeout = '10000'] = process.argv.slice(2);
const print = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const req = http.get({ host: '169.254.169.254', port: 80, path, agent: false, timeout: Number(timeout) }, (res) => {
  const chunks = [];
  res.on('data', (c) => chunks.push(c));
  res.on('end', () => print({ status: res.statusCode, body: Buffer.concat(chunks).toString() }));
  res.on('error', (err) => print({ error: err.code ?? err.message }));
});
req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
req.on('error', (err) => print({ error: err.code ?? err.message }));
