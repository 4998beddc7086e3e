// The authoritative in-memory inventory of networks and VMs, mirrored to the SQLite store. Every
// change is validated first (nothing half-written), then committed to the store in one
// transaction, then applied to memory and to the metadata index — so guests see it at once.
import { ImdsError, listProblems } from '../errors.ts';
import type { Defaults } from '../documents/instance.ts';
import { bridgeNameOf } from '../model/names.ts';
import type { Network, Vm } from '../model/schema.ts';
import {
  checkVmSet,
  formatPath,
  networkProblems,
  vmProblems,
  type LabelledVm,
  type Path,
  type Problem,
  type VmLookups,
} from '../model/validate.ts';
import { MetadataIndex } from './metadata-index.ts';
import type { Origin, SqliteStore, StoredNetwork, StoredVm } from './sqlite-store.ts';

export interface BatchInput {
  networks?: readonly Network[];
  vms?: readonly Vm[];
}

export interface BatchResult {
  networks: { created: string[]; updated: string[]; deleted: string[] };
  vms: { created: string[]; updated: string[]; deleted: string[] };
}

export interface InventoryEvents {
  /** VMs of these networks changed (after the store and the index have the change). */
  onVmsChanged?: (networks: ReadonlySet<string>) => void;
  /** The index changed (any network or VM): called before the change's call returns. */
  onIndexChanged?: (index: MetadataIndex) => void;
  /** VMs gone from a network (deleted, or moved to another one), after the index changed: per-VM state kept elsewhere can go. */
  onVmsGone?: (gone: readonly VmPlace[]) => void;
}

/** A VM on a network. */
export type VmPlace = { id: string; network: string };

export interface BatchOptions {
  origin: Origin;
  /** Delete records of this origin that the batch no longer declares (seed_mode: authoritative). */
  pruneOrigin?: Origin;
  /** Prefix for problem paths, e.g. the configuration file's top level. */
  root?: Path;
}

/** The first problems spelled out in one error message, the rest counted (all are in details). */
export function validationError(problems: Problem[], context?: string): ImdsError {
  const first = problems[0];
  const lines = listProblems(problems, (p) => `${formatPath(p.path)}: ${p.message}`);
  const body = problems.length === 1 ? (lines[0] as string) : `${problems.length} problems:\n  ${lines.join('\n  ')}`;
  return new ImdsError('VALIDATION_FAILED', context === undefined ? body : `${context}: ${body}`, {
    ...(first === undefined ? {} : { field: formatPath(first.path) }),
    details: { problems: problems.map((p) => ({ field: formatPath(p.path), message: p.message })) },
  });
}

/**
 * What a batch changes: where it takes VMs away from (each pruned VM's network, the old network of
 * each VM it moves) and every network whose VMs change.
 */
function vmChanges(current: ReadonlyMap<string, StoredVm>, inVms: readonly Vm[], prunedVms: readonly string[]) {
  const from = (id: string): string | undefined => current.get(id)?.vm.network;
  const gone: VmPlace[] = [
    ...prunedVms.flatMap((id) => (from(id) === undefined ? [] : [{ id, network: from(id) as string }])),
    ...inVms.flatMap((vm) =>
      from(vm.id) === undefined || from(vm.id) === vm.network ? [] : [{ id: vm.id, network: from(vm.id) as string }],
    ),
  ];
  return { gone, touched: new Set<string>([...inVms.map((v) => v.network), ...gone.map((g) => g.network)]) };
}

export class Inventory {
  private readonly store: SqliteStore;
  private defaults: Defaults;
  private readonly networks = new Map<string, StoredNetwork>();
  private readonly vms = new Map<string, StoredVm>();
  private readonly vmsOf = new Map<string, Set<string>>();
  private readonly ipUsers = new Map<string, string>();
  private readonly macUsers = new Map<string, string>();
  /** Posted passwords by VM id, mirrored from the store (guests read them from here). */
  private readonly passwords = new Map<string, string>();
  private currentIndex: MetadataIndex;
  /** VM changes (DHCP and anti-spoofing sets hang off them) and index changes (the native table). */
  private readonly events: InventoryEvents;

  private constructor(store: SqliteStore, defaults: Defaults, events: InventoryEvents) {
    this.store = store;
    this.defaults = defaults;
    this.currentIndex = new MetadataIndex(defaults);
    this.events = events;
  }

  static open(store: SqliteStore, defaults: Defaults, events: InventoryEvents = {}): Inventory {
    const inv = new Inventory(store, defaults, events);
    inv.reset(store.loadNetworks(), store.loadVms());
    for (const [vm, value] of store.loadPasswords()) inv.passwords.set(vm, value);
    return inv;
  }

  get index(): MetadataIndex {
    return this.currentIndex;
  }

