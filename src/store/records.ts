// The inventory's records in memory and the maps that make a single change O(1) to check: each
// network's VMs, and which VM holds each (network, address) and (network, MAC). No validation, no
// store, no index, no events: the inventory (inventory.ts) decides what changes and when; this
// keeps the records and their maps in step.
import { bridgeNameOf } from '../model/names.ts';
import type { Network } from '../model/schema.ts';
import type { VmLookups } from '../model/validate.ts';
import type { StoredNetwork, StoredVm } from './sqlite-store.ts';

export class InventoryRecords {
  private readonly networkMap = new Map<string, StoredNetwork>();
  private readonly vmMap = new Map<string, StoredVm>();
  private readonly vmsOf = new Map<string, Set<string>>();
  private readonly ipUsers = new Map<string, string>();
  private readonly macUsers = new Map<string, string>();

  get networks(): ReadonlyMap<string, StoredNetwork> {
    return this.networkMap;
  }

  get vms(): ReadonlyMap<string, StoredVm> {
    return this.vmMap;
  }

  networkList(): Network[] {
    return [...this.networkMap.values()].map((n) => n.network);
  }

  vmList(network?: string): StoredVm[] {
    if (network === undefined) return [...this.vmMap.values()];
    return [...(this.vmsOf.get(network) ?? [])].map((id) => this.vmMap.get(id) as StoredVm);
  }

  /** The ids of a network's VMs. */
  vmIdsOf(network: string): string[] {
    return [...(this.vmsOf.get(network) ?? [])];
  }

  vmCount(network?: string): number {
    return network === undefined ? this.vmMap.size : (this.vmsOf.get(network)?.size ?? 0);
  }

  /** A network added (with no VMs yet) or its spec replaced. */
  putNetwork(entry: StoredNetwork): void {
    const id = entry.network.id;
    if (!this.networkMap.has(id)) this.vmsOf.set(id, new Set());
    this.networkMap.set(id, entry);
  }

  /** A network gone (its VMs forgotten before). */
  removeNetwork(id: string): void {
    this.networkMap.delete(id);
    this.vmsOf.delete(id);
  }

  rememberVm(entry: StoredVm): void {
    const { vm } = entry;
    this.vmMap.set(vm.id, entry);
    let set = this.vmsOf.get(vm.network);
    if (set === undefined) this.vmsOf.set(vm.network, (set = new Set()));
    set.add(vm.id);
    this.ipUsers.set(`${vm.network}/${vm.ip}`, vm.id);
    this.macUsers.set(`${vm.network}/${vm.mac}`, vm.id);
  }

  /** Forgets a VM; false when there was none. */
  forgetVm(id: string): boolean {
    const entry = this.vmMap.get(id);
    if (entry === undefined) return false;
    const { vm } = entry;
    this.vmMap.delete(id);
    this.vmsOf.get(vm.network)?.delete(id);
    if (this.ipUsers.get(`${vm.network}/${vm.ip}`) === id) this.ipUsers.delete(`${vm.network}/${vm.ip}`);
    if (this.macUsers.get(`${vm.network}/${vm.mac}`) === id) this.macUsers.delete(`${vm.network}/${vm.mac}`);
    return true;
  }

  /** Every record replaced (a batch, a revert, the store's load). */
  reset(networks: readonly StoredNetwork[], vms: readonly StoredVm[]): void {
    this.networkMap.clear();
    this.vmMap.clear();
    this.vmsOf.clear();
    this.ipUsers.clear();
    this.macUsers.clear();
    for (const n of networks) {
      this.networkMap.set(n.network.id, n);
      this.vmsOf.set(n.network.id, new Set());
    }
    for (const v of vms) this.rememberVm(v);
  }

  /** Who else uses a bridge or an uplink (the model's network rules). */
  networkLookups() {
    const bridgeUser = (bridge: string, self: string): string | undefined => {
      for (const { network } of this.networkMap.values())
        if (network.id !== self && bridgeNameOf(network) === bridge) return `network "${network.id}"`;
      return undefined;
    };
    const uplinkUser = (uplink: string, self: string): string | undefined => {
      for (const { network } of this.networkMap.values())
        if (network.id !== self && network.uplink === uplink) return `network "${network.id}"`;
      return undefined;
    };
    return { bridgeUser, uplinkUser };
  }

  /** A VM's network and who else holds its address or MAC there (the model's VM rules). */
  vmLookups(): VmLookups {
    const label = (id: string | undefined, self: string): string | undefined => (id === undefined || id === self ? undefined : `VM ${id}`);
    return {
      network: (id) => this.networkMap.get(id)?.network,
      ipUser: (network, ip, self) => label(this.ipUsers.get(`${network}/${ip}`), self),
      macUser: (network, mac, self) => label(this.macUsers.get(`${network}/${mac}`), self),
    };
  }
}
