// The registry bench's phases that the bench process drives itself (bench/registry.ts): the first
// start of every daemon on a seeded registry, the guest namespaces, a restart of all daemons at once
// with a write made while they were down, memory, and each daemon's CPU per watch event.
import { AdminClient } from '../../src/cli/client.ts';
import type { DaemonProcess, LogLine } from '../../test/helpers/daemon.ts';
import { Sandbox } from '../../test/helpers/sandbox.ts';
import { processCpuMs, rssKb } from './measure.ts';
import { SERVICE_IP, firstVmOn, sampleVm, type Fleet, type FleetVm } from './registry-fleet.ts';
import type { Results } from './registry-report.ts';
import type { Host, Rig } from './registry-rig.ts';
import { poll, pollConfig } from './registry-samples.ts';
import { addGuests } from './topology.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface StartFigure {
  host: string;
  /** Process start until its `ready` line (every network of its placement built and serving). */
  ready_ms: number;
  /** Process start until the log line `registry placement applied` (the read, the placement, the store batch). */
  placement_applied_ms: number;
  /** The first converge (building the networks), from the `ready` line. */
  converge_ms: number;
  networks: number;
  vms: number;
}

function logAt(d: DaemonProcess, msg: string, wall0: number): number {
  const line = d.logs.find((l: LogLine) => l['msg'] === msg);
  return line === undefined ? Number.NaN : Number(line['time']) - wall0;
}

async function timedStart(rig: Rig, h: Host): Promise<StartFigure> {
  const wall0 = Date.now();
  const t0 = performance.now();
  const d = await rig.start(h, true);
  const readyMs = performance.now() - t0;
  const ready = d.logs.find((l) => l['msg'] === 'ready') as LogLine;
  return {
    host: h.name,
    ready_ms: readyMs,
    placement_applied_ms: logAt(d, 'registry placement applied', wall0),
    converge_ms: Number(ready['ms']),
    networks: Number(ready['networks']),
    vms: Number(ready['vms']),
  };
}

/** Every daemon started on an empty store with the fleet already in etcd: one after another, or all at once. */
export async function firstStart(rig: Rig, together: boolean): Promise<StartFigure[]> {
  if (together) return Promise.all(rig.hosts.map((h) => timedStart(rig, h)));
  const out: StartFigure[] = [];
  for (const h of rig.hosts) out.push(await timedStart(rig, h));
  return out;
}

export interface HostGuests {
  host: string;
  /** Guests for the write samples (slots hostIndex * perHost + j). */
  samples: { slot: number; netns: string }[];
  /** A guest of one of the fleet's VMs on this host. */
  probe: { vm: FleetVm; netns: string };
  /** A guest for the VM written while the daemons are down (slot 10 + hostIndex). */
  catchUp: { slot: number; netns: string };
  /** The migrating VM's guest on this host (slot 20; the first two hosts). */
  migration?: { slot: number; netns: string };
}

const CATCH_UP_SLOT = 10;
export const MIGRATION_SLOT = 20;

/** Guest namespaces on network r0's bridge of every host (built by then: every host has VMs on r0). */
export async function makeGuests(rig: Rig, f: Fleet, perHost: number): Promise<HostGuests[]> {
  if (perHost > 3) throw new Error('at most 3 sample guests per host (slots .230-.238)');
  const out: HostGuests[] = [];
  for (const [i, h] of rig.hosts.entries()) {
    const slots = Array.from({ length: perHost }, (_, j) => i * perHost + j);
    const probeVm = firstVmOn(f, h.name);
    const migration = i < 2 ? [sampleVm(MIGRATION_SLOT, 0, h.name, 'f')] : [];
    const list = [...slots.map((s) => sampleVm(s, 0, h.name)), sampleVm(CATCH_UP_SLOT + i, 0, h.name, 'c'), probeVm, ...migration];
    const refs = await addGuests(h.sb, list, 'g', SERVICE_IP);
    const netns = (k: number): string => refs[k]?.netns as string;
    out.push({
      host: h.name,
      samples: slots.map((slot, j) => ({ slot, netns: netns(j) })),
      catchUp: { slot: CATCH_UP_SLOT + i, netns: netns(perHost) },
      probe: { vm: probeVm, netns: netns(perHost + 1) },
      ...(i < 2 ? { migration: { slot: MIGRATION_SLOT, netns: netns(perHost + 2) } } : {}),
    });
  }
  return out;
}

