// `npm run bench` (root): imds against the zstack design (lighttpd per network namespace, the seed's
// rewrite chain), side by side in one run, inside a throwaway hypervisor namespace. Prints a table
// with the ratios and writes the raw results as JSON (bench/results/). Medians of --runs runs.
//
//   npm run bench -- [--runs N] [--seconds S] [--quick] [--only load|restart|memory|flood|floor|tenant]
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname, cpus } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { AdminClient } from '../src/cli/client.ts';
import { ROOT, Sandbox, sh, type DaemonProcess } from '../test/helpers/sandbox.ts';
import {
  buildStorm,
  cpuBusy,
  cpuTimes,
  median,
  pollUntil,
  probeOnce,
  processCpuMs,
  rssKb,
  storm,
  wrk,
  type StormResult,
  type WrkResult,
} from './lib/measure.ts';
import { floodBench, type FloodResult } from './lib/flood.ts';
import { tenantBench, type TenantResult } from './lib/tenant.ts';
import { peersTable, startNginxPeers, type NginxKind } from './lib/nginx.ts';
import { restartStormTable, restartUnderStorm, type RestartStormRun } from './lib/restart-storm.ts';
import { lighttpdConfig, startLighttpd, writePeer, writeVmFiles } from './lib/peer.ts';
import { addGuests, networks, vmOf, vms, writeStormFiles, VMS_PER_NETWORK, type BenchVm, type GuestRef } from './lib/topology.ts';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '5' },
    quick: { type: 'boolean', default: false },
    only: { type: 'string', default: 'all' },
  },
});
const ONLY = new Set(args.only.split(','));
const wanted = (part: string): boolean => ONLY.has('all') || ONLY.has(part);
const RUNS = args.quick ? 1 : Number(args.runs);
const SECONDS = args.quick ? 2 : Number(args.seconds);
const NETWORKS = 4; // 4 × 250 = 1,000 VMs, all on the TEST-NET 198.51.100.0/24 (overlapping networks)
const RESTART_NETWORKS = args.quick ? 20 : 100;
const BIG_NETWORKS = 40; // 40 × 250 = 10,000 VMs

type Server = 'imds' | 'imds_node' | 'peer' | 'nginx_map' | 'nginx_const';
const results: Record<string, unknown> = {};
const log = (s: string): void => void process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface StormStats {
  wall_ms: number;
  p50_ms: number;
  p99_ms: number;
  guest_slowest_ms: number;
  failures: number;
  /** Answers by HTTP status (every answer is counted; the peers must give the same as imds). */
  status: Record<string, number>;
  server_cpu_us_per_req: number;
  cpu_busy: number[];
}

async function stormRuns(files: { guestsFile: string; pathsFile: string }, pids: () => number[]): Promise<StormStats[]> {
  await storm(files.guestsFile, files.pathsFile); // warm-up: caches, conntrack, slabs
  const out: StormStats[] = [];
  for (let r = 0; r < RUNS; r++) {
    const c0 = cpuTimes();
    const p0 = processCpuMs(pids());
    const s: StormResult = await storm(files.guestsFile, files.pathsFile);
    out.push({
      wall_ms: s.wall_ms,
      p50_ms: s.p50_ms,
      p99_ms: s.p99_ms,
      guest_slowest_ms: s.guest_slowest_ms,
      failures: s.failures,
      status: s.status,
      server_cpu_us_per_req: Math.round(((processCpuMs(pids()) - p0) * 1000) / s.requests),
      cpu_busy: cpuBusy(c0, cpuTimes()),
    });
    await sleep(500);
  }
  return out;
}

async function steadyRuns(netns: string): Promise<Record<string, WrkResult[]>> {
  const out: Record<string, WrkResult[]> = {};
  for (const c of [1, 16, 128]) {
    out[`c${c}`] = [];
    for (let r = 0; r < RUNS; r++) {
      out[`c${c}`]?.push(await wrk(netns, c, SECONDS, '/openstack/latest/meta_data.json'));
      await sleep(300);
    }
  }
  return out;
}

function medianOf<T>(rows: T[], key: keyof T): number {
  return median(rows.map((r) => Number(r[key])));
}

