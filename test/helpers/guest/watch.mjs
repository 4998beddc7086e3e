// Run inside a guest namespace: requests PATH every INTERVAL_MS on a new connection (timeout
// TIMEOUT_MS) until killed, printing one JSON line per request:
//   {"s": start, "e": end, "ok": bool, "why"?: "status 404" | "timeout" | "ECONNREFUSED" | …}
// (epoch ms, to 0.1 ms). Every request is reported, not only changes of outcome, so a reader can
// tell which requests were in flight at any moment: one that started before some event and failed
// after it is visible as such.
//   node watch.mjs INTERVAL_MS TIMEOUT_MS [PATH]
import http from 'node:http';

const [interval = '10', timeout = '200', path = '/openstack/latest/meta_data.json'] = process.argv.slice(2);
const now = () => Math.round((performance.timeOrigin + performance.now()) * 10) / 10;

function once() {
  return new Promise((resolve) => {
    let done = false;
    const finish = (ok, why) => {
      if (done) return;
      done = true;
      resolve(ok ? { ok } : { ok, why });
    };
    // `timeout` (not req.setTimeout) also covers the connect: a lost SYN counts as a failure.
    const req = http.get({ host: '169.254.169.254', port: 80, path, agent: false, timeout: Number(timeout) }, (res) => {
      res.resume();
      res.on('end', () => finish(res.statusCode === 200, `status ${res.statusCode}`));
      res.on('error', (err) => finish(false, err.code ?? err.message));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
    req.on('error', (err) => finish(false, err.code ?? err.message));
  });
}

for (;;) {
  const s = now();
  const r = await once();
  process.stdout.write(`${JSON.stringify({ s, e: now(), ...r })}\n`);
  await new Promise((resolve) => setTimeout(resolve, Number(interval)));
}