  // -- reads ------------------------------------------------------------------------------------

  networkList(): Network[] {
    return [...this.networks.values()].map((n) => n.network);
  }

  getNetwork(id: string): StoredNetwork | undefined {
    return this.networks.get(id);
  }

  vmList(network?: string): StoredVm[] {
    if (network === undefined) return [...this.vms.values()];
    return [...(this.vmsOf.get(network) ?? [])].map((id) => this.vms.get(id) as StoredVm);
  }

  getVm(id: string): StoredVm | undefined {
    return this.vms.get(id);
  }

  vmCount(network?: string): number {
    return network === undefined ? this.vms.size : (this.vmsOf.get(network)?.size ?? 0);
  }

  requireNetwork(id: string): StoredNetwork {
    const n = this.networks.get(id);
    if (n === undefined) throw new ImdsError('NOT_FOUND', `no network "${id}"`, { field: 'id' });
    return n;
  }

  requireVm(id: string): StoredVm {
    const v = this.vms.get(id.toLowerCase());
    if (v === undefined) throw new ImdsError('NOT_FOUND', `no VM ${id}`, { field: 'id' });
    return v;
  }

  // -- networks ---------------------------------------------------------------------------------

  private networkLookups() {
    const bridgeUser = (bridge: string, self: string): string | undefined => {
      for (const { network } of this.networks.values())
        if (network.id !== self && bridgeNameOf(network) === bridge) return `network "${network.id}"`;
      return undefined;
    };
    const uplinkUser = (uplink: string, self: string): string | undefined => {
      for (const { network } of this.networks.values())
        if (network.id !== self && network.uplink === uplink) return `network "${network.id}"`;
      return undefined;
    };
    return { bridgeUser, uplinkUser };
  }

  createNetwork(network: Network, origin: Origin): void {
    if (this.networks.has(network.id)) throw new ImdsError('ALREADY_EXISTS', `network "${network.id}" already exists`, { field: 'id' });
    const problems = networkProblems(network, this.networkLookups(), (f) => [f]);
    if (problems.length > 0) throw validationError(problems);
    this.store.apply({ networks: [{ network, origin }] });
    this.networks.set(network.id, { network, origin });
    this.vmsOf.set(network.id, new Set());
    this.currentIndex.setNetwork(network);
    this.events.onIndexChanged?.(this.currentIndex);
  }

  /** Replaces a network's spec; its VMs must still fit it. */
  updateNetwork(next: Network): Network {
    const current = this.requireNetwork(next.id);
    const problems = networkProblems(next, this.networkLookups(), (f) => [f]);
    const lookups: VmLookups = { network: () => next, ipUser: () => undefined, macUser: () => undefined };
    for (const { vm } of this.vmList(next.id)) {
      for (const p of vmProblems(vm, lookups, (f) => ['vms', vm.id, f]))
        problems.push({ path: ['cidr'], message: `VM ${vm.id} (${vm.ip}): ${p.message}` });
    }
    if (problems.length > 0) throw validationError(problems);
    this.store.apply({ networks: [{ network: next, origin: current.origin }] });
    this.networks.set(next.id, { network: next, origin: current.origin });
    this.currentIndex.setNetwork(next);
    this.events.onIndexChanged?.(this.currentIndex);
    return current.network;
  }

  /** Deletes a network; with `force` its VMs too. Returns the VMs deleted. */
  deleteNetwork(id: string, force: boolean): string[] {
    this.requireNetwork(id);
    const vmIds = [...(this.vmsOf.get(id) ?? [])];
    if (vmIds.length > 0 && !force) {
      throw new ImdsError(
        'NETWORK_NOT_EMPTY',
        `network "${id}" still has ${vmIds.length} VM${vmIds.length > 1 ? 's' : ''}; remove them first or use --force`,
        {
          details: { vms: vmIds.length },
        },
      );
    }
    this.store.apply({ deleteVms: vmIds, deleteNetworks: [id] });
    for (const vmId of vmIds) this.forgetVm(vmId);
    this.networks.delete(id);
    this.vmsOf.delete(id);
    this.currentIndex.removeNetwork(id);
    this.events.onIndexChanged?.(this.currentIndex);
    if (vmIds.length > 0) this.events.onVmsChanged?.(new Set([id]));
    if (vmIds.length > 0) this.events.onVmsGone?.(vmIds.map((vmId) => ({ id: vmId, network: id })));
    return vmIds;
  }

  // -- VMs --------------------------------------------------------------------------------------

  private vmLookups(): VmLookups {
    const label = (id: string | undefined, self: string): string | undefined => (id === undefined || id === self ? undefined : `VM ${id}`);
    return {
      network: (id) => this.networks.get(id)?.network,
      ipUser: (network, ip, self) => label(this.ipUsers.get(`${network}/${ip}`), self),
      macUser: (network, mac, self) => label(this.macUsers.get(`${network}/${mac}`), self),
    };
  }