async function measureServer(
  server: Server,
  pids: () => number[],
  guests: GuestRef[],
  f100: { guestsFile: string; pathsFile: string },
  f1000: { guestsFile: string; pathsFile: string },
): Promise<void> {
  log(`[${server}] boot storm, 100 guests`);
  const s100 = await stormRuns(f100, pids);
  log(`[${server}] boot storm, 1,000 guests`);
  const s1000 = await stormRuns(f1000, pids);
  // The load guest sits in the middle of its network (and of the peer's else-if chain).
  const loadGuest = guests[Math.floor(VMS_PER_NETWORK / 2)] as GuestRef;
  log(`[${server}] steady load from ${loadGuest.vm.ip}`);
  const steady = await steadyRuns(loadGuest.netns);
  // IMDSv2: requests carrying a session token (the native loop hands them to node:http, which checks the HMAC).
  const token_c16: WrkResult[] = [];
  if (server.startsWith('imds')) {
    const token = (
      await sh([
        'ip',
        'netns',
        'exec',
        loadGuest.netns,
        'curl',
        '-s',
        '-X',
        'PUT',
        '-H',
        'X-aws-ec2-metadata-token-ttl-seconds: 21600',
        'http://169.254.169.254/latest/api/token',
      ])
    ).stdout.trim();
    log(`[${server}] steady load with an IMDSv2 token`);
    for (let r = 0; r < RUNS; r++)
      token_c16.push(await wrk(loadGuest.netns, 16, SECONDS, '/latest/meta-data/instance-id', [`X-aws-ec2-metadata-token: ${token}`]));
  }
  results[server] = {
    ...(results[server] as object),
    storm100: s100,
    storm1000: s1000,
    steady,
    token_c16,
    rss_kb_after_load_1000_vms: rssKb(pids()),
  };
}

/** The guest of the VM the VM-change measure adds and removes (made once, for both data planes). */
let changeGuest: GuestRef | undefined;

/** imds: from the admin call to the new VM's guest getting its document, and the same for a user-data change. */
async function imdsVmChange(
  sb: Sandbox,
  client: AdminClient,
): Promise<{ served_after_call_ms: number[]; served_after_response_ms: number[]; call_ms: number[]; userdata_ms: number[] }> {
  const network = 'b3';
  const vm: BenchVm = { ...vmOf(3, 250), ip: '198.51.100.253' };
  changeGuest ??= (await addGuests(sb, [vm], 'new'))[0];
  const guest = changeGuest;
  const out = {
    served_after_call_ms: [] as number[],
    served_after_response_ms: [] as number[],
    call_ms: [] as number[],
    userdata_ms: [] as number[],
  };
  for (let r = 0; r < RUNS * 3; r++) {
    const expect = `vm-new-${r}`;
    const body = { ...vm, hostname: expect, id: `c0000000-0000-4000-8000-${String(r).padStart(12, '0')}` };
    const polled = pollUntil(
      (guest as GuestRef).netns,
      '/openstack/latest/meta_data.json',
      (a) => a.status === 200 && a.body.includes(expect),
      10_000,
    );
    await sleep(50);
    const t0 = performance.now();
    await client.call('POST', '/v1/vms', body);
    const t1 = performance.now();
    const seen = await polled;
    out.call_ms.push(t1 - t0);
    out.served_after_call_ms.push(seen.at - t0);
    out.served_after_response_ms.push(seen.at - t1);
    // A user-data change.
    const newData = `#cloud-config\n# change ${r}\n`;
    const polled2 = pollUntil(
      (guest as GuestRef).netns,
      '/openstack/latest/user_data',
      (a) => a.status === 200 && a.body === newData,
      10_000,
    );
    await sleep(50);
    const t2 = performance.now();
    await client.call('PATCH', `/v1/vms/${body.id}`, { user_data: newData });
    out.userdata_ms.push((await polled2).at - t2);
    await client.call('DELETE', `/v1/vms/${body.id}`);
    void network;
  }
  return out;
}

async function imdsNetworkCreate(client: AdminClient): Promise<number[]> {
  const times: number[] = [];
  for (let r = 0; r < RUNS * 3; r++) {
    const id = `nc${r}`;
    const t0 = performance.now();
    await client.call('POST', '/v1/networks', { id, cidr: '203.0.113.0/24', service_ip: '203.0.113.2' });
    times.push(performance.now() - t0);
    await client.call('DELETE', `/v1/networks/${id}`);
  }
  return times;
}

