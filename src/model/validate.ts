// Rules that span several records (uniqueness, addresses inside their network). Pure: they return
// the problems found, each with the path of the offending field, so every caller (configuration
// file, admin API, batch import) reports them the same way. Single-record checks take lookups so
// the daemon can validate one change against thousands of VMs without rescanning them.
import { cidrContains, isReservedInCidr, parseCidr, parseIpv4, type Cidr } from './ipv4.ts';
import { bridgeNameOf, METADATA_IP } from './names.ts';
import type { Network, Vm } from './schema.ts';

export type Path = (string | number)[];

export interface Problem {
  path: Path;
  message: string;
}

const METADATA = parseIpv4(METADATA_IP) as number;

// ---------------------------------------------------------------------------------------------
// Networks

export interface NetworkLookups {
  /** Label of the other network using this bridge name, if any. */
  bridgeUser(bridge: string, self: string): string | undefined;
  uplinkUser(uplink: string, self: string): string | undefined;
}

/** Rules for one network; `at(field)` builds the path of a field. */
export function networkProblems(net: Network, lookups: NetworkLookups, at: (field: string) => Path): Problem[] {
  const problems: Problem[] = [];
  const bridge = bridgeNameOf(net);
  const bridgeUser = lookups.bridgeUser(bridge, net.id);
  if (bridgeUser !== undefined) {
    problems.push({
      path: at('bridge'),
      message: `bridge "${bridge}" is already used by ${bridgeUser}; two networks on one bridge would both answer ARP for ${METADATA_IP}`,
    });
  }
  if (net.bridge !== undefined && net.bridge.startsWith('imdsv-')) {
    problems.push({ path: at('bridge'), message: `"${net.bridge}" uses the prefix imdsv-, which imds reserves for its veths` });
  }
  if (net.uplink !== undefined) {
    const uplinkUser = lookups.uplinkUser(net.uplink, net.id);
    if (uplinkUser !== undefined) problems.push({ path: at('uplink'), message: `uplink "${net.uplink}" is already used by ${uplinkUser}` });
    if (net.uplink === bridge) problems.push({ path: at('uplink'), message: 'the uplink cannot be the bridge itself' });
  }
  const parsed = parseCidr(net.cidr);
  if (!parsed.ok) return problems; // reported by the schema
  const cidr = parsed.cidr;
  if (cidrContains(cidr, METADATA))
    problems.push({ path: at('cidr'), message: `${cidr.text} contains the metadata address ${METADATA_IP}` });
  const service = parseIpv4(net.service_ip) as number;
  checkHostAddress(problems, cidr, service, at('service_ip'), 'service_ip');
  if (net.gateway !== undefined) {
    const gateway = parseIpv4(net.gateway) as number;
    checkHostAddress(problems, cidr, gateway, at('gateway'), 'gateway');
    if (gateway === service) problems.push({ path: at('gateway'), message: 'gateway must differ from service_ip' });
  }
  return problems;
}

function checkHostAddress(problems: Problem[], cidr: Cidr, address: number, path: Path, what: string): void {
  if (!cidrContains(cidr, address)) problems.push({ path, message: `${what} is outside ${cidr.text}` });
  else if (isReservedInCidr(cidr, address)) problems.push({ path, message: `${what} is the network or broadcast address of ${cidr.text}` });
}

/** Every network of a list, in order: duplicates refer to the earlier entry. */
export function checkNetworks(networks: readonly Network[], root = 'networks'): Problem[] {
  const problems: Problem[] = [];
  const ids = new Map<string, number>();
  const bridges = new Map<string, number>();
  const uplinks = new Map<string, number>();
  networks.forEach((net, i) => {
    const at = (field: string): Path => [root, i, field];
    const first = ids.get(net.id);
    if (first !== undefined) {
      problems.push({ path: at('id'), message: `duplicate network id "${net.id}" (also ${root}[${first}])` });
      return; // its derived names clash too; one message is enough
    }
    ids.set(net.id, i);
    const label = (j: number | undefined): string | undefined => (j === undefined ? undefined : `${root}[${j}]`);
    problems.push(...networkProblems(net, { bridgeUser: (b) => label(bridges.get(b)), uplinkUser: (u) => label(uplinks.get(u)) }, at));
    if (!bridges.has(bridgeNameOf(net))) bridges.set(bridgeNameOf(net), i);
    if (net.uplink !== undefined && !uplinks.has(net.uplink)) uplinks.set(net.uplink, i);
  });
  return problems;
}