  createVm(vm: Vm, origin: Origin): void {
    if (this.vms.has(vm.id)) throw new ImdsError('ALREADY_EXISTS', `VM ${vm.id} already exists`, { field: 'id' });
    this.putVm(vm, origin);
  }

  updateVm(vm: Vm): void {
    const current = this.requireVm(vm.id);
    this.putVm(vm, current.origin);
  }

  private putVm(vm: Vm, origin: Origin): void {
    const problems = vmProblems(vm, this.vmLookups(), (f) => [f]);
    if (problems.length > 0) throw validationError(problems);
    const before = this.vms.get(vm.id);
    this.store.apply({ vms: [{ vm, origin }] });
    if (before !== undefined) this.forgetVm(vm.id, true);
    this.rememberVm({ vm, origin });
    this.currentIndex.upsertVm(vm);
    this.events.onIndexChanged?.(this.currentIndex);
    this.events.onVmsChanged?.(new Set([vm.network, ...(before === undefined ? [] : [before.vm.network])]));
    if (before !== undefined && before.vm.network !== vm.network) this.events.onVmsGone?.([{ id: vm.id, network: before.vm.network }]);
  }

  deleteVm(id: string): void {
    const { vm } = this.requireVm(id);
    this.store.apply({ deleteVms: [vm.id] });
    this.forgetVm(vm.id);
    this.currentIndex.removeVm(vm.id);
    this.events.onIndexChanged?.(this.currentIndex);
    this.events.onVmsChanged?.(new Set([vm.network]));
    this.events.onVmsGone?.([{ id: vm.id, network: vm.network }]);
  }

  private rememberVm(entry: StoredVm): void {
    const { vm } = entry;
    this.vms.set(vm.id, entry);
    let set = this.vmsOf.get(vm.network);
    if (set === undefined) this.vmsOf.set(vm.network, (set = new Set()));
    set.add(vm.id);
    this.ipUsers.set(`${vm.network}/${vm.ip}`, vm.id);
    this.macUsers.set(`${vm.network}/${vm.mac}`, vm.id);
  }

  private forgetVm(id: string, keepPassword = false): void {
    const entry = this.vms.get(id);
    if (entry === undefined) return;
    if (!keepPassword) this.passwords.delete(id);
    const { vm } = entry;
    this.vms.delete(id);
    this.vmsOf.get(vm.network)?.delete(id);
    if (this.ipUsers.get(`${vm.network}/${vm.ip}`) === id) this.ipUsers.delete(`${vm.network}/${vm.ip}`);
    if (this.macUsers.get(`${vm.network}/${vm.mac}`) === id) this.macUsers.delete(`${vm.network}/${vm.mac}`);
  }

  // -- batches (import, configuration seeding) --------------------------------------------------