/** The peer: write the VM's files and the whole config, restart lighttpd, until the new VM is answered; another VM's outage meanwhile. */
async function peerVmChange(
  sb: Sandbox,
  peers: Map<string, ChildProcess>,
  all: BenchVm[],
  guests: GuestRef[],
): Promise<{ served_after_change_ms: number[]; write_ms: number[]; other_failed_probes: number[]; other_outage_ms: number[] }> {
  const network = 'b3';
  const ns = `${sb.nsPrefix}${network}`;
  const dir = join(sb.dir, 'peer', network);
  const netDef = networks(NETWORKS)[3] as { id: string; cidr: string; service_ip: string; gateway: string };
  const base = all.filter((v) => v.network === network);
  const vm: BenchVm = { ...vmOf(3, 250), ip: '198.51.100.253' };
  const newGuest = guests.find((g) => g.vm.ip === '198.51.100.253' && g.vm.network === network) as GuestRef;
  const other = guests.find((g) => g.vm.network === network) as GuestRef;
  const out = {
    served_after_change_ms: [] as number[],
    write_ms: [] as number[],
    other_failed_probes: [] as number[],
    other_outage_ms: [] as number[],
  };
  for (let r = 0; r < RUNS * 3; r++) {
    const expect = `vm-new-${r}`;
    const added = { ...vm, hostname: expect, id: `c0000000-0000-4000-8000-${String(r).padStart(12, '0')}` };
    // Watch another VM of the same network throughout.
    let watching = true;
    let failed = 0;
    let lastOk = performance.now();
    let outage = 0;
    const watcher = (async () => {
      while (watching) {
        const a = await probeOnce(other.netns, '/openstack/latest/meta_data.json', {}, 300);
        const now = performance.now();
        if (a.status === 200) {
          outage = Math.max(outage, now - lastOk);
          lastOk = now;
        } else failed++;
      }
    })();
    const polled = pollUntil(
      newGuest.netns,
      '/openstack/latest/meta_data.json',
      (a) => a.status === 200 && a.body.includes(expect),
      20_000,
    );
    await sleep(100);
    const t0 = performance.now();
    writeVmFiles(join(dir, 'docroot'), netDef, added);
    writeFileSync(join(dir, 'lighttpd.conf'), lighttpdConfig(join(dir, 'docroot'), 8775, [...base.map((v) => v.ip), added.ip]));
    out.write_ms.push(performance.now() - t0);
    const old = peers.get(network);
    if (old) {
      old.kill('SIGTERM');
      await new Promise((res) => old.once('exit', res));
    }
    peers.set(network, startLighttpd(ns, join(dir, 'lighttpd.conf')));
    const seen = await polled;
    out.served_after_change_ms.push(seen.at - t0);
    await sleep(300);
    watching = false;
    await watcher;
    out.other_failed_probes.push(failed);
    out.other_outage_ms.push(Math.round(outage));
  }
  return out;
}

/** Time from starting the daemon until a guest on every network has its answer. */
async function imdsRestart(
  sb: Sandbox,
  count: number,
): Promise<{ to_serving_ms: number[]; to_ready_ms: number[]; daemon_listening_ms: number[]; guests: GuestRef[]; path: string }> {
  const nets = Array.from({ length: count }, (_, k) => ({ id: `r${k}`, cidr: '192.0.2.0/24', service_ip: '192.0.2.2' }));
  const vmsR: BenchVm[] = nets.map((n, k) => ({
    ...vmOf(0, 0),
    id: `d0000000-0000-4000-8000-${String(k).padStart(12, '0')}`,
    network: n.id,
    ip: '192.0.2.10',
    mac: '52:54:00:aa:00:10',
    hostname: `r${k}`,
  }));
  // The first start seeds the store from the file; restarts then run as an operator's would, with
  // the networks and VMs in the store and only daemon settings in the file.
  const seedPath = sb.writeConfig(sb.config({ log_level: 'info', networks: nets, vms: vmsR }, 'restart'), 'restart-seed.yaml');
  const first = await sb.startDaemon(seedPath);
  const guests = await addGuests(sb, vmsR, 'rg', '192.0.2.2');
  await first.stop();
  const path = sb.writeConfig(sb.config({ log_level: 'info' }, 'restart'), 'restart.yaml');
  const out = { to_serving_ms: [] as number[], to_ready_ms: [] as number[], daemon_listening_ms: [] as number[], guests, path };
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const d = await sb.startDaemon(path, { waitReady: false });
    out.to_serving_ms.push(await allAnswer(guests, t0));
    await d.waitFor((l) => l['msg'] === 'ready', 60_000);
    const serving = d.logs.find((l) => l['msg'] === 'serving existing networks') as
      { ms_since_start?: number; phases?: unknown } | undefined;
    out.daemon_listening_ms.push(serving?.ms_since_start ?? Number.NaN);
    if (process.env['PHASES']) log(JSON.stringify(serving?.phases));
    out.to_ready_ms.push(performance.now() - t0);
    await d.stop();
  }
  return out;
}

/** Polls a guest of every network until each has had an answer; ms since t0. */
async function allAnswer(guests: GuestRef[], t0: number): Promise<number> {
  const pending = new Set(guests);
  while (pending.size > 0 && performance.now() - t0 < 30_000) {
    await Promise.all(
      [...pending].map(async (g) => {
        const a = await probeOnce(g.netns, '/openstack/latest/meta_data.json', {}, 300);
        if (a.status === 200) pending.delete(g);
      }),
    );
    // Gently: the prober shares the 2 cores with the daemon it is timing.
    if (pending.size > 0) await sleep(20);
  }
  return performance.now() - t0;
}

