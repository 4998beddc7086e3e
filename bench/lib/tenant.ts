// What imds costs the host's other traffic (`--only tenant`). Bridge-family nftables chains see
// every frame of every bridge in the namespace, not only their network's: two tenant VMs talking
// on any bridge of the hypervisor pay for imds's bridge table (one per network before 2026-12-03,
// one for all since; docs/performance.md). Two guests on a bridge imds does not manage send 64-byte UDP datagrams to
// each other (iperf3, the frame rate is what chains cost); measured before the daemon starts, while
// it serves N networks each with an uplink (the fence adds rules and a forward chain), while it
// serves them without uplinks, and after `imds down`, in one run.
import { spawn } from 'node:child_process';
import { sh, type Sandbox } from '../../test/helpers/sandbox.ts';
import { median, processCpuMs } from './measure.ts';
import { networks, vms } from './topology.ts';

const BRIDGE = 'tenantbr';
const A = { name: 'tenant-a', mac: '02:54:00:00:0a:01', ip: '203.0.113.1' };
const B = { name: 'tenant-b', mac: '02:54:00:00:0b:01', ip: '203.0.113.2' };

export interface TenantPhase {
  phase: string;
  bridge_tables: number;
  /** Datagrams received per second, one figure per run. */
  pps: number[];
}

export interface TenantResult {
  networks: number;
  phases: TenantPhase[];
  table: string;
}

async function bridgeTables(sb: Sandbox): Promise<number> {
  const out = await sh(['ip', 'netns', 'exec', sb.hv, 'nft', 'list', 'tables', 'bridge']);
  return out.stdout.split('\n').filter((l) => l.startsWith('table bridge')).length;
}

async function udpRate(netns: string, seconds: number): Promise<number> {
  const argv = ['ip', 'netns', 'exec', netns, 'iperf3', '-c', B.ip, '-u', '-b', '0', '-l', '64', '-t', String(seconds), '-J'];
  const out = await sh(argv, { timeoutMs: (seconds + 30) * 1000 });
  const sum = (JSON.parse(out.stdout) as { end: { sum: { packets: number; lost_packets: number; seconds: number } } }).end.sum;
  return Math.round((sum.packets - sum.lost_packets) / sum.seconds);
}

async function phase(
  sb: Sandbox,
  name: string,
  netns: string,
  runs: number,
  seconds: number,
  log: (m: string) => void,
): Promise<TenantPhase> {
  const pps: number[] = [];
  for (let r = 0; r < runs; r++) pps.push(await udpRate(netns, seconds));
  const result = { phase: name, bridge_tables: await bridgeTables(sb), pps };
  log(`[tenant] ${name}: ${result.bridge_tables} bridge tables, ${pps.join(', ')} datagrams/s`);
  return result;
}

/** Waits until the daemon uses under 2 % of a core over a second (at most 60 s). */
async function quiet(pid: number, log: (m: string) => void): Promise<void> {
  const started = Date.now();
  let before = processCpuMs([pid]);
  while (Date.now() - started < 60_000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = processCpuMs([pid]);
    if (now - before < 20) {
      log(`[tenant] the daemon is idle ${((Date.now() - started) / 1000).toFixed(0)} s after ready`);
      return;
    }
    before = now;
  }
  log('[tenant] the daemon was still busy after 60 s: measuring anyway');
}

/** Runs `measure` while a daemon serves `nets` (once it is idle), then stops it and takes its networks down. */
async function served<T>(sb: Sandbox, nets: readonly object[], measure: () => Promise<T>, log: (m: string) => void): Promise<T> {
  const cfg = sb.writeConfig(sb.config({ log_level: 'info', networks: nets, vms: vms(nets.length, 10) }, 'tenant'), 'tenant.yaml');
  const daemon = await sb.startDaemon(cfg, { readyTimeoutMs: 300_000 });
  await quiet(daemon.pid, log); // its start-up work (verification, guest sets, DHCP) is not what this measures
  const result = await measure();
  await daemon.stop(); // throws unless it exits 0
  await sb.cli(['down', '--config', cfg]);
  return result;
}

export async function tenantBench(
  sb: Sandbox,
  count: number,
  runs: number,
  seconds: number,
  log: (m: string) => void,
): Promise<TenantResult> {
  await sh(['ip', '-n', sb.hv, '-batch', '-'], { stdin: `link add ${BRIDGE} type bridge\nlink set ${BRIDGE} up\n` });
  const a = await sb.addGuest(A.name, { bridge: BRIDGE, mac: A.mac, ip: A.ip });
  const b = await sb.addGuest(B.name, { bridge: BRIDGE, mac: B.mac, ip: B.ip });
  const server = spawn('ip', ['netns', 'exec', b.netns, 'iperf3', '-s', '-B', B.ip], { stdio: 'ignore' });
  try {
    await new Promise((r) => setTimeout(r, 500));
    await udpRate(a.netns, 1); // warm-up: ARP, the bridge's forwarding entries
    const phases = [await phase(sb, 'before imds starts', a.netns, runs, seconds, log)];
    // Networks as on a hypervisor: each on its own uplink (a VLAN device in production, one end of a veth
    // here), which adds the fence rules to its table; then without uplinks.
    const uplinks = Array.from({ length: count }, (_, k) => `tup${k}`);
    await sh(['ip', '-n', sb.hv, '-batch', '-'], { stdin: uplinks.map((u) => `link add ${u} type veth peer name ${u}p\n`).join('') });
    for (const withUplinks of [true, false]) {
      const nets = networks(count).map((n, k) => (withUplinks ? { ...n, uplink: uplinks[k] } : n));
      const name = `imds serving ${count} networks${withUplinks ? ', each with an uplink' : ''}`;
      phases.push(await served(sb, nets, () => phase(sb, name, a.netns, runs, seconds, log), log));
    }
    await sh(['ip', '-n', sb.hv, '-batch', '-'], { stdin: uplinks.map((u) => `link del ${u}\n`).join('') });
    phases.push(await phase(sb, 'after imds down', a.netns, runs, seconds, log));
    return { networks: count, phases, table: tenantTable(phases) };
  } finally {
    server.kill('SIGKILL');
  }
}

export function tenantTable(phases: readonly TenantPhase[]): string {
  const base = median(phases[0]?.pps ?? [0]);
  const rows = phases.map((p) => {
    const m = median(p.pps);
    return `| ${p.phase} | ${p.bridge_tables} | ${m.toLocaleString('en-US')} | ${(m / base).toFixed(2)}× | ${p.pps.join(', ')} |`;
  });
  return [
    '| tenant traffic on another bridge of the host | bridge tables | 64-byte UDP datagrams/s (median) | vs before | runs |',
    '| --- | --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}
