// openstack/<version>/network_data.json (from 2015-10-15), as Nova's netutils.get_network_metadata
// builds it for one VIF with one IPv4 subnet (metadata-api.md §5).
import { netmaskText, parseCidr } from '../model/ipv4.ts';
import { derivedIds, type InstanceFacts } from './instance.ts';

export function networkData(facts: InstanceFacts): Record<string, unknown> {
  const net = facts.network;
  const ids = derivedIds(facts);
  const link = ids.tap;
  const dhcp = net.dhcp === true;
  const dns = (net.dns ?? []).map((address) => ({ type: 'dns', address }));
  const links = [
    {
      id: link,
      vif_id: ids.port,
      type: 'bridge',
      // Nova sends null on DHCP networks so the guest takes the MTU from DHCP (bug 1899487).
      mtu: dhcp ? null : (net.mtu ?? 1500),
      ethernet_mac_address: facts.vm.mac,
    },
  ];
  let network: Record<string, unknown>;
  if (dhcp) {
    network = { id: 'network0', type: 'ipv4_dhcp', link, network_id: ids.network };
  } else {
    const parsed = parseCidr(net.cidr);
    const prefix = parsed.ok ? parsed.cidr.prefix : 32;
    const routes = net.gateway === undefined ? [] : [{ network: '0.0.0.0', netmask: '0.0.0.0', gateway: net.gateway }];
    network = {
      id: 'network0',
      type: 'ipv4',
      link,
      ip_address: facts.vm.ip,
      netmask: netmaskText(prefix),
      routes,
      network_id: ids.network,
      services: dns,
    };
  }
  return { links, networks: [network], services: dns };
}
