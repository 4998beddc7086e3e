// The DHCP server of a `dhcp: true` network (pure): dnsmasq running in the namespace, serving, and
// the VM's static lease line in its hosts file (what dnsmasq hands out), with the lease it gave.
import { renderHosts } from '../dhcp/dnsmasq-config.ts';
import type { Vm } from '../model/schema.ts';
import type { DhcpEvidence, NetworkEvidence } from './evidence.ts';
import { fail, pass, type Hop } from './hop.ts';

const restarts = (n: number): string => `${n} restart${n === 1 ? '' : 's'}`;

const SERVER_FIX =
  "imds restarts dnsmasq with backoff (0.5 s to 30 s); `last_error` is dnsmasq's own message: fix what it names (imds network show NET)";

export function dhcpServerHop(ev: NetworkEvidence, dhcp: DhcpEvidence): Hop {
  const s = dhcp.status;
  if (s === undefined)
    return fail(
      'dhcp-server',
      `no dnsmasq for ${ev.network.id}: the network does not serve yet`,
      'see the network hop: the daemon starts dnsmasq once the network serves',
    );
  const why = s.last_error === undefined ? '' : `; last error: ${s.last_error}`;
  if (s.state !== 'running' || s.pid === undefined)
    return fail('dhcp-server', `dnsmasq is ${s.state} (${restarts(s.restarts)})${why}`, SERVER_FIX);
  if (!s.healthy)
    return fail('dhcp-server', `dnsmasq (pid ${s.pid}) was restarted ${s.restarts} times and has not stayed up yet${why}`, SERVER_FIX);
  if (dhcp.processNetnsInode === undefined) return fail('dhcp-server', `dnsmasq pid ${s.pid} is gone`, SERVER_FIX);
  if (dhcp.processNetnsInode !== ev.namespaceInode) {
    return fail(
      'dhcp-server',
      `dnsmasq pid ${s.pid} runs in another network namespace (inode ${dhcp.processNetnsInode}) than ${ev.desired.netns}`,
      SERVER_FIX,
    );
  }
  return pass('dhcp-server', `dnsmasq pid ${s.pid} running in ${ev.desired.netns} (${restarts(s.restarts)})`);
}

interface Lease {
  expiry: number;
  mac: string;
  ip: string;
}

function leases(text: string | undefined): Lease[] {
  return (text ?? '')
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length >= 3)
    .map((f) => ({ expiry: Number(f[0]), mac: (f[1] ?? '').toLowerCase(), ip: f[2] ?? '' }));
}

export function dhcpLeaseHop(dhcp: DhcpEvidence, vm: Vm, now: number): Hop {
  const fix =
    "the file is imds's: do not edit it. Any change of the network's VMs rewrites it whole (dnsmasq re-reads it), " +
    'and so does a restart of the daemon';
  if (dhcp.hostsText === undefined) return fail('dhcp-lease', `${dhcp.hostsPath} cannot be read`, fix);
  const want = renderHosts([{ mac: vm.mac, ip: vm.ip, hostname: vm.hostname }]).trim();
  const lines = dhcp.hostsText.split('\n').filter(Boolean);
  if (!lines.includes(want)) {
    const near = lines.filter((l) => l.startsWith(`${vm.mac},`) || l.split(',')[1] === vm.ip);
    return fail(
      'dhcp-lease',
      `${dhcp.hostsPath} has no line ${want}${near.length === 0 ? '' : ` (has ${near.join(' | ')})`}: dnsmasq offers the VM nothing`,
      fix,
    );
  }
  const lease = leases(dhcp.leasesText).find((l) => l.mac === vm.mac || l.ip === vm.ip);
  const until =
    lease === undefined || lease.expiry <= 0
      ? ''
      : ` until ${new Date(lease.expiry * 1000).toISOString()}${lease.expiry * 1000 < now ? ' (expired)' : ''}`;
  const given = lease === undefined ? 'no lease given yet' : `leased ${lease.ip} to ${lease.mac}${until}`;
  return pass('dhcp-lease', `static lease ${want} in ${dhcp.hostsPath}; ${given}`);
}