// ---------------------------------------------------------------------------------------------
// VMs

export interface VmLookups {
  network(id: string): Network | undefined;
  /** Label of another VM with this address in the network (not `self`), if any. */
  ipUser(network: string, ip: string, self: string): string | undefined;
  macUser(network: string, mac: string, self: string): string | undefined;
}

/** Rules for one VM against its network and the other VMs. */
/** A network's CIDR parsed once per network object (records are replaced, never changed): a whole set's check parses each once. */
const cidrs = new WeakMap<Network, ReturnType<typeof parseCidr>>();
function cidrOf(net: Network): ReturnType<typeof parseCidr> {
  let parsed = cidrs.get(net);
  if (parsed === undefined) cidrs.set(net, (parsed = parseCidr(net.cidr)));
  return parsed;
}

export function vmProblems(vm: Vm, lookups: VmLookups, at: (field: string) => Path): Problem[] {
  const problems: Problem[] = [];
  const net = lookups.network(vm.network);
  if (net === undefined) return [{ path: at('network'), message: `unknown network "${vm.network}"` }];
  const parsed = cidrOf(net);
  if (!parsed.ok) return problems;
  const address = parseIpv4(vm.ip) as number;
  if (!cidrContains(parsed.cidr, address)) {
    problems.push({ path: at('ip'), message: `${vm.ip} is outside network "${net.id}" (${parsed.cidr.text})` });
  } else if (isReservedInCidr(parsed.cidr, address)) {
    problems.push({ path: at('ip'), message: `${vm.ip} is the network or broadcast address of ${parsed.cidr.text}` });
  } else if (vm.ip === net.service_ip) {
    problems.push({ path: at('ip'), message: `${vm.ip} is the service_ip of network "${net.id}"` });
  } else if (vm.ip === net.gateway) {
    problems.push({ path: at('ip'), message: `${vm.ip} is the gateway of network "${net.id}"` });
  }
  const ipUser = lookups.ipUser(vm.network, vm.ip, vm.id);
  if (ipUser !== undefined) problems.push({ path: at('ip'), message: `${vm.ip} is already used in network "${vm.network}" by ${ipUser}` });
  const macUser = lookups.macUser(vm.network, vm.mac, vm.id);
  if (macUser !== undefined)
    problems.push({ path: at('mac'), message: `${vm.mac} is already used in network "${vm.network}" by ${macUser}` });
  return problems;
}

/** A VM with where it came from, for messages. */
export interface LabelledVm {
  vm: Vm;
  /** Path of the record in the input, e.g. ['vms', 3]. */
  path: Path;
  /** How other messages refer to it, e.g. `vms[3]` or `VM 1b4e…`. */
  label: string;
}

/** A full set of VMs against a full set of networks; duplicates refer to the earlier entry. */
export function checkVmSet(networks: readonly Network[], vms: readonly LabelledVm[]): Problem[] {
  const problems: Problem[] = [];
  const byId = new Map<string, Network>();
  for (const n of networks) if (!byId.has(n.id)) byId.set(n.id, n);
  const ids = new Map<string, string>();
  const ips = new Map<string, string>();
  const macs = new Map<string, string>();
  for (const { vm, path, label } of vms) {
    const at = (field: string): Path => [...path, field];
    const sameId = ids.get(vm.id);
    if (sameId !== undefined) {
      problems.push({ path: at('id'), message: `duplicate VM id ${vm.id} (also ${sameId})` });
      continue;
    }
    ids.set(vm.id, label);
    problems.push(
      ...vmProblems(
        vm,
        { network: (id) => byId.get(id), ipUser: (n, ip) => ips.get(`${n}/${ip}`), macUser: (n, mac) => macs.get(`${n}/${mac}`) },
        at,
      ),
    );
    if (!ips.has(`${vm.network}/${vm.ip}`)) ips.set(`${vm.network}/${vm.ip}`, label);
    if (!macs.has(`${vm.network}/${vm.mac}`)) macs.set(`${vm.network}/${vm.mac}`, label);
  }
  return problems;
}

export function checkVms(networks: readonly Network[], vms: readonly Vm[], root = 'vms'): Problem[] {
  return checkVmSet(
    networks,
    vms.map((vm, i) => ({ vm, path: [root, i], label: `${root}[${i}]` })),
  );
}

/** `networks[1].cidr` from ['networks', 1, 'cidr']. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out === '' ? '(top level)' : out;
}
