// Measurement helpers: the storm client, wrk, process memory, and probes from inside namespaces.
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { socketInNetns } from '../../src/netns/addon.ts';
import { ROOT, sh } from '../../test/helpers/sandbox.ts';

export const STORM = join(ROOT, 'bench', '.build', 'storm');

export interface StormResult {
  guests: number;
  requests_per_guest: number;
  requests: number;
  wall_ms: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  guest_median_ms: number;
  guest_slowest_ms: number;
  failures: number;
  timeouts: number;
  connect_errors: number;
  status: Record<string, number>;
}

export async function buildStorm(): Promise<void> {
  await sh(['mkdir', '-p', join(ROOT, 'bench', '.build')]);
  await sh(['cc', '-O2', '-Wall', '-o', STORM, join(ROOT, 'bench', 'storm.c')]);
}

export async function storm(guestsFile: string, pathsFile: string, warmAddress = '198.51.100.2'): Promise<StormResult> {
  const out = await sh([STORM, guestsFile, pathsFile, '10000', warmAddress], { timeoutMs: 300_000 });
  return JSON.parse(out.stdout) as StormResult;
}

export interface WrkResult {
  connections: number;
  rps: number;
  p50_us: number;
  p99_us: number;
  errors: number;
  non2xx: number;
}

function toMicros(value: string): number {
  const m = /^([\d.]+)(us|ms|s)$/.exec(value.trim());
  if (!m) return Number.NaN;
  const n = Number(m[1]);
  return m[2] === 'us' ? n : m[2] === 'ms' ? n * 1000 : n * 1e6;
}

/** wrk from inside a guest namespace against 169.254.169.254 (through bridge and DNAT). */
export async function wrk(netns: string, connections: number, seconds: number, path: string, headers: string[] = []): Promise<WrkResult> {
  const out = await sh(
    [
      'ip',
      'netns',
      'exec',
      netns,
      'wrk',
      '-t',
      connections > 1 ? '2' : '1',
      '-c',
      String(connections),
      '-d',
      `${seconds}s`,
      '--latency',
      ...headers.flatMap((h) => ['-H', h]),
      `http://169.254.169.254${path}`,
    ],
    {
      timeoutMs: (seconds + 30) * 1000,
    },
  );
  const text = out.stdout;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  const p50 = toMicros(/\n\s+50%\s+(\S+)/.exec(text)?.[1] ?? '');
  const p99 = toMicros(/\n\s+99%\s+(\S+)/.exec(text)?.[1] ?? '');
  const sockErr = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text);
  const errors = sockErr ? sockErr.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  return { connections, rps, p50_us: p50, p99_us: p99, errors, non2xx };
}

/** Resident memory of processes, kB (VmRSS). */
export function rssKb(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    total += Number(m?.[1] ?? 0);
  }
  return total;
}

/** One GET from inside a namespace to 169.254.169.254:80; resolves with the status (0 on error). */
export function probeOnce(
  netns: string,
  path: string,
  headers: Record<string, string> = {},
  timeoutMs = 1000,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    let fd: number;
    try {
      fd = socketInNetns(netns);
    } catch {
      resolve({ status: 0, body: '' });
      return;
    }
    const socket = new Socket({ fd, readable: true, writable: true });
    const req = request(
      {
        createConnection: () => socket.connect(80, '169.254.169.254'),
        path,
        headers: { host: '169.254.169.254', connection: 'close', ...headers },
        timeout: timeoutMs,
      },
      (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

/** Polls until `ok` holds for the answer; resolves with the time (performance.now) it first did. */
export async function pollUntil(
  netns: string,
  path: string,
  ok: (r: { status: number; body: string }) => boolean,
  limitMs = 20_000,
  headers: Record<string, string> = {},
): Promise<{ at: number; attempts: number; failures: number }> {
  const end = performance.now() + limitMs;
  let attempts = 0;
  let failures = 0;
  while (performance.now() < end) {
    attempts++;
    const r = await probeOnce(netns, path, headers, 500);
    if (ok(r)) return { at: performance.now(), attempts, failures };
    if (r.status === 0 || r.status >= 500) failures++;
  }
  throw new Error(`poll: ${path} in ${netns} never answered as expected`);
}

export function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return Number.NaN;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
}

/** Packets the kernel dropped from its per-CPU backlogs so far (all CPUs, /proc/net/softnet_stat). */
export function softnetDrops(): number {
  return readFileSync('/proc/net/softnet_stat', 'utf8')
    .trim()
    .split('\n')
    .reduce((sum, line) => sum + parseInt(line.trim().split(/\s+/)[1] ?? '0', 16), 0);
}

/** Jiffies per CPU line of /proc/stat: [busy, total]. */
export function cpuTimes(): { busy: number; total: number }[] {
  return readFileSync('/proc/stat', 'utf8')
    .split('\n')
    .filter((l) => /^cpu\d+ /.test(l))
    .map((l) => {
      const v = l.trim().split(/\s+/).slice(1).map(Number);
      const idle = (v[3] ?? 0) + (v[4] ?? 0);
      const total = v.reduce((a, b) => a + b, 0);
      return { busy: total - idle, total };
    });
}

/** Busy share of each CPU between two cpuTimes() snapshots, percent. */
export function cpuBusy(before: { busy: number; total: number }[], after: { busy: number; total: number }[]): number[] {
  return after.map((a, i) => {
    const b = before[i] ?? { busy: 0, total: 0 };
    return Math.round(((a.busy - b.busy) / Math.max(1, a.total - b.total)) * 100);
  });
}

/** CPU time (user + system) of processes so far, ms. */
export function processCpuMs(pids: number[]): number {
  const tick = 10; // USER_HZ = 100 on Linux
  let total = 0;
  for (const pid of pids) {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    total += (Number(fields[11]) + Number(fields[12])) * tick;
  }
  return total;
}
