// `npm run bench:registry-burst` (root): does the registry sync keep pace with a controller that
// writes faster than a placement takes? An in-process RegistrySync (dist/) against a real etcd
// member in a throwaway namespace; its target stands for a host whose placement costs `--busy` ms
// of CPU (at 10,000 VMs on one host, tens of ms: docs/performance.md); a controller in another
// process (etcdctl, one process per write) writes `--writes` VMs of this host one after another.
// Prints the placements the sync computed and the time until it reached the last write.
//
//   npm run bench:registry-burst -- [--writes N] [--busy MS]
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import type * as NativeAddon from 'imds-netns';
import type { EtcdClient as EtcdClientType, EtcdClientOptions } from '../src/registry/etcd-client.ts';
import type * as Layout from '../src/registry/layout.ts';
import type { RegistrySync as RegistrySyncType, RegistrySyncOptions } from '../src/registry/sync.ts';
import type { BatchInput } from '../src/store/batch-plan.ts';
import { EtcdCluster } from '../test/helpers/etcd-cluster.ts';
import { Sandbox } from '../test/helpers/sandbox.ts';
import { pino } from 'pino';

const { values: args } = parseArgs({ options: { writes: { type: 'string', default: '100' }, busy: { type: 'string', default: '100' } } });
const WRITES = Number(args.writes);
const BUSY_MS = Number(args.busy);

const addon = createRequire(import.meta.url)('imds-netns') as typeof NativeAddon;
const dist = (file: string): string => new URL(`../dist/registry/${file}`, import.meta.url).href;
const { EtcdClient } = (await import(dist('etcd-client.js'))) as { EtcdClient: new (o: EtcdClientOptions) => EtcdClientType };
const { RegistrySync } = (await import(dist('sync.js'))) as { RegistrySync: new (o: RegistrySyncOptions) => RegistrySyncType };
const { encodeNetwork, encodeVm, registryKeys } = (await import(dist('layout.js'))) as typeof Layout;

const vmOf = (i: number) => ({
  id: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
  network: 'net1',
  ip: `198.51.100.${3 + (i % 250)}`,
  mac: `52:54:00:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}`,
  hostname: `vm${i}`,
});

/** A placement that costs BUSY_MS of CPU, as a large host's applyBatch does. */
function slowTarget(counter: { batches: number }): RegistrySyncOptions['target'] {
  const none = { created: [], updated: [], unchanged: [], deleted: [] };
  return {
    applyBatch: (_batch: BatchInput) => {
      counter.batches++;
      const until = performance.now() + BUSY_MS;
      while (performance.now() < until);
      return { networks: none, vms: none };
    },
    password: () => '',
  };
}

const sb = new Sandbox('imdsbench-');
await sb.setup();
let cluster: EtcdCluster | undefined;
let saved: number | undefined;
try {
  cluster = await EtcdCluster.start({ netns: sb.hv, members: 1 });
  saved = addon.enterNetns(`/run/netns/${sb.hv}`); // the client and etcdctl reach 127.0.0.1 there
  const endpoints = cluster.endpoints;
  const keys = registryKeys('/imds/');
  const client = new EtcdClient({ endpoints });
  const counter = { batches: 0 };
  const sync = new RegistrySync({
    etcd: () => Promise.resolve(new EtcdClient({ endpoints })),
    prefix: '/imds/',
    hostId: 'hv1',
    target: slowTarget(counter),
    log: pino({ level: 'silent' }),
  });
  await client.txn(
    [],
    [{ put: keys.network('net1'), value: encodeNetwork({ id: 'net1', cidr: '198.51.100.0/24', service_ip: '198.51.100.2' }) }],
  );
  await sync.start();
  const before = counter.batches;
  const script = join(sb.dir, 'writes.sh');
  const quote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  const lines = Array.from({ length: WRITES }, (_, i) => {
    const vm = vmOf(i);
    return `etcdctl --endpoints=${endpoints[0]} put ${quote(keys.vm(vm.id))} ${quote(encodeVm({ vm, host: 'hv1' }))} >/dev/null`;
  });
  writeFileSync(script, `${lines.join('\n')}\n`);
  const started = performance.now();
  await promisify(execFile)('sh', ['-e', script], { env: { ...process.env, ETCDCTL_API: '3' } });
  const written = performance.now() - started;
  const last = await client.get(keys.vm(vmOf(WRITES - 1).id));
  const reached = await sync.waitForRevision(last?.modRevision ?? Number.MAX_SAFE_INTEGER, 120_000);
  const caughtUp = performance.now() - started;
  process.stdout.write(
    `${JSON.stringify({
      writes: WRITES,
      placement_ms: BUSY_MS,
      reached,
      placements: counter.batches - before,
      writer_ms: Math.round(written),
      caught_up_ms: Math.round(caughtUp),
    })}\n`,
  );
  await sync.close();
  await client.close();
} finally {
  if (saved !== undefined) addon.restoreNetns(saved);
  await cluster?.cleanup();
  await sb.cleanup();
}