/** Failed requests while the daemon is replaced, under back-to-back storms from a guest per network. */
function restartStorm(sb: Sandbox, restart: { guests: GuestRef[]; path: string }): Promise<RestartStormRun[]> {
  return restartUnderStorm(sb, restart.path, 'restart', writeStormFiles(join(sb.dir, 'srestart'), restart.guests), '192.0.2.2');
}

async function peerRestart(sb: Sandbox, guests: GuestRef[]): Promise<number[]> {
  // One lighttpd per network (the zstack design), each with its one VM, in the namespaces the imds
  // restart test left in place (same DNAT).
  const times: number[] = [];
  const confs = guests.map((g) => {
    const net = { id: g.vm.network, cidr: '192.0.2.0/24', service_ip: '192.0.2.2', gateway: '192.0.2.1' };
    return { ns: `${sb.nsPrefix}${net.id}`, conf: writePeer(join(sb.dir, 'peer-restart', net.id), net, [g.vm], 8775) };
  });
  for (let r = 0; r < RUNS; r++) {
    const t0 = performance.now();
    const procs = confs.map((c) => startLighttpd(c.ns, c.conf));
    times.push(await allAnswer(guests, t0));
    for (const p of procs) p.kill('SIGKILL');
    await sleep(300);
  }
  return times;
}

/**
 * Where Node.js itself stands: a canned-response server (one event loop, then two with
 * SO_REUSEPORT, then through node:http) against the peer and imds, on the same storm and load.
 */
async function floor(sb: Sandbox): Promise<void> {
  const nets = networks(NETWORKS);
  const all = vms(NETWORKS);
  const d = await sb.startDaemon(sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, networks: nets, vms: all })));
  const guests = await addGuests(sb, all);
  const f1000 = writeStormFiles(join(sb.dir, 's1000'), guests);
  const loadGuest = guests[Math.floor(VMS_PER_NETWORK / 2)] as GuestRef;
  const rows: string[] = [];
  const measure = async (name: string, pids: () => number[]): Promise<void> => {
    const s = await stormRuns(f1000, pids);
    const w: WrkResult[] = [];
    for (let r = 0; r < RUNS; r++) w.push(await wrk(loadGuest.netns, 16, SECONDS, '/openstack/latest/meta_data.json'));
    rows.push(
      `| ${name} | ${fmt(medianOf(s, 'wall_ms'))} | ${fmt(medianOf(s, 'server_cpu_us_per_req'))} | ` +
        `${s.map((x) => x.cpu_busy.join('/')).join(', ')} | ${fmt(medianOf(w, 'rps'))} |`,
    );
    log(rows[rows.length - 1] as string);
  };
  await measure('imds', () => [d.pid]);
  await d.stop();
  const nsList = nets.map((n) => `${sb.nsPrefix}${n.id}`).join(',');
  for (const [mode, threads] of [
    ['raw', 1],
    ['raw', 2],
    ['http', 1],
  ] as const) {
    const p = spawn(
      'nsenter',
      [`--net=/run/netns/${sb.hv}`, '--', process.execPath, join(ROOT, 'bench', 'lib', 'canned-server.mjs'), mode, nsList, String(threads)],
      { stdio: 'ignore' },
    );
    await sleep(1000);
    await measure(`canned ${mode === 'raw' ? 'net' : 'node:http'}, ${threads} event loop${threads > 1 ? 's' : ''}`, () => [
      p.pid as number,
    ]);
    p.kill('SIGKILL');
    await sleep(300);
  }
  const peers = nets.map((n, k) =>
    startLighttpd(
      `${sb.nsPrefix}${n.id}`,
      writePeer(join(sb.dir, 'peer', n.id), n, all.slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK), 8775),
    ),
  );
  await sleep(1500);
  await measure('peer (lighttpd)', () => peers.map((p) => p.pid as number));
  for (const p of peers) p.kill('SIGKILL');
  process.stdout.write(
    `\n| server | storm 1,000 wall ms | server CPU µs/req | CPU busy % per core (runs) | c=16 req/s |\n|---|---|---|---|---|\n${rows.join('\n')}\n`,
  );
}