/** Each host's probe guest gets its own VM: the host serves its share of the fleet. */
export async function checkServing(guests: HostGuests[]): Promise<void> {
  pollConfig.pollMs = 5;
  for (const g of guests) await poll(g.probe.netns, { serves: g.probe.vm.id }, 10_000).seen(0);
}

export interface RestartFigure {
  host: string;
  /** Process start until its log says it serves its existing networks (it first reads the registry). */
  serving_local_ms: number;
  /** Process start until the log line `registry placement applied`. */
  placement_applied_ms: number;
  /** Process start until the VM written while it was down is served. */
  caught_up_ms: number;
  ready_ms: number;
}

/**
 * Stops the daemons of `hosts`, writes one VM for each of them to etcd meanwhile, starts them again
 * at once (stores and kernel objects kept: a restart), and times each until it serves its new VM.
 */
export async function restartHosts(rig: Rig, guests: HostGuests[], hosts: Host[], serial: number): Promise<RestartFigure[]> {
  const agent = rig.agent as NonNullable<Rig['agent']>;
  for (const h of hosts) await h.daemon?.stop();
  const guestOf = (h: Host): HostGuests => guests[rig.hosts.indexOf(h)] as HostGuests;
  const vms = hosts.map((h, i) => sampleVm(guestOf(h).catchUp.slot, serial + i, h.name, 'c'));
  for (const vm of vms) await agent.call('create', { vm });
  pollConfig.pollMs = 5;
  const wall0 = Date.now();
  const t0 = performance.now();
  const daemons = await Promise.all(hosts.map((h) => rig.start(h, false)));
  const figures = await Promise.all(
    hosts.map(async (h, i) => {
      const d = daemons[i] as DaemonProcess;
      const seen = await poll(guestOf(h).catchUp.netns, { serves: (vms[i] as FleetVm).id }, 300_000).seen(t0);
      await d.waitFor((l) => l['msg'] === 'ready', 900_000);
      const local = d.logs.find((l) => l['msg'] === 'serving existing networks');
      return {
        host: h.name,
        serving_local_ms: Number(local?.['ms_since_start'] ?? Number.NaN),
        placement_applied_ms: logAt(d, 'registry placement applied', wall0),
        caught_up_ms: seen.ms,
        ready_ms: logAt(d, 'ready', wall0),
      };
    }),
  );
  for (const vm of vms) await agent.call('delete', { id: vm.id });
  await agent.call('settle', { admins: rig.admins(), pollMs: 1, gapMs: 0 });
  return figures;
}

/** `rounds` restarts of each daemon alone, then `rounds` of all of them at once. */
export async function restarts(
  rig: Rig,
  guests: HostGuests[],
  rounds: number,
  log: (s: string) => void,
): Promise<Record<'one' | 'all', RestartFigure[][]>> {
  const out: Record<'one' | 'all', RestartFigure[][]> = { one: [], all: [] };
  for (let r = 0; r < rounds; r++) {
    log(`restart ${r + 1}/${rounds}: each daemon alone, a VM written for it while it is down`);
    const round: RestartFigure[] = [];
    for (const [i, h] of rig.hosts.entries()) round.push(...(await restartHosts(rig, guests, [h], 1000 + r * 10 + i)));
    out.one.push(round);
  }
  for (let r = 0; r < rounds; r++) {
    log(`restart ${r + 1}/${rounds}: all daemons at once, a VM per host written while they are down`);
    out.all.push(await restartHosts(rig, guests, rig.hosts, 2000 + r * 10));
  }
  return out;
}

/** A reload (SIGHUP) of every daemon: it ends with a full garbage collection (src/util/gc.ts). */
export async function reloadAll(rig: Rig): Promise<void> {
  for (const h of rig.hosts) {
    const d = h.daemon as DaemonProcess;
    const mark = d.logs.length;
    d.signal('SIGHUP');
    await d.waitForAfter(mark, (l) => l['msg'] === 'reloaded', 120_000);
  }
}

export interface Memory {
  rss_kb: number;
  heap_used_kb: number;
  external_kb: number;
}

export async function memoryOf(pid: number, adminSocket: string): Promise<Memory> {
  const st = await new AdminClient(adminSocket).call<{ daemon: { memory_kb: Record<string, number> } }>('GET', '/v1/status');
  return { rss_kb: rssKb([pid]), heap_used_kb: st.daemon.memory_kb['heapUsed'] ?? 0, external_kb: st.daemon.memory_kb['external'] ?? 0 };
}

