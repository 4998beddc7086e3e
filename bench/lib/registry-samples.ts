// The registry bench's timed samples, run by the agent inside the etcd namespace (one process, one
// clock, for the write and the poll): an etcd write as a controller makes it, then a poller in the
// guest's namespace until the owning host answers as expected.
//
// The poller opens a new TCP connection per request (a socket made in the guest's namespace by the
// addon, no process per attempt) and waits `pollMs` between requests. A sample's figure is the time
// from just before the write was issued to the arrival of the first right answer: an upper bound.
// The change became visible after the last wrong answer's request was sent, so `resolution_ms` (the
// first right answer's arrival minus the last wrong request's sending) is how much of the figure may
// be the poller's own interval.
import type { AdminClient } from '../../src/cli/client.ts';
import type { EtcdApi } from '../../src/registry/etcd-api.ts';
import type { RegistryKeys } from '../../src/registry/layout.ts';
import { probeOnce } from './measure.ts';
import { vmDocument, type FleetVm } from './registry-fleet.ts';

export interface SampleEnv {
  etcd: EtcdApi;
  keys: RegistryKeys;
  /** Every daemon's admin client: a sample starts once all of them applied the previous one. */
  admins: AdminClient[];
  pollMs: number;
  /** Pause after every daemon applied a sample. */
  gapMs: number;
}

export interface Seen {
  /** ms from the write's start to the first right answer's arrival. */
  ms: number;
  resolution_ms: number;
  probes: number;
  /** The poller's mean time per request (its start to the right answer, over its requests). */
  interval_ms: number;
  /** Probes that got no HTTP answer at all (connection refused, timeout). */
  failed: number;
}

const PATH = '/openstack/latest/meta_data.json';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export type Expect = { serves: string } | { gone: true };

function matches(r: { status: number; body: string }, expect: Expect): boolean {
  if ('gone' in expect) return r.status === 404;
  if (r.status !== 200) return false;
  try {
    return (JSON.parse(r.body) as { uuid?: string }).uuid === expect.serves;
  } catch {
    return false;
  }
}

/** The poll interval, set once by the agent (every poller of the run shares it). */
export const pollConfig = { pollMs: 1 };

/** A running poller: `seen(t0)` resolves once the guest got the expected answer. */
export function poll(netns: string, expect: Expect, limitMs = 30_000): { seen: (t0: number) => Promise<Seen> } {
  const started = performance.now();
  let lastMiss = started;
  let probes = 0;
  let failed = 0;
  const done = (async (): Promise<{ at: number; lastMiss: number }> => {
    const end = performance.now() + limitMs;
    while (performance.now() < end) {
      const sent = performance.now();
      const r = await probeOnce(netns, PATH, {}, 1000);
      probes++;
      if (matches(r, expect)) return { at: performance.now(), lastMiss };
      if (r.status === 0) failed++;
      lastMiss = sent;
      if (pollConfig.pollMs > 0) await sleep(pollConfig.pollMs);
    }
    throw new Error(`${netns}: no ${JSON.stringify(expect)} within ${limitMs} ms (last of ${probes} probes missed)`);
  })();
  return {
    seen: async (t0) => {
      const r = await done;
      return { ms: r.at - t0, resolution_ms: r.at - Math.max(r.lastMiss, t0), probes, interval_ms: (r.at - started) / probes, failed };
    },
  };
}

/** Waits until every daemon has applied `revision` (GET /v1/status, registry.revision). */
export async function allApplied(env: SampleEnv, revision: number, limitMs = 30_000): Promise<void> {
  const end = performance.now() + limitMs;
  for (const admin of env.admins) {
    for (;;) {
      const st = await admin.call<{ daemon: { registry?: { revision: number } } }>('GET', '/v1/status');
      if ((st.daemon.registry?.revision ?? 0) >= revision) break;
      if (performance.now() > end) throw new Error(`${admin.socketPath}: revision ${revision} not applied within ${limitMs} ms`);
      await sleep(5);
    }
  }
}