  /**
   * Creates or updates every network and VM of the batch, all or nothing: the resulting state is
   * validated as a whole before one store transaction writes it.
   */
  applyBatch(batch: BatchInput, options: BatchOptions): BatchResult {
    const root = options.root ?? [];
    const inNets = batch.networks ?? [];
    const inVms = batch.vms ?? [];
    const problems: Problem[] = [];

    // Duplicates inside the batch.
    const seenNet = new Map<string, number>();
    inNets.forEach((n, i) => {
      const first = seenNet.get(n.id);
      if (first !== undefined)
        problems.push({ path: [...root, 'networks', i, 'id'], message: `duplicate network id "${n.id}" (also networks[${first}])` });
      else seenNet.set(n.id, i);
    });

    // The resulting networks: current ones, replaced or added by the batch, minus pruned ones.
    const batchNetIds = new Set(inNets.map((n) => n.id));
    const batchVmIds = new Set(inVms.map((v) => v.id));
    const prunedNetworks =
      options.pruneOrigin === undefined
        ? []
        : [...this.networks.values()]
            .filter((n) => n.origin === options.pruneOrigin && !batchNetIds.has(n.network.id))
            .map((n) => n.network.id);
    const prunedVms =
      options.pruneOrigin === undefined
        ? []
        : [...this.vms.values()].filter((v) => v.origin === options.pruneOrigin && !batchVmIds.has(v.vm.id)).map((v) => v.vm.id);
    const prunedNetSet = new Set(prunedNetworks);
    const resultNets = new Map<string, Network>();
    for (const { network } of this.networks.values()) if (!prunedNetSet.has(network.id)) resultNets.set(network.id, network);
    for (const n of inNets) resultNets.set(n.id, n);

    const netLabels = new Map<string, string>();
    inNets.forEach((n, i) => netLabels.set(n.id, `networks[${i}]`));
    const bridgeUser = (bridge: string, self: string): string | undefined => {
      for (const n of resultNets.values())
        if (n.id !== self && bridgeNameOf(n) === bridge) return netLabels.get(n.id) ?? `network "${n.id}"`;
      return undefined;
    };
    const uplinkUser = (uplink: string, self: string): string | undefined => {
      for (const n of resultNets.values()) if (n.id !== self && n.uplink === uplink) return netLabels.get(n.id) ?? `network "${n.id}"`;
      return undefined;
    };
    inNets.forEach((n, i) => {
      if (seenNet.get(n.id) !== i) return;
      problems.push(...networkProblems(n, { bridgeUser, uplinkUser }, (f) => [...root, 'networks', i, f]));
    });

    // The resulting VMs: kept ones first, so a clash is reported on the batch entry.
    const prunedVmSet = new Set(prunedVms);
    const labelled: LabelledVm[] = [];
    for (const { vm } of this.vms.values()) {
      if (batchVmIds.has(vm.id) || prunedVmSet.has(vm.id)) continue;
      labelled.push({ vm, path: ['existing VM', vm.id], label: `VM ${vm.id}` });
    }
    inVms.forEach((vm, i) => labelled.push({ vm, path: [...root, 'vms', i], label: `vms[${i}]` }));
    problems.push(...checkVmSet([...resultNets.values()], labelled));
    if (problems.length > 0) throw validationError(problems, 'batch rejected, nothing was changed');

    const result: BatchResult = {
      networks: { created: [], updated: [], deleted: prunedNetworks },
      vms: { created: [], updated: [], deleted: prunedVms },
    };
    for (const n of inNets) (this.networks.has(n.id) ? result.networks.updated : result.networks.created).push(n.id);
    for (const v of inVms) (this.vms.has(v.id) ? result.vms.updated : result.vms.created).push(v.id);
    const origin = options.origin;
    this.store.apply({
      deleteVms: prunedVms,
      deleteNetworks: prunedNetworks,
      networks: inNets.map((network) => ({ network, origin })),
      vms: inVms.map((vm) => ({ vm, origin })),
    });

    // Memory and index follow the committed state.
    const networks: StoredNetwork[] = [];
    for (const [id, network] of resultNets)
      networks.push({ network, origin: batchNetIds.has(id) ? origin : (this.networks.get(id) as StoredNetwork).origin });
    const vms: StoredVm[] = labelled.map(({ vm }) => ({
      vm,
      origin: batchVmIds.has(vm.id) ? origin : (this.vms.get(vm.id) as StoredVm).origin,
    }));
    const { gone, touched } = vmChanges(this.vms, inVms, prunedVms);
    for (const id of prunedVms) this.passwords.delete(id);
    this.reset(networks, vms);
    this.events.onIndexChanged?.(this.currentIndex);
    if (touched.size > 0) this.events.onVmsChanged?.(touched);
    this.events.onVmsGone?.(gone);
    return result;
  }

  private reset(networks: readonly StoredNetwork[], vms: readonly StoredVm[]): void {
    this.networks.clear();
    this.vms.clear();
    this.vmsOf.clear();
    this.ipUsers.clear();
    this.macUsers.clear();
    for (const n of networks) {
      this.networks.set(n.network.id, n);
      this.vmsOf.set(n.network.id, new Set());
    }
    for (const v of vms) this.rememberVm(v);
    this.currentIndex = MetadataIndex.build(
      networks.map((n) => n.network),
      vms.map((v) => v.vm),
      this.defaults,
      this.currentIndex,
    );
  }

  // -- passwords --------------------------------------------------------------------------------

  /** The password the guest posted ('' when none); from memory, never the store. */
  password(vmId: string): string {
    return this.passwords.get(vmId) ?? '';
  }

  getPassword(vmId: string): string | undefined {
    const { vm } = this.requireVm(vmId);
    return this.passwords.get(vm.id);
  }

  /** Stores a password unless one is set already; false when one was. Empty values are not stored. */
  setPasswordOnce(vmId: string, value: string): boolean {
    const { vm } = this.requireVm(vmId);
    if ((this.passwords.get(vm.id) ?? '') !== '') return false;
    if (value === '') return true;
    if (!this.store.setPasswordOnce(vm.id, value)) return false;
    this.passwords.set(vm.id, value);
    return true;
  }

  clearPassword(vmId: string): boolean {
    const { vm } = this.requireVm(vmId);
    this.passwords.delete(vm.id);
    return this.store.clearPassword(vm.id);
  }

  /** Rebuilds every document (e.g. after dhcp_domain changed). */
  setDefaults(defaults: Defaults): void {
    this.defaults = defaults;
    this.reset([...this.networks.values()], [...this.vms.values()]);
    this.events.onIndexChanged?.(this.currentIndex);
  }
}