async function memory(sb: Sandbox): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  // imds with 10,000 VMs (40 networks × 250), after one request per network.
  const nets = networks(BIG_NETWORKS);
  const path = sb.writeConfig(sb.config({ log_level: 'info', networks: nets, vms: vms(BIG_NETWORKS) }, 'big'), 'big.yaml');
  const d = await sb.startDaemon(path, { readyTimeoutMs: 120_000 });
  out['imds_first_start_ms_10000_vms'] = Number(d.logs.find((l) => l['msg'] === 'ready')?.['ms'] ?? NaN);
  const admin = new AdminClient(sb.adminSocket('big'));
  const settled = async (pid: number): Promise<number> => {
    // One request per network as its first VM (the daemon's own probe, through the namespace).
    for (const n of nets)
      await admin.call('POST', `/v1/vms/${vmOf(Number(n.id.slice(1)), 0).id}/fetch`, { path: '/openstack/latest/meta_data.json' });
    await sleep(1000);
    return rssKb([pid]);
  };
  out['imds_rss_kb_10000_vms'] = await settled(d.pid);
  await d.stop();
  // Restarted on the same store (a settings-only file: what every start after the first is), with
  // each data plane.
  for (const plane of ['native', 'node'] as const) {
    const again = sb.writeConfig(sb.config({ log_level: 'info', data_plane: plane }, 'big'), `big-${plane}.yaml`);
    const dr = await sb.startDaemon(again, { readyTimeoutMs: 120_000 });
    out[plane === 'native' ? 'imds_rss_kb_10000_vms_restart' : 'imds_node_rss_kb_10000_vms_restart'] = await settled(dr.pid);
    await dr.stop();
  }
  // The peer with 10,000 VMs: 40 lighttpd, 250 VMs each, in the namespaces imds left in place.
  const procs = nets.map((n, k) =>
    startLighttpd(
      `${sb.nsPrefix}${n.id}`,
      writePeer(join(sb.dir, 'peer-big', n.id), n, vms(BIG_NETWORKS).slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK), 8775),
    ),
  );
  await sleep(2000);
  for (const n of nets) await probeOnce(`${sb.nsPrefix}${n.id}`, '/openstack/latest/meta_data.json');
  out['peer_rss_kb_10000_vms'] = rssKb(procs.map((p) => p.pid as number));
  out['peer_extra_kb_per_network'] = Math.round(out['peer_rss_kb_10000_vms'] / BIG_NETWORKS);
  for (const p of procs) p.kill('SIGKILL');
  // Extra memory per network: 1 network vs 201 networks, no VMs; the daemon's own accounting
  // (V8 heap + external) after its post-start GC, which RSS noise would drown.
  const heapKb = async (instance: string): Promise<number> => {
    const st = JSON.parse(
      (await sh([process.execPath, join(ROOT, 'dist', 'main.js'), '--admin-socket', sb.adminSocket(instance), 'status', '--json'])).stdout,
    ) as { daemon: { memory_kb: Record<string, number> } };
    return (st.daemon.memory_kb['heapUsed'] ?? 0) + (st.daemon.memory_kb['external'] ?? 0);
  };
  const one = sb.writeConfig(
    sb.config({ log_level: 'info', networks: [{ id: 'm0', cidr: '203.0.113.0/24', service_ip: '203.0.113.2' }] }, 'mem1'),
    'mem1.yaml',
  );
  let m = await sb.startDaemon(one);
  await sleep(1000);
  out['imds_rss_kb_1_network'] = rssKb([m.pid]);
  const heapOne = await heapKb('mem1');
  await m.stop();
  const many = sb.writeConfig(
    sb.config(
      {
        log_level: 'info',
        networks: Array.from({ length: 201 }, (_, k) => ({ id: `m${k}`, cidr: '203.0.113.0/24', service_ip: '203.0.113.2' })),
      },
      'mem201',
    ),
    'mem201.yaml',
  );
  // 201 networks built from nothing: also the figure for a first start at that size.
  m = await sb.startDaemon(many, { readyTimeoutMs: 180_000 });
  out['imds_first_start_ms_201_networks'] = Number(m.logs.find((l) => l['msg'] === 'ready')?.['ms'] ?? NaN);
  await sleep(1000);
  out['imds_rss_kb_201_networks'] = rssKb([m.pid]);
  out['imds_extra_kb_per_network'] = Math.round((((await heapKb('mem201')) - heapOne) / 200) * 10) / 10;
  await m.stop();
  return out;
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : 'n/a';
}

