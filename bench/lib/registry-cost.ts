// Where a daemon's time goes per registry watch event, in-process: the daemon's own RegistrySync
// (src/registry/sync.ts) on a real Inventory and SQLite store in a throwaway directory, fed the
// bench's fleet by a minimal in-memory EtcdApi, then single watch events handed to it directly and
// timed. Also the pieces one by one: the full read's decoding, placementOf, the deep comparison of
// two equal placements, and Inventory.applyBatch for a placement that gained or lost one VM. The
// inventory's kernel-side listeners (DHCP hosts, anti-spoofing sets, the native table) are not
// attached here: the daemons' CPU per event (registry-phases.ts eventCpu) includes them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { isDeepStrictEqual } from 'node:util';
import { createLogger } from '../../src/log.ts';
import type { EtcdApi, KeyValue, WatchEvent, WatchHandlers } from '../../src/registry/etcd-api.ts';
import { registryKeys } from '../../src/registry/layout.ts';
import { placementOf } from '../../src/registry/placement.ts';
import { stateOf } from '../../src/registry/registry-state.ts';
import { RegistrySync } from '../../src/registry/sync.ts';
import { planBatch } from '../../src/store/batch-plan.ts';
import { Inventory } from '../../src/store/inventory.ts';
import { MetadataIndex } from '../../src/store/metadata-index.ts';
import { SqliteStore } from '../../src/store/sqlite-store.ts';
import { RUN_OWNER } from '../../test/helpers/sandbox.ts';
import { sampleVm, vmDocument, type Fleet } from './registry-fleet.ts';
import { PREFIX } from './registry-rig.ts';

export interface SyncCost {
  keys: number;
  placed_vms: number;
  /** stateOf over the full range (decode and validate every document), ms. */
  full_read_decode_ms: number;
  /** RegistrySync's first read applied to an empty inventory (decode, placement, one batch), ms. */
  first_apply_ms: number;
  /** One watch event for a VM on another host (this host's placement unchanged), ms (median). */
  event_other_ms: number;
  /** One watch event for a VM placed on this host (put or delete), ms (median). */
  event_owner_ms: number;
  placement_of_ms: number;
  deep_equal_ms: number;
  apply_batch_ms: number;
  /** Of applyBatch: planBatch (validating the whole resulting VM set), ms. */
  plan_batch_ms: number;
  /** Of applyBatch: MetadataIndex.build over every VM (unchanged entries kept), ms. */
  index_build_ms: number;
}

const DEFAULTS = { dhcpDomain: 'novalocal' };
const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)] ?? Number.NaN;

function timeIt(fn: () => unknown): number {
  const t0 = performance.now();
  fn();
  return performance.now() - t0;
}

/** Just enough of etcd for RegistrySync: one range, and the watch's handlers kept for the bench to call. */
function staticEtcd(kvs: KeyValue[], revision: number, watchers: WatchHandlers[]): EtcdApi {
  const no = (): never => {
    throw new Error('not in this bench');
  };
  return {
    rangePrefix: () => Promise.resolve({ kvs, revision }),
    get: no,
    txn: no,
    watchPrefix: (_prefix, _from, handlers) => {
      watchers.push(handlers);
      return { close: () => undefined };
    },
    close: () => Promise.resolve(),
  };
}

function fleetKvs(f: Fleet): KeyValue[] {
  const keys = registryKeys(PREFIX);
  const docs = [
    ...f.networks.map((n) => ({ key: keys.network(n.id), value: JSON.stringify(n) })),
    ...f.vms.map((v) => ({ key: keys.vm(v.id), value: vmDocument(v) })),
  ];
  return docs.map((d, i) => ({ ...d, createRevision: i + 2, modRevision: i + 2 }));
}