export async function memoryAll(rig: Rig, settleMs = 2000): Promise<Record<string, Memory>> {
  await sleep(settleMs);
  const out: Record<string, Memory> = {};
  for (const h of rig.hosts) out[h.name] = await memoryOf((h.daemon as DaemonProcess).pid, h.sb.adminSocket());
  return out;
}

export interface EventCpu {
  events: number;
  /** Daemon CPU per watch event on the host the VMs are placed on, ms (idle rate subtracted). */
  owner_ms: number;
  /** ... on the other hosts (their placement does not change), ms. */
  others_ms: number;
  window_ms: number;
}

/**
 * `count` VMs placed on the first host, each written and then deleted, `spacingMs` after each write
 * (2 × count watch events on every host, no guest polling), against an idle window of the
 * same length just before. CPU from /proc (10 ms ticks).
 */
export async function eventCpu(rig: Rig, count: number, spacingMs: number): Promise<EventCpu> {
  const pids = rig.hosts.map((h) => (h.daemon as DaemonProcess).pid);
  const cpu = (): number[] => pids.map((p) => processCpuMs([p]));
  const vms = Array.from({ length: count }, (_, i) => sampleVm(24, 5000 + i, (rig.hosts[0] as Host).name));
  const window = 2 * count * spacingMs;
  const c0 = cpu();
  await sleep(window);
  const c1 = cpu();
  const t0 = performance.now();
  await (rig.agent as NonNullable<Rig['agent']>).call('burst', { vms, spacingMs });
  await (rig.agent as NonNullable<Rig['agent']>).call('settle', { admins: rig.admins(), pollMs: 1, gapMs: 0 });
  const elapsed = performance.now() - t0;
  const c2 = cpu();
  const perEvent = (i: number): number =>
    ((c2[i] as number) - (c1[i] as number) - (((c1[i] as number) - (c0[i] as number)) * elapsed) / window) / (2 * count);
  const others = pids.slice(1).map((_, k) => perEvent(k + 1));
  return { events: 2 * count, owner_ms: perEvent(0), others_ms: others.reduce((a, b) => a + b, 0) / others.length, window_ms: elapsed };
}

/**
 * A daemon without a registry serving the same VMs as `host` from its configuration file, in a
 * sandbox of its own: its memory after the first start (seeded from the file), and restarted on
 * its store with a settings-only file.
 */
export async function localBaseline(rig: Rig, f: Fleet, host: string): Promise<NonNullable<Results['baseline']>> {
  const sb = new Sandbox('imdsbench-');
  rig.extra.push(sb);
  await sb.setup();
  const vms = f.vms.filter((v) => v.host === host).map(({ host: _h, ...vm }) => vm);
  const used = new Set(vms.map((v) => v.network));
  const networks = f.networks.filter((n) => used.has(n.id));
  const settings = { log_level: 'info', rate_limit_per_second: 0 };
  const t0 = performance.now();
  let d = await sb.startDaemon(sb.writeConfig(sb.config({ ...settings, networks, vms }), 'seed.yaml'), { readyTimeoutMs: 900_000 });
  const firstReady = performance.now() - t0;
  await sleep(2000);
  const first = await memoryOf(d.pid, sb.adminSocket());
  await d.stop();
  d = await sb.startDaemon(sb.writeConfig(sb.config(settings), 'imds.yaml'), { readyTimeoutMs: 900_000 });
  const serving = Number(d.logs.find((l) => l['msg'] === 'serving existing networks')?.['ms_since_start'] ?? Number.NaN);
  await sleep(2000);
  const restart = await memoryOf(d.pid, sb.adminSocket());
  await d.stop();
  return {
    vms: vms.length,
    networks: networks.length,
    first_start: first,
    restart,
    first_ready_ms: firstReady,
    restart_serving_ms: serving,
  };
}

/** What each daemon said about its etcd connection so far: gRPC's "excess pings" (etcd's GOAWAY), the registry's warnings. */
export function daemonNotes(rig: Rig): Results['daemon_notes'] {
  const out: Results['daemon_notes'] = {};
  for (const h of rig.hosts) {
    const d = h.daemon as DaemonProcess;
    const stderr = d.tail(100_000).split('\n');
    const registry = d.logs.filter((l) => l['component'] === 'registry' && Number(l['level']) >= 40);
    out[h.name] = {
      excess_pings: stderr.filter((l) => l.includes('excess pings')).length,
      registry_warnings: registry.length,
      unreachable: registry.filter((l) => String(l['msg']).startsWith('registry unreachable')).length,
    };
  }
  return out;
}