function report(): string {
  const im = results['imds'] as Record<string, unknown>;
  const pe = results['peer'] as Record<string, unknown>;
  const rows: string[][] = [['measure', 'imds', 'peer (lighttpd)', 'imds/peer', 'target']];
  const st = (r: Record<string, unknown>, k: string) => r[k] as StormStats[];
  for (const k of ['storm100', 'storm1000']) {
    const a = st(im, k);
    const b = st(pe, k);
    const g = k === 'storm100' ? '100' : '1,000';
    rows.push([
      `boot storm ${g} guests: wall ms`,
      fmt(medianOf(a, 'wall_ms')),
      fmt(medianOf(b, 'wall_ms')),
      `${fmt(medianOf(b, 'wall_ms') / medianOf(a, 'wall_ms'), 2)}x faster`,
      k === 'storm1000' ? '>= 1.6x faster' : '',
    ]);
    rows.push([
      `  request p50 / p99 ms`,
      `${fmt(medianOf(a, 'p50_ms'), 1)} / ${fmt(medianOf(a, 'p99_ms'), 1)}`,
      `${fmt(medianOf(b, 'p50_ms'), 1)} / ${fmt(medianOf(b, 'p99_ms'), 1)}`,
      '',
      '',
    ]);
    rows.push([
      `  failures (all runs)`,
      fmt(a.reduce((s, x) => s + x.failures, 0)),
      fmt(b.reduce((s, x) => s + x.failures, 0)),
      '',
      k === 'storm1000' ? '0' : '',
    ]);
    rows.push([`  server CPU µs/request`, fmt(medianOf(a, 'server_cpu_us_per_req')), fmt(medianOf(b, 'server_cpu_us_per_req')), '', '']);
  }
  const sa = im['steady'] as Record<string, WrkResult[]>;
  const sp = pe['steady'] as Record<string, WrkResult[]>;
  for (const c of ['c1', 'c16', 'c128']) {
    const a = sa[c] as WrkResult[];
    const b = sp[c] as WrkResult[];
    rows.push([
      `steady ${c}: req/s`,
      fmt(medianOf(a, 'rps')),
      fmt(medianOf(b, 'rps')),
      `${fmt(medianOf(a, 'rps') / medianOf(b, 'rps'), 2)}x`,
      c === 'c16' ? '>= 1.5x' : '',
    ]);
    rows.push([
      `  p50 / p99 µs`,
      `${fmt(medianOf(a, 'p50_us'))} / ${fmt(medianOf(a, 'p99_us'))}`,
      `${fmt(medianOf(b, 'p50_us'))} / ${fmt(medianOf(b, 'p99_us'))}`,
      `p99 ${fmt(medianOf(a, 'p99_us') / medianOf(b, 'p99_us'), 2)}x`,
      c === 'c16' ? 'p99 no worse' : '',
    ]);
  }
  const tokenRow = (r: Record<string, unknown>): string => {
    const w = (r['token_c16'] as WrkResult[] | undefined) ?? [];
    return w.length === 0 ? 'n/a' : `${fmt(medianOf(w, 'rps'))} (p99 ${fmt(medianOf(w, 'p99_us'))} µs)`;
  };
  rows.push([
    'steady c16 with an IMDSv2 token: req/s (native: handed to the JS fast path) / data_plane node',
    tokenRow(im),
    results['imds_node'] === undefined ? '' : tokenRow(results['imds_node'] as Record<string, unknown>),
    '',
    '',
  ]);
  const ivc = im['vm_change'] as Record<string, number[]>;
  const pvc = pe['vm_change'] as Record<string, number[]>;
  rows.push([
    'VM added -> guest served, ms after the call',
    fmt(median(ivc['served_after_call_ms'] ?? []), 1),
    fmt(median(pvc['served_after_change_ms'] ?? []), 1),
    `${fmt(median(pvc['served_after_change_ms'] ?? []) / median(ivc['served_after_call_ms'] ?? []), 0)}x faster`,
    '<= 5 ms',
  ]);
  rows.push(['  admin call itself, ms', fmt(median(ivc['call_ms'] ?? []), 1), '', '', '']);
  rows.push(['  user data changed -> served, ms', fmt(median(ivc['userdata_ms'] ?? []), 1), '', '', '']);
  rows.push([
    '  another VM: failed probes / outage ms',
    '0 / 0',
    `${fmt(median(pvc['other_failed_probes'] ?? []))} / ${fmt(median(pvc['other_outage_ms'] ?? []))}`,
    '',
    '',
  ]);
  rows.push(['network creation, ms', fmt(median(im['network_create_ms'] as number[]), 1), 'n/a', '', '< 50 ms']);
  const rs = im['restart'] as Record<string, number[]>;
  rows.push([
    `restart to all ${RESTART_NETWORKS} networks serving, ms`,
    fmt(median(rs['to_serving_ms'] ?? [])),
    fmt(median(pe['restart_ms'] as number[])),
    `${fmt(median(pe['restart_ms'] as number[]) / median(rs['to_serving_ms'] ?? []), 2)}x faster`,
    '< 1,000 ms',
  ]);
  rows.push(['  sockets open (daemon log), ms after start', fmt(median(rs['daemon_listening_ms'] ?? [])), '', '', '']);
  rows.push(['  to READY (all verified), ms', fmt(median(rs['to_ready_ms'] ?? [])), '', '', '']);
  for (const r of results['restart_storm'] as RestartStormRun[])
    rows.push([`failed of ${r.requests} storm requests across ${r.mode}`, String(r.failed), '', '', r.mode.startsWith('imds') ? '0' : '']);
  const mem = results['memory'] as Record<string, number>;
  rows.push([
    'RSS with 1,000 VMs, MB',
    fmt((im['rss_kb_after_load_1000_vms'] as number) / 1024, 1),
    fmt((pe['rss_kb_after_load_1000_vms'] as number) / 1024, 1),
    '',
    '',
  ]);
  rows.push([
    'RSS with 10,000 VMs (first start, seeded from the file), MB',
    fmt((mem['imds_rss_kb_10000_vms'] ?? 0) / 1024, 1),
    fmt((mem['peer_rss_kb_10000_vms'] ?? 0) / 1024, 1),
    '',
    '< 150 MB',
  ]);
  rows.push([
    '  restarted on that store: native / node, MB',
    `${fmt((mem['imds_rss_kb_10000_vms_restart'] ?? 0) / 1024, 1)} / ${fmt((mem['imds_node_rss_kb_10000_vms_restart'] ?? 0) / 1024, 1)}`,
    '',
    '',
    '< 150 MB',
  ]);
  rows.push([
    'extra memory per network, kB',
    fmt(mem['imds_extra_kb_per_network'] ?? 0, 1),
    fmt(mem['peer_extra_kb_per_network'] ?? 0),
    '',
    '',
  ]);
  const fl = results['flood'] as FloodResult['runs'];
  const flm = (k: 'unloaded' | 'loaded') => median(fl.map((x) => x[k].p99));
  rows.push([
    'neighbour p99 ms, quiet / another guest flooding',
    `${fmt(flm('unloaded'), 2)} / ${fmt(flm('loaded'), 2)}`,
    '',
    `${fmt(flm('loaded') / flm('unloaded'), 2)}x`,
    '',
  ]);
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => `| ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join(' | ')} |`).join('\n');
}

