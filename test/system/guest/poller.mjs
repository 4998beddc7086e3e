// Run inside a guest namespace with the package's Node: asks PATH on a new connection every
// INTERVAL_MS (each request with TIMEOUT_MS for connect and answer), whether or not the previous one
// has finished, as guests booting during a restart would, until its stdin ends (or after MAX_S);
// then waits for the requests in flight and prints one JSON line of counts on stdout. A request is
// ok when it answers 200 with a body that contains EXPECT (the VM's uuid). Says "polling" on stderr
// once a request succeeded.
//   node poller.mjs INTERVAL_MS TIMEOUT_MS EXPECT [PATH] [MAX_S]
import http from 'node:http';

const [interval = '20', timeout = '10000', expect = '', path = '/openstack/latest/meta_data.json', maxS = '900'] = process.argv.slice(2);
const counts = { sent: 0, ok: 0, failed: 0, reasons: {}, max_ms: 0, first_ms: 0, last_ms: 0, failures: [] };
const inflight = new Set();
let announced = false;
let stopping = false;

function once() {
  return new Promise((resolve) => {
    const t0 = Date.now();
    let done = false;
    const finish = (why) => {
      if (done) return;
      done = true;
      const ms = Date.now() - t0;
      counts.max_ms = Math.max(counts.max_ms, ms);
      if (why === undefined) {
        counts.ok++;
        if (!announced) {
          announced = true;
          process.stderr.write('polling\n');
        }
      } else {
        counts.failed++;
        counts.reasons[why] = (counts.reasons[why] ?? 0) + 1;
        if (counts.failures.length < 20) counts.failures.push({ at: new Date(t0).toISOString(), ms, why });
      }
      resolve();
    };
    // `timeout` (not req.setTimeout) covers the connect too: a refused or lost SYN is a failure.
    const req = http.get({ host: '169.254.169.254', port: 80, path, agent: false, timeout: Number(timeout) }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) finish(`status ${res.statusCode}`);
        else if (!Buffer.concat(chunks).toString().includes(expect)) finish('unexpected body');
        else finish();
      });
      res.on('error', (err) => finish(err.code ?? err.message));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'timeout' })));
    req.on('error', (err) => finish(err.code ?? err.message));
  });
}

function fire() {
  counts.sent++;
  const p = once().then(() => inflight.delete(p));
  inflight.add(p);
}

async function stop() {
  if (stopping) return;
  stopping = true;
  clearInterval(timer);
  await Promise.all(inflight);
  counts.last_ms = Date.now();
  process.stdout.write(`${JSON.stringify(counts)}\n`, () => process.exit(0));
}

counts.first_ms = Date.now();
const timer = setInterval(fire, Number(interval));
fire();
process.stdin.on('end', () => void stop());
process.stdin.on('error', () => void stop());
process.stdin.resume();
setTimeout(() => void stop(), Number(maxS) * 1000).unref();
