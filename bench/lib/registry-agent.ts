// The registry bench's agent: a process started by bench/registry.ts inside the etcd namespace (the
// bench itself stays in the root namespace, which has no route to etcd and gets none). It writes to
// etcd with imds's own client, as a controller would, and times samples with pollers in guest
// namespaces (sockets made there by the addon). One JSON request per stdin line, one JSON answer per
// stdout line: {id, op, args} -> {id, ok, result | error}.
//
//   nsenter --net=/run/netns/<etcd ns> -- node --import tsx bench/lib/registry-agent.ts <endpoints,…> <prefix>
import { createInterface } from 'node:readline';
import { AdminClient } from '../../src/cli/client.ts';
import { EtcdClient } from '../../src/registry/etcd-client.ts';
import type { Compare, Op } from '../../src/registry/etcd-api.ts';
import { decodeNetwork, decodeVm, encodeLayout, registryKeys } from '../../src/registry/layout.ts';
import { fleet, vmDocument, type FleetVm } from './registry-fleet.ts';
import { allApplied, createVm, deleteVm, migrationSamples, pollConfig, writeSamples, type SampleEnv } from './registry-samples.ts';

const [endpoints = '', prefix = '/imds/'] = process.argv.slice(2);
const etcd = new EtcdClient({ endpoints: endpoints.split(','), callTimeoutMs: 30_000 });
const keys = registryKeys(prefix);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const log = (s: string): void => void process.stderr.write(`agent: ${s}\n`);

interface SampleArgs {
  admins: string[];
  pollMs: number;
  gapMs: number;
}

function envOf(a: SampleArgs): SampleEnv {
  pollConfig.pollMs = a.pollMs;
  return { etcd, keys, admins: a.admins.map((s) => new AdminClient(s)), pollMs: a.pollMs, gapMs: a.gapMs };
}

/** Every key checked with the daemon's own decoders first: a bad document would only be logged by the daemons. */
function documents(count: number, hosts: string[]): { key: string; value: string }[] {
  const f = fleet(count, hosts);
  const out = [{ key: keys.layout, value: encodeLayout() }];
  for (const n of f.networks) {
    const value = JSON.stringify(n);
    const d = decodeNetwork(n.id, value);
    if (!d.ok) throw new Error(`network ${n.id}: ${d.reason}`);
    out.push({ key: keys.network(n.id), value });
  }
  for (const vm of f.vms) {
    const value = vmDocument(vm);
    const d = decodeVm(vm.id, value);
    if (!d.ok) throw new Error(`VM ${vm.id}: ${d.reason}`);
    out.push({ key: keys.vm(vm.id), value });
  }
  return out;
}

/** The fleet written create-only, `perTxn` keys per transaction (etcd's --max-txn-ops is 128). */
async function seed(a: { count: number; hosts: string[]; perTxn: number }): Promise<Record<string, number>> {
  const docs = documents(a.count, a.hosts);
  const t0 = performance.now();
  let revision = 0;
  let txns = 0;
  for (let i = 0; i < docs.length; i += a.perTxn) {
    const chunk = docs.slice(i, i + a.perTxn);
    const compares: Compare[] = chunk.map((d) => ({ key: d.key, absent: true }));
    const ops: Op[] = chunk.map((d) => ({ put: d.key, value: d.value }));
    const r = await etcd.txn(compares, ops);
    if (!r.succeeded) throw new Error(`seed: a key of transaction ${txns} exists already`);
    revision = r.revision;
    txns++;
  }
  const bytes = docs.reduce((s, d) => s + d.key.length + d.value.length, 0);
  return { ms: performance.now() - t0, txns, keys: docs.length, bytes, revision };
}

/** The store's revision now (an empty transaction's header). */
async function revisionNow(): Promise<number> {
  return (await etcd.txn([], [])).revision;
}

type Handler = (args: never) => Promise<unknown>;
const ops: Record<string, Handler> = {
  seed: (a: { count: number; hosts: string[]; perTxn: number }) => seed(a),
  create: (a: { vm: FleetVm }) => createVm(envOf({ admins: [], pollMs: 1, gapMs: 0 }), a.vm),
  delete: (a: { id: string }) => deleteVm(envOf({ admins: [], pollMs: 1, gapMs: 0 }), a.id),
  /** Waits until every daemon applied the store's current revision. */
  settle: async (a: SampleArgs & { limitMs?: number }) => {
    const revision = await revisionNow();
    await allApplied(envOf(a), revision, a.limitMs ?? 120_000);
    return revision;
  },
  /** Each VM created, then deleted, `spacingMs` after each write: two watch events per VM, no polling. */
  burst: async (a: { vms: FleetVm[]; spacingMs: number }) => {
    const env = envOf({ admins: [], pollMs: 1, gapMs: 0 });
    for (const vm of a.vms) {
      await createVm(env, vm);
      await sleep(a.spacingMs);
      await deleteVm(env, vm.id);
      await sleep(a.spacingMs);
    }
    return a.vms.length * 2;
  },
  writes: (a: SampleArgs & { list: { vm: FleetVm; netns: string }[] }) => writeSamples(envOf(a), a.list),
  migrations: (a: SampleArgs & { vm: FleetVm; sides: { host: string; netns: string }[]; count: number }) =>
    migrationSamples(envOf(a), a.vm, a.sides, a.count),
};

createInterface({ input: process.stdin }).on('line', (line) => {
  const req = JSON.parse(line) as { id: number; op: string; args: unknown };
  const handler = ops[req.op];
  const reply = (body: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ id: req.id, ...body })}\n`);
  if (handler === undefined) {
    reply({ ok: false, error: `unknown op ${req.op}` });
    return;
  }
  handler(req.args as never).then(
    (result) => reply({ ok: true, result }),
    (err: unknown) => {
      log(`${req.op} failed: ${(err as Error).stack ?? String(err)}`);
      reply({ ok: false, error: (err as Error).message });
    },
  );
});
process.stdin.on('end', () => void etcd.close().then(() => process.exit(0)));
