// What this host serves, from the registry's whole state: the VMs whose `host` is this host's
// host_id, the networks those VMs are on (and no other), and their passwords. Pure. A VM whose
// network is not in the registry cannot be served; it is left out and reported.
import type { Network, Vm } from '../model/schema.ts';
import type { RegistryState } from './registry-state.ts';

export interface Placement {
  networks: Network[];
  vms: Vm[];
  /** Passwords of the placed VMs, by VM id. */
  passwords: Map<string, string>;
  /** VMs placed here that cannot be served: their network is missing. */
  orphans: { id: string; network: string }[];
}

export function placementOf(state: Pick<RegistryState, 'networks' | 'vms' | 'passwords'>, hostId: string): Placement {
  const networks = new Map<string, Network>();
  const vms: Vm[] = [];
  const passwords = new Map<string, string>();
  const orphans: Placement['orphans'] = [];
  const ids = [...state.vms.keys()].sort();
  for (const id of ids) {
    const placed = state.vms.get(id);
    if (placed === undefined || placed.host !== hostId) continue;
    const network = state.networks.get(placed.vm.network);
    if (network === undefined) {
      orphans.push({ id, network: placed.vm.network });
      continue;
    }
    networks.set(network.id, network);
    vms.push(placed.vm);
    const password = state.passwords.get(id);
    if (password !== undefined) passwords.set(id, password);
  }
  return { networks: [...networks.values()].sort((a, b) => a.id.localeCompare(b.id)), vms, passwords, orphans };
}
