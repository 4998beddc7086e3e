// The authoritative in-memory inventory of networks and VMs, mirrored to the SQLite store. Every
// change is validated first (nothing half-written), then committed to the store in one
// transaction, then applied to memory and to the metadata index — so guests see it at once.
import { ImdsError } from '../errors.ts';
import type { Defaults } from '../documents/instance.ts';
import { bridgeNameOf } from '../model/names.ts';
import type { Network, Vm } from '../model/schema.ts';
import { networkProblems, vmProblems, type VmLookups } from '../model/validate.ts';
import {
  planBatch,
  validationError,
  type BatchInput,
  type BatchOptions,
  type BatchResult,
  type Current,
  type VmPlace,
} from './batch-plan.ts';
import { planRevert, type RevertScope } from './revert-plan.ts';
import { MetadataIndex } from './metadata-index.ts';
import type { Origin, SqliteStore, StoredNetwork, StoredVm } from './sqlite-store.ts';

export type { BatchInput, BatchOptions, BatchResult, VmPlace } from './batch-plan.ts';
export { validationError } from './batch-plan.ts';

/** The records and passwords at one moment (what `revertTo` puts back). */
export type InventorySnapshot = Current;
export type { RevertScope } from './revert-plan.ts';

export interface InventoryEvents {
  /** VMs of these networks changed (after the store and the index have the change). */
  onVmsChanged?: (networks: ReadonlySet<string>) => void;
  /**
   * The index changed: called before the change's call returns, with the networks whose spec or
   * VMs changed (undefined: any may have, e.g. after an import).
   */
  onIndexChanged?: (index: MetadataIndex, networks?: ReadonlySet<string>) => void;
  /** VMs gone from a network (deleted, or moved to another one), after the index changed: per-VM state kept elsewhere can go. */
  onVmsGone?: (gone: readonly VmPlace[]) => void;
  /** A guest posted its write-once password (stored): with a registry it is published there too. */
  onPasswordPosted?: (vmId: string, value: string) => void;
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
    this.events.onIndexChanged?.(this.currentIndex, new Set([network.id]));
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
    this.events.onIndexChanged?.(this.currentIndex, new Set([next.id]));
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
    this.events.onIndexChanged?.(this.currentIndex, new Set([id]));
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
    const networks = new Set([vm.network, ...(before === undefined ? [] : [before.vm.network])]);
    this.events.onIndexChanged?.(this.currentIndex, networks);
    this.events.onVmsChanged?.(networks);
    if (before !== undefined && before.vm.network !== vm.network) this.events.onVmsGone?.([{ id: vm.id, network: before.vm.network }]);
  }

  deleteVm(id: string): void {
    const { vm } = this.requireVm(id);
    this.store.apply({ deleteVms: [vm.id] });
    this.forgetVm(vm.id);
    this.currentIndex.removeVm(vm.id);
    this.events.onIndexChanged?.(this.currentIndex, new Set([vm.network]));
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
   * Creates, updates (and with a prune, deletes) every network and VM of the batch, all or nothing:
   * the resulting state is validated as a whole before one store transaction writes it. A dry run
   * only reports what would change.
   */
  applyBatch(batch: BatchInput, options: BatchOptions): BatchResult {
    const plan = planBatch({ networks: this.networks, vms: this.vms, passwords: this.passwords }, batch, options);
    if (options.dryRun === true) return plan.result;
    this.store.apply(plan.change);
    // Memory and index follow the committed state.
    for (const id of [...plan.result.vms.deleted, ...(plan.change.clearPasswords ?? [])]) this.passwords.delete(id);
    for (const [id, value] of batch.passwords ?? []) this.passwords.set(id, value);
    this.reset(plan.networks, plan.vms);
    this.events.onIndexChanged?.(this.currentIndex);
    if (plan.touched.size > 0) this.events.onVmsChanged?.(plan.touched);
    if (plan.gone.length > 0) this.events.onVmsGone?.(plan.gone);
    return plan.result;
  }

  /** What `revertTo` puts back: the records and passwords as they are now. */
  snapshot(): InventorySnapshot {
    return { networks: new Map(this.networks), vms: new Map(this.vms), passwords: new Map(this.passwords) };
  }

  /**
   * Puts back, as they were at `snapshot`, the records an import touched (its `scope`) and nothing
   * else (an import whose network the kernel refused), in one store transaction (revert-plan.ts).
   */
  revertTo(snapshot: InventorySnapshot, scope: RevertScope): void {
    const plan = planRevert({ networks: this.networks, vms: this.vms, passwords: this.passwords }, snapshot, scope);
    this.store.apply(plan.change);
    for (const id of [...(plan.change.deleteVms ?? []), ...plan.change.clearPasswords]) this.passwords.delete(id);
    for (const [id, value] of plan.change.passwords) this.passwords.set(id, value);
    this.reset(plan.networks, plan.vms);
    this.events.onIndexChanged?.(this.currentIndex);
    this.events.onVmsChanged?.(plan.touched);
    if (plan.gone.length > 0) this.events.onVmsGone?.(plan.gone);
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
    this.events.onPasswordPosted?.(vm.id, value);
    return true;
  }

  /**
   * Sets the password as the operator gives it (a VM moved from another host): refused with
   * ALREADY_EXISTS when one is set, unless `replace`. The value is never logged.
   */
  setPassword(vmId: string, value: string, replace: boolean): void {
    const { vm } = this.requireVm(vmId);
    if (!replace && (this.passwords.get(vm.id) ?? '') !== '')
      throw new ImdsError('ALREADY_EXISTS', `VM ${vm.id} already has a password; clear it first, or replace it (--force)`, {
        field: 'password',
      });
    this.store.replacePassword(vm.id, value);
    this.passwords.set(vm.id, value);
  }

  /** Every password set, by VM id (`imds export --include-secrets`). */
  passwordList(): ReadonlyMap<string, string> {
    return this.passwords;
  }

  /** An online backup of the store into `dest` (an empty file of the caller's). */
  backupStore(dest: string): Promise<void> {
    return this.store.backup(dest);
  }

  /** Where the store lives (its backups are made beside it). */
  get storePath(): string {
    return this.store.path;
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
