// `npm run bench:registry` (root): the registry of issue 18 at scale. A 3-member etcd cluster in its
// own namespace and 3 hypervisor sandboxes, each with its own daemon (host_id hv1..hv3); the fleet
// (default 10,000 VMs, each network's VMs spread over the 3 hosts) written to etcd as a controller
// would; then:
//   - the first start of every daemon on that registry (empty store): to ready, to the placement applied;
//   - etcd write -> served on the owning host, p50/p99 (a new VM per sample, create-only txn, a poller
//     in a guest namespace waiting for it), its delete -> 404, and migrations hv1 <-> hv2;
//   - daemon CPU per watch event (owner and other hosts) and the same path in-process, by function;
//   - a restart of all daemons at once with a VM written while they were down;
//   - memory per host, and a daemon without a registry serving the same VMs from its file.
// Prints a table and writes the raw results to bench/results/registry-<time>.json.
//
//   npm run bench:registry -- [--vms N] [--samples N] [--migrations N] [--start one|all] [--no-baseline] …
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, hostname, loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from '../test/helpers/sandbox.ts';
import { syncCost } from './lib/registry-cost.ts';
import { fleet, sampleVm, type Fleet } from './lib/registry-fleet.ts';
import {
  eventCpu,
  firstStart,
  localBaseline,
  makeGuests,
  checkServing,
  daemonNotes,
  memoryAll,
  reloadAll,
  restarts,
  MIGRATION_SLOT,
  type HostGuests,
} from './lib/registry-phases.ts';
import { report, type Results } from './lib/registry-report.ts';
import { Rig, type Agent } from './lib/registry-rig.ts';
import type { MigrationSample, WriteSample } from './lib/registry-samples.ts';

const { values: args } = parseArgs({
  options: {
    vms: { type: 'string', default: '10000' },
    samples: { type: 'string', default: '120' },
    migrations: { type: 'string', default: '60' },
    'guests-per-host': { type: 'string', default: '3' },
    'poll-ms': { type: 'string', default: '1' },
    'gap-ms': { type: 'string', default: '100' },
    restarts: { type: 'string', default: '3' },
    burst: { type: 'string', default: '50' },
    'burst-spacing-ms': { type: 'string', default: '100' },
    start: { type: 'string', default: 'one' },
    'no-baseline': { type: 'boolean', default: false },
  },
});
const HOSTS = ['hv1', 'hv2', 'hv3'];
const num = (k: keyof typeof args): number => Number(args[k]);
const log = (s: string): void => void process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${s}\n`);
if (args.start !== 'one' && args.start !== 'all') throw new Error('--start: one or all');

function machine(): Record<string, unknown> {
  const version = (argv: string[]): string | undefined => {
    try {
      return execFileSync(argv[0] as string, argv.slice(1))
        .toString()
        .split('\n')[0];
    } catch {
      return undefined;
    }
  };
  return {
    host: hostname(),
    cpus: cpus().length,
    cpu_model: cpus()[0]?.model,
    kernel: version(['uname', '-r']),
    node: process.version,
    etcd: version(['etcd', '--version']),
    date: new Date().toISOString(),
    loadavg_at_start: loadavg(),
  };
}

/** Sample i on host i mod 3, in that host's guest (i div 3) mod perHost; a new VM id each time. */
function writeList(guests: HostGuests[], count: number): { vm: ReturnType<typeof sampleVm>; netns: string }[] {
  return Array.from({ length: count }, (_, i) => {
    const g = guests[i % guests.length] as HostGuests;
    const s = g.samples[Math.floor(i / guests.length) % g.samples.length] as HostGuests['samples'][number];
    return { vm: sampleVm(s.slot, i, g.host), netns: s.netns };
  });
}

async function samples(agent: Agent, rig: Rig, guests: HostGuests[]): Promise<{ writes: WriteSample[]; migrations: MigrationSample[] }> {
  const common = { admins: rig.admins(), pollMs: num('poll-ms'), gapMs: num('gap-ms') };
  log(`${num('samples')} write samples (a new VM each, create-only txn, then its delete)`);
  const writes = await agent.call<WriteSample[]>('writes', { ...common, list: writeList(guests, num('samples')) });
  log(`${num('migrations')} migrations between ${HOSTS[0]} and ${HOSTS[1]}`);
  const sides = guests.slice(0, 2).map((g) => ({ host: g.host, netns: (g.migration as { netns: string }).netns }));
  const migrations = await agent.call<MigrationSample[]>('migrations', {
    ...common,
    vm: sampleVm(MIGRATION_SLOT, 1, HOSTS[0] as string, 'f'),
    sides,
    count: num('migrations'),
  });
  return { writes, migrations };
}

async function run(rig: Rig, f: Fleet): Promise<Results> {
  const settings = { ...args, networks: f.networks.length, placement: 'spread: every network has VMs on every host' };
  const info = machine();
  const results: Partial<Results> = { machine: info, settings };
  log(`3 hypervisors (${rig.hosts.map((h) => h.sb.hv).join(', ')}) and a 3-member etcd cluster (${rig.etcdNs})`);
  await rig.setup();
  const agent = rig.agent as Agent;
  log(`seeding ${f.vms.length} VMs on ${f.networks.length} networks`);
  results.seed = await agent.call('seed', { count: f.vms.length, hosts: HOSTS, perTxn: 128 });
  log(`first start of the daemons (${args.start === 'all' ? 'all at once' : 'one after another'})`);
  results.first_start = await firstStart(rig, args.start === 'all');
  results.memory_first_start = await memoryAll(rig);
  log('guest namespaces');
  const guests = await makeGuests(rig, f, num('guests-per-host'));
  await checkServing(guests);
  Object.assign(results, await samples(agent, rig, guests));
  log(`daemon CPU per watch event (${num('burst')} VMs written and deleted, ${num('burst-spacing-ms')} ms apart)`);
  results.event_cpu = await eventCpu(rig, num('burst'), num('burst-spacing-ms'));
  results.memory_after_samples = await memoryAll(rig, 1000);
  results.daemon_notes = daemonNotes(rig);
  log('a reload of every daemon (it ends with a full garbage collection)');
  await reloadAll(rig);
  results.memory_after_gc = await memoryAll(rig, 1000);
  results.restarts = await restarts(rig, guests, num('restarts'), log);
  results.memory_after_restart = await memoryAll(rig);
  for (const h of rig.hosts) await h.daemon?.stop();
  if (!args['no-baseline']) {
    log(`baseline: a daemon without a registry serving ${HOSTS[0]}'s VMs from its file`);
    results.baseline = await localBaseline(rig, f, HOSTS[0] as string);
  }
  log('in-process: the sync path per watch event');
  results.sync_cost = await syncCost(f, HOSTS[0] as string, HOSTS[1] as string, 30);
  info['loadavg_at_end'] = loadavg();
  return results as Results;
}

async function main(): Promise<void> {
  const rig = new Rig(HOSTS.length);
  let cleaning: Promise<void> | undefined;
  const cleanup = (): Promise<void> => (cleaning ??= rig.cleanup());
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      log(`${sig}: removing everything this run made`);
      void cleanup().then(() => process.exit(130));
    });
  try {
    const f = fleet(num('vms'), HOSTS);
    const results = await run(rig, f);
    const table = report(results);
    process.stdout.write(`\n${table}\n`);
    const dir = join(ROOT, 'bench', 'results');
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `registry-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
    writeFileSync(file, `${JSON.stringify({ results, table }, null, 2)}\n`);
    process.stdout.write(`\nraw results: ${file}\n`);
  } finally {
    await cleanup();
  }
}

await main();