export async function syncCost(f: Fleet, host: string, other: string, reps: number): Promise<SyncCost> {
  const dir = mkdtempSync(join(tmpdir(), `imdsbench-${RUN_OWNER}-cost-`));
  const keys = registryKeys(PREFIX);
  const kvs = fleetKvs(f);
  let revision = kvs.length + 1;
  const watchers: WatchHandlers[] = [];
  const store = SqliteStore.open(join(dir, 'state'));
  try {
    const inventory = Inventory.open(store, DEFAULTS);
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    const sync = new RegistrySync({
      etcd: () => Promise.resolve(staticEtcd(kvs, revision, watchers)),
      prefix: PREFIX,
      hostId: host,
      target: inventory,
      log: createLogger({ level: 'info', destination: sink }),
    });
    const full = timeIt(() => stateOf(kvs, keys, () => undefined));
    const t0 = performance.now();
    await sync.start();
    const first = performance.now() - t0;
    const handlers = watchers[0] as WatchHandlers;
    // The sync applies a burst's placement at the end of its round of I/O (setImmediate), not in
    // the handler: an event's cost runs until its revision is applied.
    const event = async (e: WatchEvent): Promise<number> => {
      const t = performance.now();
      handlers.events([e], revision);
      if (!(await sync.waitForRevision(revision, 10_000))) throw new Error(`sync: revision ${revision} not applied`);
      return performance.now() - t;
    };
    const put = (on: string, i: number): WatchEvent => {
      const vm = sampleVm(24, 9000 + i, on);
      return { type: 'put', kv: { key: keys.vm(vm.id), value: vmDocument(vm), createRevision: ++revision, modRevision: revision } };
    };
    const del = (e: WatchEvent): WatchEvent => ({ type: 'delete', key: e.type === 'put' ? e.kv.key : e.key, modRevision: ++revision });
    const owner: number[] = [];
    const others: number[] = [];
    for (let i = 0; i < reps; i++) {
      const p = put(host, i);
      owner.push(await event(p), await event(del(p)));
      const q = put(other, i);
      others.push(await event(q), await event(del(q)));
    }
    if (sync.status().lastError !== undefined) throw new Error(`sync: ${sync.status().lastError}`);
    const pieces = piecesOf(kvs, host, reps, join(dir, 'pieces'));
    return {
      keys: kvs.length,
      placed_vms: inventory.vmCount(),
      full_read_decode_ms: full,
      first_apply_ms: first,
      event_other_ms: median(others),
      event_owner_ms: median(owner),
      ...pieces,
    };
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

type Pieces = Pick<SyncCost, 'placement_of_ms' | 'deep_equal_ms' | 'apply_batch_ms' | 'plan_batch_ms' | 'index_build_ms'>;

/** The steps of one event one by one, on a second store: medians of `reps`. */
function piecesOf(kvs: KeyValue[], host: string, reps: number, dir: string): Pieces {
  const keys = registryKeys(PREFIX);
  const state = stateOf(kvs, keys, () => undefined);
  const store = SqliteStore.open(dir);
  try {
    const inventory = Inventory.open(store, DEFAULTS);
    const options = { origin: 'registry', pruneOrigin: 'registry' } as const;
    const base = placementOf(state, host);
    inventory.applyBatch({ networks: base.networks, vms: base.vms, passwords: base.passwords }, options);
    const extra = sampleVm(24, 9999, host);
    const { user_data, host: _h, ...rest } = extra;
    const withOne = { ...base, vms: [...base.vms, { ...rest, user_data: Buffer.from(user_data) }] };
    const placement: number[] = [];
    const equal: number[] = [];
    const batch: number[] = [];
    const plan: number[] = [];
    const index: number[] = [];
    for (let i = 0; i < reps; i++) {
      placement.push(timeIt(() => placementOf(state, host)));
      const again = placementOf(state, host);
      equal.push(timeIt(() => isDeepStrictEqual(again, base)));
      for (const p of [withOne, base]) {
        const input = { networks: p.networks, vms: p.vms, passwords: p.passwords };
        plan.push(timeIt(() => planBatch(inventory.snapshot(), input, options)));
        const previous = inventory.index;
        index.push(timeIt(() => MetadataIndex.build(p.networks, p.vms, DEFAULTS, previous)));
        batch.push(timeIt(() => inventory.applyBatch(input, options)));
      }
    }
    return {
      placement_of_ms: median(placement),
      deep_equal_ms: median(equal),
      apply_batch_ms: median(batch),
      plan_batch_ms: median(plan),
      index_build_ms: median(index),
    };
  } finally {
    store.close();
  }
}
