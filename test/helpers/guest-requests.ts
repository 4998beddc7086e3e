// Many HTTP requests from inside a guest, through its own stack (bridge, DNAT, the daemon), made by
// one Node process in the guest's namespace instead of one curl per request. Two ways to connect:
//   fresh   a new connection per request, as cloud-init makes them (the daemon's fast path answers
//           every whole GET or HEAD head);
//   handed  one keep-alive connection that first carries a POST (405): the fast path hands such a
//           connection to node:http for good, so every request after it is answered by the Fastify
//           app. Each reply says whether it came on that same connection (`reused`).
// And raw exchanges: bytes written as given, everything read until the server closes.
import type { Guest } from './sandbox.ts';

export interface GuestRequest {
  method?: string;
  path: string;
  headers?: Record<string, string>;
  body?: Buffer;
}

export interface GuestReply {
  status: number;
  /** Lower-case names, as node:http gives them (repeated ones joined). */
  headers: Record<string, string>;
  body: Buffer;
  /** `handed` only: the reply came on the primed connection. */
  reused: boolean;
}

const SCRIPT = String.raw`
const http = require('http');
const net = require('net');
let input = '';
process.stdin.on('data', (c) => (input += c));
process.stdin.on('end', () => main().catch((e) => { console.error(e); process.exit(1); }));
function one(agent, r) {
  return new Promise((resolve) => {
    let done = false;
    const finish = (v) => { if (!done) { done = true; resolve(v); } };
    const req = http.request({ host: '169.254.169.254', port: 80, method: r.method || 'GET', path: r.path, headers: r.headers || {}, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => finish({
        status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('base64'), reused: req.reusedSocket === true,
      }));
      res.on('error', (e) => finish({ error: 'response: ' + (e.code || e.message) }));
    });
    req.setTimeout(15000, () => req.destroy(new Error('no answer within 15 s')));
    req.on('error', (e) => finish({ error: e.code || e.message }));
    req.end(r.body === undefined ? undefined : Buffer.from(r.body, 'base64'));
  });
}
function raw(bytes) {
  return new Promise((resolve) => {
    const s = net.connect(80, '169.254.169.254');
    const chunks = [];
    let error;
    const timer = setTimeout(() => { error = 'no close within 15 s'; s.destroy(); }, 15000);
    s.on('connect', () => s.write(Buffer.from(bytes, 'base64')));
    s.on('data', (c) => chunks.push(c));
    s.on('error', (e) => { error = e.code || e.message; });
    s.on('close', () => { clearTimeout(timer); resolve({ text: Buffer.concat(chunks).toString('latin1'), error }); });
  });
}
async function main() {
  const job = JSON.parse(input);
  const out = [];
  if (job.raw) {
    for (const bytes of job.raw) out.push(await raw(bytes));
  } else if (job.mode === 'handed') {
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const primed = await one(agent, { method: 'POST', path: '/', headers: { 'content-length': '0' } });
    if (primed.status !== 405) throw new Error('priming POST / answered ' + JSON.stringify(primed));
    for (const r of job.requests) out.push(await one(agent, r));
    agent.destroy();
  } else {
    let next = 0;
    const worker = async () => { while (next < job.requests.length) { const i = next++; out[i] = await one(false, job.requests[i]); } };
    await Promise.all(Array.from({ length: job.concurrency || 1 }, worker));
  }
  process.stdout.write(JSON.stringify(out));
}
`;

type Wire = { status?: number; headers?: Record<string, string | string[]>; body?: string; reused?: boolean; error?: string };

/** Runs the requests in order (fresh: up to `concurrency` at once); throws when one got no HTTP answer. */
export async function guestRequests(
  guest: Guest,
  requests: readonly GuestRequest[],
  options: { mode?: 'fresh' | 'handed'; concurrency?: number } = {},
): Promise<GuestReply[]> {
  const job = {
    mode: options.mode ?? 'fresh',
    concurrency: options.concurrency ?? 1,
    requests: requests.map((r) => ({ ...r, body: r.body?.toString('base64') })),
  };
  const out = await guest.exec([process.execPath, '-e', SCRIPT], { stdin: JSON.stringify(job), timeoutMs: 180_000 });
  const wire = JSON.parse(out.stdout) as Wire[];
  return wire.map((w, i) => {
    const r = requests[i] as GuestRequest;
    if (w.error !== undefined || w.status === undefined)
      throw new Error(`${r.method ?? 'GET'} ${r.path} from guest ${guest.name}: no answer (${w.error})`);
    const headers = Object.fromEntries(Object.entries(w.headers ?? {}).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : v]));
    return { status: w.status, headers, body: Buffer.from(w.body ?? '', 'base64'), reused: w.reused === true };
  });
}

/** Raw exchanges, one connection each: `text` is everything the server sent (latin1) before it closed. */
export async function guestRaw(guest: Guest, exchanges: readonly Buffer[]): Promise<{ text: string; error: string | undefined }[]> {
  const out = await guest.exec([process.execPath, '-e', SCRIPT], {
    stdin: JSON.stringify({ raw: exchanges.map((b) => b.toString('base64')) }),
    timeoutMs: 120_000,
  });
  return JSON.parse(out.stdout) as { text: string; error: string | undefined }[];
}
