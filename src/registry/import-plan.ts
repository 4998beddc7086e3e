// `imds vm import` with a registry, planned (pure): the batch is validated against the whole
// registry as read at one revision, with the same rules and the same created/updated/unchanged/deleted
// report as a local import (src/store/batch-plan.ts), and turned into key writes, each guarded by
// what the key held when read (absent, or its mod revision). The writes are then cut into etcd
// transactions of at most `maxTxnOps` compares and operations (etcd's --max-txn-ops, 128 by
// default): one transaction (all or nothing in etcd) when the import fits, several otherwise, each
// with the undo of what it wrote (src/registry/chunked-write.ts).
import type { Network } from '../model/schema.ts';
import { planBatch, type BatchResult, type Current } from '../store/batch-plan.ts';
import type { StoredNetwork, StoredVm } from '../store/sqlite-store.ts';
import { chunkWrites, type KeyWrite, type WriteTxn } from './chunked-write.ts';
import type { KeyValue } from './etcd-api.ts';
import { encodeLayout, encodeNetwork, encodeVm, type PlacedVm, type RegistryKeys } from './layout.ts';
import type { RegistryState } from './registry-state.ts';

export interface RegistryImport {
  networks: readonly Network[];
  /** `host` undefined: the VM's current host, or `defaultHost` for a new VM (an import does not move VMs it does not place). */
  vms: readonly { vm: PlacedVm['vm']; host: string | undefined }[];
  /** Passwords to set (replacing any), by VM id. */
  passwords: ReadonlyMap<string, string>;
}

export interface RegistryImportOptions {
  defaultHost: string;
  /** vms: delete the VMs of the named networks the batch does not list; all: every VM and network of the registry it does not list. */
  prune?: 'vms' | 'all' | undefined;
}

export interface RegistryImportPlan {
  result: BatchResult;
  /** Networks first (a VM's network exists before it), then VMs, passwords, VM deletions, network deletions. */
  writes: KeyWrite[];
  /** Hosts whose placement changes: a VM's host before and after, of every VM written or deleted; the hosts of a changed network's VMs. */
  hosts: Set<string>;
  /** A network is created: the layout marker is written with the first transaction. */
  layout: boolean;
}

/** The registry's records as a batch plan's current state (every record of origin `registry`). */
function currentOf(state: Pick<RegistryState, 'networks' | 'vms' | 'passwords'>): Current {
  const networks = new Map<string, StoredNetwork>();
  for (const [id, network] of state.networks) networks.set(id, { network, origin: 'registry' });
  const vms = new Map<string, StoredVm>();
  for (const [id, placed] of state.vms) vms.set(id, { vm: placed.vm, origin: 'registry' });
  return { networks, vms, passwords: state.passwords };
}

export function planRegistryImport(
  state: Pick<RegistryState, 'networks' | 'vms' | 'passwords'>,
  kvs: ReadonlyMap<string, KeyValue>,
  keys: RegistryKeys,
  batch: RegistryImport,
  options: RegistryImportOptions,
): RegistryImportPlan {
  const vms = batch.vms.map((v) => v.vm);
  const named = new Set([...batch.networks.map((n) => n.id), ...vms.map((v) => v.network)]);
  const plan = planBatch(
    currentOf(state),
    { networks: batch.networks, vms, passwords: batch.passwords },
    {
      origin: 'registry',
      ...(options.prune === undefined ? {} : { pruneOrigin: 'registry' as const }),
      ...(options.prune === 'vms' ? { pruneNetworks: named } : {}),
    },
  );
  const result = plan.result;
  const hostOf = new Map(batch.vms.map((v) => [v.vm.id, v.host ?? state.vms.get(v.vm.id)?.host ?? options.defaultHost]));
  // planBatch knows no hosts: a VM equal but for its host is moved, i.e. updated.
  const moved = new Set(result.vms.unchanged.filter((id) => state.vms.get(id)?.host !== hostOf.get(id)));
  result.vms.unchanged = result.vms.unchanged.filter((id) => !moved.has(id));
  result.vms.updated.push(...moved);

  const writes: KeyWrite[] = [];
  const put = (key: string, value: string) => writes.push({ key, op: { put: key, value }, before: kvs.get(key) });
  const del = (key: string) => writes.push({ key, op: { delete: key }, before: kvs.get(key) });
  const netWritten = new Set([...result.networks.created, ...result.networks.updated]);
  for (const n of batch.networks) if (netWritten.has(n.id)) put(keys.network(n.id), encodeNetwork(n));
  const vmWritten = new Set([...result.vms.created, ...result.vms.updated]);
  const hosts = new Set<string>();
  for (const vm of vms) {
    if (!vmWritten.has(vm.id)) continue;
    const host = hostOf.get(vm.id) as string;
    const netKey = keys.network(vm.network);
    const held = netWritten.has(vm.network) ? undefined : kvs.get(netKey);
    const key = keys.vm(vm.id);
    writes.push({
      key,
      op: { put: key, value: encodeVm({ vm, host }) },
      before: kvs.get(key),
      ...(held === undefined ? {} : { also: { key: netKey, modRevision: held.modRevision } }),
    });
    hosts.add(host);
    const was = state.vms.get(vm.id)?.host;
    if (was !== undefined) hosts.add(was);
  }
  for (const [id, value] of batch.passwords) if (state.passwords.get(id) !== value) put(keys.password(id), value);
  for (const id of result.vms.deleted) {
    del(keys.vm(id));
    if (kvs.has(keys.password(id))) del(keys.password(id));
    const was = state.vms.get(id)?.host;
    if (was !== undefined) hosts.add(was);
  }
  for (const id of result.networks.deleted) del(keys.network(id));
  // A network changed or deleted concerns every host serving a VM on it.
  const netChanged = new Set([...result.networks.updated, ...result.networks.deleted]);
  if (netChanged.size > 0) for (const { vm, host } of state.vms.values()) if (netChanged.has(vm.network)) hosts.add(host);
  return { result, writes, hosts, layout: result.networks.created.length > 0 };
}

/** Cuts the writes into transactions of at most `maxTxnOps` compares and operations each, in order. */
export function chunkImport(plan: RegistryImportPlan, keys: RegistryKeys, maxTxnOps: number): WriteTxn[] {
  return chunkWrites(plan.writes, maxTxnOps, plan.layout ? [{ put: keys.layout, value: encodeLayout() }] : []);
}
