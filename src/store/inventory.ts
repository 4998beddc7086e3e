// The authoritative in-memory inventory of networks and VMs, mirrored to the SQLite store. Every
// change is validated first (nothing half-written), then committed to the store in one
// transaction, then applied to memory and to the metadata index — so guests see it at once. The
// records and their lookup maps are records.ts's; what the inventory tells its followers is
// inventory-events.ts's.
import { ImdsError } from '../errors.ts';
import type { Defaults } from '../documents/instance.ts';
import type { Network, Vm } from '../model/schema.ts';
import { networkProblems, vmProblems, type VmLookups } from '../model/validate.ts';
import { planBatch, validationError, type BatchInput, type BatchOptions, type BatchResult, type Current } from './batch-plan.ts';
import type { InventoryEvents } from './inventory-events.ts';
import { planRevert, type RevertScope } from './revert-plan.ts';
import { MetadataIndex } from './metadata-index.ts';
import { InventoryRecords } from './records.ts';
import type { Origin, SqliteStore, StoredNetwork, StoredVm } from './sqlite-store.ts';

export type { BatchInput, BatchOptions, BatchResult, VmPlace } from './batch-plan.ts';
export { validationError } from './batch-plan.ts';

/** The records and passwords at one moment (what `revertTo` puts back). */
export type InventorySnapshot = Current;
export type { RevertScope } from './revert-plan.ts';

export type { InventoryEvents } from './inventory-events.ts';

export class Inventory {
  private readonly store: SqliteStore;
  private defaults: Defaults;
  private readonly records = new InventoryRecords();
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
    return this.records.networkList();
  }

  getNetwork(id: string): StoredNetwork | undefined {
    return this.records.networks.get(id);
  }

  vmList(network?: string): StoredVm[] {
    return this.records.vmList(network);
  }

  getVm(id: string): StoredVm | undefined {
    return this.records.vms.get(id);
  }

  vmCount(network?: string): number {
    return this.records.vmCount(network);
  }

  requireNetwork(id: string): StoredNetwork {
    const n = this.records.networks.get(id);
    if (n === undefined) throw new ImdsError('NOT_FOUND', `no network "${id}"`, { field: 'id' });
    return n;
  }

  requireVm(id: string): StoredVm {
    const v = this.records.vms.get(id.toLowerCase());
    if (v === undefined) throw new ImdsError('NOT_FOUND', `no VM ${id}`, { field: 'id' });
    return v;
  }

  // -- networks ---------------------------------------------------------------------------------

  createNetwork(network: Network, origin: Origin): void {
    if (this.records.networks.has(network.id))
      throw new ImdsError('ALREADY_EXISTS', `network "${network.id}" already exists`, { field: 'id' });
    const problems = networkProblems(network, this.records.networkLookups(), (f) => [f]);
    if (problems.length > 0) throw validationError(problems);
    this.store.apply({ networks: [{ network, origin }] });
    this.records.putNetwork({ network, origin });
    this.currentIndex.setNetwork(network);
    this.events.onIndexChanged?.(this.currentIndex, new Set([network.id]));
  }

  /** Replaces a network's spec; its VMs must still fit it. */
  updateNetwork(next: Network): Network {
    const current = this.requireNetwork(next.id);
    const problems = networkProblems(next, this.records.networkLookups(), (f) => [f]);
    const lookups: VmLookups = { network: () => next, ipUser: () => undefined, macUser: () => undefined };
    for (const { vm } of this.vmList(next.id)) {
      for (const p of vmProblems(vm, lookups, (f) => ['vms', vm.id, f]))
        problems.push({ path: ['cidr'], message: `VM ${vm.id} (${vm.ip}): ${p.message}` });
    }
    if (problems.length > 0) throw validationError(problems);
    this.store.apply({ networks: [{ network: next, origin: current.origin }] });
    this.records.putNetwork({ network: next, origin: current.origin });
    this.currentIndex.setNetwork(next);
    this.events.onIndexChanged?.(this.currentIndex, new Set([next.id]));
    return current.network;
  }

  /** Deletes a network; with `force` its VMs too. Returns the VMs deleted. */
  deleteNetwork(id: string, force: boolean): string[] {
    this.requireNetwork(id);
    const vmIds = this.records.vmIdsOf(id);
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
    this.records.removeNetwork(id);
    this.currentIndex.removeNetwork(id);
    this.events.onIndexChanged?.(this.currentIndex, new Set([id]));
    if (vmIds.length > 0) this.events.onVmsChanged?.(new Set([id]));
    if (vmIds.length > 0) this.events.onVmsGone?.(vmIds.map((vmId) => ({ id: vmId, network: id })));
    return vmIds;
  }

  // -- VMs --------------------------------------------------------------------------------------

  createVm(vm: Vm, origin: Origin): void {
    if (this.records.vms.has(vm.id)) throw new ImdsError('ALREADY_EXISTS', `VM ${vm.id} already exists`, { field: 'id' });
    this.putVm(vm, origin);
  }

  updateVm(vm: Vm): void {
    const current = this.requireVm(vm.id);
    this.putVm(vm, current.origin);
  }

  private putVm(vm: Vm, origin: Origin): void {
    const problems = vmProblems(vm, this.records.vmLookups(), (f) => [f]);
    if (problems.length > 0) throw validationError(problems);
    const before = this.records.vms.get(vm.id);
    this.store.apply({ vms: [{ vm, origin }] });
    if (before !== undefined) this.forgetVm(vm.id, true);
    this.records.rememberVm({ vm, origin });
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

  /** Forgets a VM and (unless `keepPassword`: a VM replaced by its update) its password. */
  private forgetVm(id: string, keepPassword = false): void {
    if (this.records.forgetVm(id) && !keepPassword) this.passwords.delete(id);
  }

  // -- batches (import, configuration seeding) --------------------------------------------------

  /**
   * Creates, updates (and with a prune, deletes) every network and VM of the batch, all or nothing:
   * the resulting state is validated as a whole before one store transaction writes it. A dry run
   * only reports what would change.
   */
  applyBatch(batch: BatchInput, options: BatchOptions): BatchResult {
    const plan = planBatch({ networks: this.records.networks, vms: this.records.vms, passwords: this.passwords }, batch, options);
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
    const { networks, vms } = this.records;
    return { networks: new Map(networks), vms: new Map(vms), passwords: new Map(this.passwords) };
  }

  /**
   * Puts back, as they were at `snapshot`, the records an import touched (its `scope`) and nothing
   * else (an import whose network the kernel refused), in one store transaction (revert-plan.ts).
   */
  revertTo(snapshot: InventorySnapshot, scope: RevertScope): void {
    const plan = planRevert({ networks: this.records.networks, vms: this.records.vms, passwords: this.passwords }, snapshot, scope);
    this.store.apply(plan.change);
    for (const id of [...(plan.change.deleteVms ?? []), ...plan.change.clearPasswords]) this.passwords.delete(id);
    for (const [id, value] of plan.change.passwords) this.passwords.set(id, value);
    this.reset(plan.networks, plan.vms);
    this.events.onIndexChanged?.(this.currentIndex);
    this.events.onVmsChanged?.(plan.touched);
    if (plan.gone.length > 0) this.events.onVmsGone?.(plan.gone);
  }

  private reset(networks: readonly StoredNetwork[], vms: readonly StoredVm[]): void {
    this.records.reset(networks, vms);
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
    this.reset([...this.records.networks.values()], [...this.records.vms.values()]);
    this.events.onIndexChanged?.(this.currentIndex);
  }
}
