// `imds doctor`: the hops of one VM's path, of one network, or of every network (network level),
// judged on evidence gathered now (gather.ts) by the pure hop modules. Reads only.
import { ImdsError } from '../errors.ts';
import type { Network, Vm } from '../model/schema.ts';
import { dhcpLeaseHop, dhcpServerHop } from './dhcp-hops.ts';
import type { NetworkEvidence, VmEvidence } from './evidence.ts';
import { gatherNetwork, gatherVm, type DoctorDeps } from './gather.ts';
import { reportOf, fail, type DoctorReport, type Hop } from './hop.ts';
import { bridgeHop, bridgePortHop, interceptionHop, vmInterceptionHop } from './host-hops.ts';
import { addressesHop, namespaceHop, neighbourHop, vethHop } from './namespace-hops.ts';
import { guardHop, nftTableHop, vmGuardHop } from './nft-hops.ts';
import { endpointHop, listenerHop, networkHop, rateLimitHop, requestsHop, tokensHop, vmHop } from './service-hops.ts';

export type { DoctorDeps } from './gather.ts';
export type { DoctorReport, Hop } from './hop.ts';

/** The networks and VMs doctor looks at (the inventory). */
export interface DoctorInventory {
  networkList(): Network[];
  getNetwork(id: string): { network: Network } | undefined;
  vmList(network?: string): { vm: Vm }[];
}

/** Reads that failed: shown as a hop of their own, so that no other hop's ✗ is taken for the whole story. */
function readsHop(ev: NetworkEvidence): Hop[] {
  if (ev.errors.size === 0) return [];
  const what = [...ev.errors].map(([k, v]) => `${k}: ${v}`).join('; ');
  return [
    fail(
      'reads',
      `some kernel state could not be read: ${what}`,
      'the hops that depend on it are unreliable; the daemon log has the command that failed',
    ),
  ];
}

/** The network-level hops (pure). */
export function networkHops(ev: NetworkEvidence, vms: readonly Vm[]): Hop[] {
  return [
    networkHop(ev),
    bridgeHop(ev),
    interceptionHop(ev, vms),
    namespaceHop(ev),
    vethHop(ev),
    addressesHop(ev),
    nftTableHop(ev),
    guardHop(ev, vms),
    ...(ev.dhcp === undefined ? [] : [dhcpServerHop(ev, ev.dhcp)]),
    listenerHop(ev),
    ...readsHop(ev),
  ];
}

/** The hops of one VM's path, in the order its request takes them (pure). */
export function vmHops(ev: NetworkEvidence, vmEv: VmEvidence): Hop[] {
  const { vm } = vmEv;
  return [
    vmHop(vmEv),
    networkHop(ev),
    bridgeHop(ev),
    bridgePortHop(ev, vmEv),
    vmInterceptionHop(ev, vm),
    namespaceHop(ev),
    vethHop(ev),
    addressesHop(ev),
    neighbourHop(ev, vmEv),
    nftTableHop(ev),
    vmGuardHop(ev, vm),
    ...(ev.dhcp === undefined ? [] : [dhcpServerHop(ev, ev.dhcp), dhcpLeaseHop(ev.dhcp, vm, vmEv.now)]),
    listenerHop(ev),
    endpointHop(vm),
    tokensHop(vmEv),
    rateLimitHop(vmEv),
    requestsHop(vmEv),
    ...readsHop(ev),
  ];
}

function networkOf(inventory: DoctorInventory, id: string): Network {
  const n = inventory.getNetwork(id);
  if (n === undefined) throw new ImdsError('NOT_FOUND', `no network ${id}`, { field: 'network' });
  return n.network;
}

export async function doctorVm(deps: DoctorDeps, inventory: DoctorInventory, vm: Vm): Promise<DoctorReport> {
  const all = inventory.networkList();
  const ev = await gatherNetwork(deps, networkOf(inventory, vm.network), all);
  return reportOf(vmHops(ev, await gatherVm(deps, vm, ev, all)));
}

export async function doctorNetwork(deps: DoctorDeps, inventory: DoctorInventory, id: string): Promise<DoctorReport> {
  const net = networkOf(inventory, id);
  const ev = await gatherNetwork(deps, net, inventory.networkList());
  return reportOf(
    networkHops(
      ev,
      inventory.vmList(id).map((v) => v.vm),
    ),
  );
}

/** Every network, network level; each hop's name carries its network (`net1/bridge`). */
export async function doctorAll(deps: DoctorDeps, inventory: DoctorInventory): Promise<DoctorReport> {
  const hops: Hop[] = [];
  for (const net of inventory.networkList()) {
    const report = await doctorNetwork(deps, inventory, net.id);
    hops.push(...report.hops.map((h) => ({ ...h, name: `${net.id}/${h.name}` })));
  }
  return reportOf(hops);
}
