// Run inside a guest namespace (plain Node): REQUESTS requests as fast as CONNECTIONS keep-alive
// connections allow, alternating a GET (answered on the fast path) and a token PUT (answered by the
// Fastify app), so both paths are over the guest's rate limit at once. Prints one JSON line:
// statuses per kind, the Retry-After values of the 429 answers, 429s without a numeric
// Retry-After, and the elapsed time (to compute the allowance from).
//   node burst.mjs REQUESTS CONNECTIONS
import http from 'node:http';

const [total, conns] = process.argv.slice(2).map(Number);
const agent = new http.Agent({ keepAlive: true, maxSockets: conns });
const out = { get: {}, put: {}, retry_after: {}, missing_retry_after: 0, elapsed_ms: 0 };
let next = 0;

function one(i) {
  const put = i % 2 === 1;
  return new Promise((resolve) => {
    const req = http.request(
      {
        host: '169.254.169.254',
        port: 80,
        agent,
        method: put ? 'PUT' : 'GET',
        path: put ? '/latest/api/token' : '/openstack/latest/meta_data.json',
        headers: put ? { 'x-aws-ec2-metadata-token-ttl-seconds': '60' } : {},
        timeout: 10_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => {
          const kind = put ? out.put : out.get;
          kind[res.statusCode] = (kind[res.statusCode] ?? 0) + 1;
          if (res.statusCode === 429) {
            const ra = res.headers['retry-after'];
            if (typeof ra === 'string' && /^\d+$/.test(ra)) out.retry_after[ra] = (out.retry_after[ra] ?? 0) + 1;
            else out.missing_retry_after++;
          }
          resolve();
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', () => {
      const kind = put ? out.put : out.get;
      kind['0'] = (kind['0'] ?? 0) + 1;
      resolve();
    });
    req.end();
  });
}

const t0 = performance.now();
await Promise.all(
  Array.from({ length: conns }, async () => {
    while (next < total) await one(next++);
  }),
);
out.elapsed_ms = Math.round(performance.now() - t0);
agent.destroy();
console.log(JSON.stringify(out));
