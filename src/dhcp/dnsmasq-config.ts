// What one network's dnsmasq is told (pure): its command line, the static hosts (MAC -> address
// and name, from the registered VMs) and the options it hands out. The hosts and options files
// are re-read on SIGHUP, so VM and option changes never restart it (leases are kept).
import { join } from 'node:path';
import { METADATA_IP, INNER_LINK } from '../model/names.ts';
import { formatIpv4, netmaskText, parseCidr } from '../model/ipv4.ts';
import type { Network } from '../model/schema.ts';

/** Nova and Neutron hand out day-long leases; so does imds unless `dhcp_lease_time` says otherwise. */
export const DEFAULT_LEASE_SECONDS = 86_400;

export interface DhcpPaths {
  dir: string;
  hosts: string;
  options: string;
  leases: string;
  pid: string;
}

export function dhcpPaths(dhcpDir: string, networkId: string): DhcpPaths {
  const dir = join(dhcpDir, networkId);
  return { dir, hosts: join(dir, 'hosts'), options: join(dir, 'options'), leases: join(dir, 'leases'), pid: join(dir, 'dnsmasq.pid') };
}

export interface DhcpHost {
  mac: string;
  ip: string;
  hostname: string;
}

/** `--dhcp-hostsfile`: one `MAC,ADDRESS,NAME` line per VM (the name's first label). */
export function renderHosts(hosts: readonly DhcpHost[]): string {
  const lines = hosts.map((h) => `${h.mac.toLowerCase()},${h.ip},${h.hostname.split('.')[0] ?? h.hostname}`).sort();
  return lines.length === 0 ? '' : `${lines.join('\n')}\n`;
}

/**
 * `--dhcp-optsfile`. Router, DNS servers and domain are sent empty when not declared (dnsmasq
 * would otherwise announce itself). Classless static routes (RFC 3442, option 121, and the
 * Microsoft option 249 older Windows asks for) carry 169.254.169.254/32 via the service address
 * and, because a client given option 121 ignores option 3, the default route too. Option 249 has no
 * name in dnsmasq: it is given by number (`option:249` is refused as a bad option), and dnsmasq
 * encodes its routes as it does 121's.
 */
export function renderOptions(net: Network, domain: string): string {
  const lines: string[] = [];
  lines.push(net.gateway === undefined ? 'option:router' : `option:router,${net.gateway}`);
  lines.push(net.dns === undefined || net.dns.length === 0 ? 'option:dns-server' : `option:dns-server,${net.dns.join(',')}`);
  if (domain !== '') lines.push(`option:domain-name,${domain}`);
  if (net.mtu !== undefined) lines.push(`option:mtu,${net.mtu}`);
  if (net.ntp !== undefined && net.ntp.length > 0) lines.push(`option:ntp-server,${net.ntp.join(',')}`);
  const routes = [`${METADATA_IP}/32,${net.service_ip}`, ...(net.gateway === undefined ? [] : [`0.0.0.0/0,${net.gateway}`])].join(',');
  lines.push(`option:classless-static-route,${routes}`, `249,${routes}`);
  return `${lines.join('\n')}\n`;
}

/** dnsmasq's command line: DHCP only (no DNS), in the foreground, bound to the namespace's veth end. */
export function dnsmasqArgv(net: Network, paths: DhcpPaths): string[] {
  const parsed = parseCidr(net.cidr);
  if (!parsed.ok) throw new Error(`unvalidated network ${net.id}: ${parsed.reason}`);
  const lease = net.dhcp_lease_time ?? DEFAULT_LEASE_SECONDS;
  return [
    'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--port=0',
    `--interface=${INNER_LINK}`,
    '--except-interface=lo',
    '--bind-interfaces',
    `--dhcp-range=${formatIpv4(parsed.cidr.network)},static,${netmaskText(parsed.cidr.prefix)},${lease}`,
    `--dhcp-hostsfile=${paths.hosts}`,
    `--dhcp-optsfile=${paths.options}`,
    `--dhcp-leasefile=${paths.leases}`,
    `--pid-file=${paths.pid}`,
    '--dhcp-authoritative',
    // Every address is a static lease (the range is `static`), and dnsmasq pings only an address it
    // would allocate dynamically: the check never runs, and without it dnsmasq needs no CAP_NET_RAW,
    // which the unit's bounding set leaves out (dnsmasq 2.81+ refuses to start without a capability
    // its options require).
    '--no-ping',
    '--no-hosts',
    '--no-resolv',
    '--log-facility=-',
  ];
}
