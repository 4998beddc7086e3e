// Rules that span several records (uniqueness, addresses inside their network). Pure: returns the
// problems found, each with the path of the offending field, so every caller (config file, admin
// API) reports them the same way.
import { cidrContains, isReservedInCidr, parseCidr, parseIpv4, type Cidr } from './ipv4.ts';
import { bridgeNameOf, METADATA_IP } from './names.ts';
import type { Network, Vm } from './schema.ts';

export interface Problem {
  path: (string | number)[];
  message: string;
}

const METADATA = parseIpv4(METADATA_IP) as number;

export function checkNetworks(networks: readonly Network[], root = 'networks'): Problem[] {
  const problems: Problem[] = [];
  const ids = new Map<string, number>();
  const bridges = new Map<string, number>();
  const uplinks = new Map<string, number>();
  networks.forEach((net, i) => {
    const at = (field: string): (string | number)[] => [root, i, field];
    const first = ids.get(net.id);
    if (first !== undefined) {
      problems.push({ path: at('id'), message: `duplicate network id "${net.id}" (also ${root}[${first}])` });
      return; // its derived names clash too; one message is enough
    }
    ids.set(net.id, i);

    const bridge = bridgeNameOf(net);
    const sameBridge = bridges.get(bridge);
    if (sameBridge !== undefined) {
      problems.push({
        path: at('bridge'),
        message: `bridge "${bridge}" is already used by ${root}[${sameBridge}]; two networks on one bridge would both answer ARP for ${METADATA_IP}`,
      });
    } else bridges.set(bridge, i);
    if (net.bridge !== undefined && net.bridge.startsWith('imdsv-')) {
      problems.push({ path: at('bridge'), message: `"${net.bridge}" uses the prefix imdsv-, which imds reserves for its veths` });
    }
    if (net.uplink !== undefined) {
      const sameUplink = uplinks.get(net.uplink);
      if (sameUplink !== undefined) problems.push({ path: at('uplink'), message: `uplink "${net.uplink}" is already used by ${root}[${sameUplink}]` });
      else uplinks.set(net.uplink, i);
      if (net.uplink === bridge) problems.push({ path: at('uplink'), message: 'the uplink cannot be the bridge itself' });
    }

    const parsed = parseCidr(net.cidr);
    if (!parsed.ok) return; // reported by the schema
    const cidr = parsed.cidr;
    if (cidrContains(cidr, METADATA)) {
      problems.push({ path: at('cidr'), message: `${cidr.text} contains the metadata address ${METADATA_IP}` });
    }
    const service = parseIpv4(net.service_ip) as number;
    checkHostAddress(problems, cidr, service, at('service_ip'), 'service_ip');
    if (net.gateway !== undefined) {
      const gateway = parseIpv4(net.gateway) as number;
      checkHostAddress(problems, cidr, gateway, at('gateway'), 'gateway');
      if (gateway === service) problems.push({ path: at('gateway'), message: 'gateway must differ from service_ip' });
    }
  });
  return problems;
}

function checkHostAddress(problems: Problem[], cidr: Cidr, address: number, path: (string | number)[], what: string): void {
  if (!cidrContains(cidr, address)) problems.push({ path, message: `${what} is outside ${cidr.text}` });
  else if (isReservedInCidr(cidr, address)) problems.push({ path, message: `${what} is the network or broadcast address of ${cidr.text}` });
}

export function checkVms(networks: readonly Network[], vms: readonly Vm[], root = 'vms'): Problem[] {
  const problems: Problem[] = [];
  const byId = new Map<string, Network>();
  for (const n of networks) if (!byId.has(n.id)) byId.set(n.id, n);
  const vmIds = new Map<string, number>();
  const ips = new Map<string, number>();
  const macs = new Map<string, number>();
  vms.forEach((vm, i) => {
    const at = (field: string): (string | number)[] => [root, i, field];
    const firstId = vmIds.get(vm.id);
    if (firstId !== undefined) problems.push({ path: at('id'), message: `duplicate VM id ${vm.id} (also ${root}[${firstId}])` });
    else vmIds.set(vm.id, i);

    const net = byId.get(vm.network);
    if (net === undefined) {
      problems.push({ path: at('network'), message: `unknown network "${vm.network}"` });
      return;
    }
    const parsed = parseCidr(net.cidr);
    if (!parsed.ok) return;
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
    const ipKey = `${vm.network}/${vm.ip}`;
    const sameIp = ips.get(ipKey);
    if (sameIp !== undefined) problems.push({ path: at('ip'), message: `${vm.ip} is already used in network "${vm.network}" by ${root}[${sameIp}]` });
    else ips.set(ipKey, i);
    const macKey = `${vm.network}/${vm.mac}`;
    const sameMac = macs.get(macKey);
    if (sameMac !== undefined) problems.push({ path: at('mac'), message: `${vm.mac} is already used in network "${vm.network}" by ${root}[${sameMac}]` });
    else macs.set(macKey, i);
  });
  return problems;
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
