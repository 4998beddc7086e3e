// Run inside a guest namespace (plain Node, no build): bounded load and latency probes against
// 169.254.169.254, printing one JSON line (t0/t1: epoch ms of the first and last counted request,
// so a caller can check that a probe ran inside a flood).
//   node load.mjs flood RPS SECONDS CONNECTIONS PATH   keep-alive requests at a fixed total rate;
//                                                      SECONDS 0: until SIGTERM or SIGINT. Says
//                                                      "flooding" on stderr as it starts
//   node load.mjs probe SECONDS INTERVAL_MS PATH       one request per new connection, latencies
import http from 'node:http';

const [mode, a, b, c, d] = process.argv.slice(2);
const HOST = '169.254.169.254';
const DEFAULT_PATH = '/openstack/latest/meta_data.json';
const target = (mode === 'flood' ? d : c) ?? DEFAULT_PATH;

function get(agent) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint();
    const req = http.get({ host: HOST, port: 80, path: target, agent, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => resolve({ status: 0, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
  });
}

function pct(sorted, p) {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

if (mode === 'flood') {
  const rps = Number(a);
  const seconds = Number(b);
  const conns = Number(c);
  const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
  const statuses = {};
  const end = seconds > 0 ? Date.now() + seconds * 1000 : Infinity;
  let stopped = false;
  for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => (stopped = true));
  const inflight = new Set();
  let sent = 0;
  const started = Date.now();
  process.stderr.write('flooding\n');
  while (Date.now() < end && !stopped) {
    const due = Math.floor(((Date.now() - started) / 1000) * rps);
    while (sent < due && inflight.size < conns * 4) {
      sent++;
      const p = get(agent).then((r) => {
        statuses[r.status] = (statuses[r.status] ?? 0) + 1;
        inflight.delete(p);
      });
      inflight.add(p);
    }
    await new Promise((r) => setTimeout(r, 2));
  }
  const t1 = Date.now();
  await Promise.all(inflight);
  agent.destroy();
  console.log(JSON.stringify({ sent, statuses, t0: started, t1 }));
} else if (mode === 'probe') {
  const seconds = Number(a);
  const interval = Number(b);
  const lat = [];
  const statuses = {};
  // Warm up first (JIT, first connections): those requests are not counted.
  for (let i = 0; i < 5; i++) await get(new http.Agent({ keepAlive: false }));
  const t0 = Date.now();
  const end = t0 + seconds * 1000;
  while (Date.now() < end) {
    const r = await get(new http.Agent({ keepAlive: false }));
    statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    if (r.status === 200) lat.push(r.ms);
    await new Promise((res) => setTimeout(res, interval));
  }
  const t1 = Date.now();
  lat.sort((x, y) => x - y);
  console.log(JSON.stringify({ n: lat.length, statuses, p50: pct(lat, 50), p99: pct(lat, 99), max: lat[lat.length - 1] ?? 0, t0, t1 }));
} else {
  console.error('usage: load.mjs flood RPS SECONDS CONNECTIONS [PATH] | probe SECONDS INTERVAL_MS [PATH]');
  process.exit(2);
}