/** A create-only put of the VM's document; throws when the key exists. */
export async function createVm(env: SampleEnv, vm: FleetVm): Promise<number> {
  const key = env.keys.vm(vm.id);
  const r = await env.etcd.txn([{ key, absent: true }], [{ put: key, value: vmDocument(vm) }]);
  if (!r.succeeded) throw new Error(`${key} exists already`);
  return r.revision;
}

export async function deleteVm(env: SampleEnv, id: string): Promise<number> {
  return (await env.etcd.txn([], [{ delete: env.keys.vm(id) }])).revision;
}

export interface WriteSample {
  host: string;
  /** The write (a create-only transaction) until etcd answered. */
  txn_ms: number;
  served: Seen;
  /** The delete's start until the guest got 404. */
  gone: Seen;
}

/** Lets the pollers just started settle, then times the write from just before it is issued. */
async function timed(write: () => Promise<number>): Promise<{ t0: number; t1: number; revision: number }> {
  await sleep(20);
  const t0 = performance.now();
  const revision = await write();
  return { t0, t1: performance.now(), revision };
}

/** Each sample: a new VM written create-only, served on its host; then deleted, 404 there. */
export async function writeSamples(env: SampleEnv, list: { vm: FleetVm; netns: string }[]): Promise<WriteSample[]> {
  const out: WriteSample[] = [];
  for (const { vm, netns } of list) {
    const up = poll(netns, { serves: vm.id });
    const w = await timed(() => createVm(env, vm));
    const served = await up.seen(w.t0);
    const down = poll(netns, { gone: true });
    const d = await timed(() => deleteVm(env, vm.id));
    const gone = await down.seen(d.t0);
    out.push({ host: vm.host, txn_ms: w.t1 - w.t0, served, gone });
    if (out.length % 20 === 0) process.stderr.write(`agent: ${out.length}/${list.length} write samples\n`);
    await allApplied(env, d.revision);
    await sleep(env.gapMs);
  }
  return out;
}

export interface MigrationSample {
  from: string;
  to: string;
  txn_ms: number;
  /** The destination's guest got the VM. */
  served: Seen;
  /** The source's guest got 404. */
  gone: Seen;
}

/** One VM moved back and forth between two hosts by rewriting its document (`host`), guarded by its mod revision. */
export async function migrationSamples(
  env: SampleEnv,
  vm: FleetVm,
  sides: { host: string; netns: string }[],
  count: number,
): Promise<MigrationSample[]> {
  const out: MigrationSample[] = [];
  const key = env.keys.vm(vm.id);
  let at = sides[0] as { host: string; netns: string };
  const first = poll(at.netns, { serves: vm.id });
  await createVm(env, { ...vm, host: at.host });
  await first.seen(0);
  for (let i = 0; i < count; i++) {
    const to = sides.find((s) => s !== at) as { host: string; netns: string };
    const kv = await env.etcd.get(key);
    if (kv === undefined || (JSON.parse(kv.value) as { host: string }).host !== at.host) throw new Error(`${key}: not on ${at.host}`);
    const arrive = poll(to.netns, { serves: vm.id });
    const leave = poll(at.netns, { gone: true });
    const doc = vmDocument({ ...vm, host: to.host });
    const w = await timed(async () => {
      const r = await env.etcd.txn([{ key, modRevision: kv.modRevision }], [{ put: key, value: doc }]);
      if (!r.succeeded) throw new Error(`${key}: changed behind the bench's back`);
      return r.revision;
    });
    out.push({ from: at.host, to: to.host, txn_ms: w.t1 - w.t0, served: await arrive.seen(w.t0), gone: await leave.seen(w.t0) });
    await allApplied(env, w.revision);
    await sleep(env.gapMs);
    at = to;
  }
  await allApplied(env, await deleteVm(env, vm.id));
  return out;
}