async function main(): Promise<void> {
  const sb = new Sandbox('imdsbench-');
  const peers = new Map<string, ChildProcess>();
  let daemon: DaemonProcess | undefined;
  const cleanup = async () => {
    for (const p of peers.values()) p.kill('SIGKILL');
    await sb.cleanup();
  };
  process.on('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    log(`imds bench: ${RUNS} run(s), ${SECONDS} s steady loads; sandbox ${sb.hv}`);
    await buildStorm();
    await sb.setup();
    results['machine'] = {
      host: hostname(),
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model,
      kernel: execFileSync('uname', ['-r']).toString().trim(),
      node: process.version,
      lighttpd: ((): string | undefined => {
        try {
          return execFileSync('lighttpd', ['-v']).toString().split('\n')[0];
        } catch {
          return undefined; // not needed by --only flood
        }
      })(),
      wrk: (await sh(['wrk', '-v'], { allowFailure: true }).catch(() => undefined))?.stdout.split('\n')[0],
      date: new Date().toISOString(),
      runs: RUNS,
      seconds: SECONDS,
    };
    const nets = networks(NETWORKS);
    const all = vms(NETWORKS);
    if (wanted('tenant')) {
      // First, on a clean hypervisor namespace: its "before" phase must see no table of imds's.
      log(`[tenant] another bridge's traffic, with and without imds serving ${RESTART_NETWORKS} networks`);
      const tenant = await tenantBench(sb, RESTART_NETWORKS, RUNS, SECONDS, log);
      results['tenant'] = tenant;
      if (!wanted('load')) process.stdout.write(`\n${tenant.table}\n`);
    }
    if (ONLY.has('floor')) {
      // only when asked for: it replaces the comparison run
      await floor(sb);
      return;
    }
    if (!wanted('load')) {
      if (ONLY.has('flood')) {
        const flood = await floodBench(sb, RUNS, SECONDS * 2, log);
        process.stdout.write(`\n${flood.table}\n`);
      }
      if (wanted('restart')) {
        const restart = await imdsRestart(sb, RESTART_NETWORKS);
        log(
          `restart to serving: ${restart.to_serving_ms.map((x) => x.toFixed(0)).join(', ')} ms; daemon listening at ` +
            `${restart.daemon_listening_ms.join(', ')} ms; to ready: ${restart.to_ready_ms.map((x) => x.toFixed(0)).join(', ')} ` +
            `ms`,
        );
        process.stdout.write(restartStormTable(await restartStorm(sb, restart)));
      }
      if (wanted('memory')) log(JSON.stringify(await memory(sb)));
      return;
    }
    const cfg = sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, data_plane: 'native', networks: nets, vms: all }));
    daemon = await sb.startDaemon(cfg);
    const d = daemon;
    results['imds'] = { rss_kb_idle_1000_vms: rssKb([d.pid]) };
    log(`creating ${all.length} guest namespaces`);
    const guests = await addGuests(sb, all);
    const f100 = writeStormFiles(join(sb.dir, 's100'), guests.slice(0, 100));
    const f1000 = writeStormFiles(join(sb.dir, 's1000'), guests);

    // The machine settles over the first storms after 1,000 guest namespaces are made (storm wall
    // times fall ~30 % over four of them, whatever serves): warm up before the first measured
    // server, so the order of the servers does not decide the comparison.
    log('warming up: four storms of 1,000 guests (not measured)');
    for (let w = 0; w < 4; w++) await storm(f1000.guestsFile, f1000.pathsFile);
    await measureServer('imds', () => [d.pid], guests, f100, f1000);
    const client = new AdminClient(sb.adminSocket());
    log('[imds] VM changes');
    (results['imds'] as Record<string, unknown>)['vm_change'] = await imdsVmChange(sb, client);
    log('[imds] network creation');
    (results['imds'] as Record<string, unknown>)['network_create_ms'] = await imdsNetworkCreate(client);
    await d.stop();
    // The same with the fallback data plane (node:http and the JS fast path), same store, same guests.
    const nodeCfg = sb.writeConfig(sb.config({ log_level: 'info', rate_limit_per_second: 0, data_plane: 'node' }), 'imds-node.yaml');
    const dn = await sb.startDaemon(nodeCfg);
    results['imds_node'] = { rss_kb_idle_1000_vms: rssKb([dn.pid]) };
    await measureServer('imds_node', () => [dn.pid], guests, f100, f1000);
    log('[imds_node] VM changes');
    (results['imds_node'] as Record<string, unknown>)['vm_change'] = await imdsVmChange(sb, client);
    await dn.stop();
    const newGuest = (await sb.namespaces()).filter((n) => n.includes('-new'));

    log('[peer] starting one lighttpd per network');
    nets.forEach((n, k) => {
      const conf = writePeer(join(sb.dir, 'peer', n.id), n, all.slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK), 8775);
      peers.set(n.id, startLighttpd(`${sb.nsPrefix}${n.id}`, conf));
    });
    await sleep(1500);
    results['peer'] = { rss_kb_idle_1000_vms: rssKb([...peers.values()].map((p) => p.pid as number)) };
    await measureServer('peer', () => [...peers.values()].map((p) => p.pid as number), guests, f100, f1000);
    log('[peer] VM changes (rewrite config, restart)');
    const newRef: GuestRef = { vm: { ...vmOf(3, 250), ip: '198.51.100.253' }, netns: newGuest[0] as string };
    (results['peer'] as Record<string, unknown>)['vm_change'] = await peerVmChange(sb, peers, all, [...guests, newRef]);
    for (const p of peers.values()) p.kill('SIGKILL');
    peers.clear();
    const constBody = readFileSync(join(sb.dir, 'peer', nets[0]?.id ?? '', 'docroot', all[0]?.ip ?? '', 'meta_data.json'), 'utf8');
    for (const kind of ['map', 'const'] as NginxKind[]) {
      log(`[nginx-${kind}] starting one nginx per network`);
      const nginx = startNginxPeers(
        kind,
        join(sb.dir, `nginx-${kind}`),
        sb.nsPrefix,
        nets,
        (k) => all.slice(k * VMS_PER_NETWORK, (k + 1) * VMS_PER_NETWORK),
        constBody,
      );
      try {
        await sleep(1500);
        await measureServer(`nginx_${kind}`, nginx.pids, guests, f100, f1000);
      } finally {
        nginx.stop();
      }
    }

    log(`[imds] restart with ${RESTART_NETWORKS} networks`);
    const restart = await imdsRestart(sb, RESTART_NETWORKS);
    (results['imds'] as Record<string, unknown>)['restart'] = {
      to_serving_ms: restart.to_serving_ms,
      to_ready_ms: restart.to_ready_ms,
      daemon_listening_ms: restart.daemon_listening_ms,
    };
    log(`[imds] replacing the daemon under boot storms (${RESTART_NETWORKS} networks, a guest each)`);
    results['restart_storm'] = await restartStorm(sb, restart);
    log(`[peer] start ${RESTART_NETWORKS} lighttpd`);
    (results['peer'] as Record<string, unknown>)['restart_ms'] = await peerRestart(sb, restart.guests);
    log('memory with 10,000 VMs and per network');
    results['memory'] = await memory(sb);
    log('[imds] a neighbour during a flood');
    const flood = await floodBench(sb, RUNS, SECONDS * 2, log);
    results['flood'] = flood.runs;

    const table = `${report()}\n${peersTable(results, median)}\n${(results['tenant'] as TenantResult | undefined)?.table ?? ''}`;
    process.stdout.write(`\n${table}\n`);
    const dir = join(ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({ results, table }, null, 2)}\n`);
    process.stdout.write(`\nraw results: ${file}\n`);
  } finally {
    await cleanup();
  }
}

await main();
