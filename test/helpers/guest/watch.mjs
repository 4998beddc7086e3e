// Run inside a guest namespace: requests PATH every INTERVAL_MS on a new connection (timeout
// TIMEOUT_MS) until killed, printing one JSON line per change of outcome: {"t": epoch ms, "ok": bool}.
//   node watch.mjs INTERVAL_MS TIMEOUT_MS [PATH]
import http from 'node:http';

const [interval = '10', timeout = '200', path = '/openstack/latest/meta_data.json'] = process.argv.slice(2);
let last;
function once() {
  return new Promise((resolve) => {
    // `timeout` (not req.setTimeout) also covers the connect: a lost SYN counts as a failure.
    const req = http.get({ host: '169.254.169.254', port: 80, path, agent: false, timeout: Number(timeout) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve(false));
  });
}
for (;;) {
  const t = Date.now();
  const ok = await once();
  if (ok !== last) {
    process.stdout.write(`${JSON.stringify({ t, ok })}\n`);
    last = ok;
  }
  await new Promise((r) => setTimeout(r, Number(interval)));
}
