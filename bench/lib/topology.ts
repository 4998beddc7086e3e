// Bench topology: a throwaway hypervisor namespace, K imds networks that all use the TEST-NET
// 198.51.100.0/24 (overlapping tenant networks, each in its own namespace), 250 VMs per network,
// and guest namespaces on the bridges. Everything is named imdsbench-<id>-… and removed by name.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Sandbox } from '../../test/helpers/sandbox.ts';
import { sh } from '../../test/helpers/sandbox.ts';

export const CIDR = '198.51.100.0/24';
export const SERVICE_IP = '198.51.100.2';
export const GATEWAY = '198.51.100.1';
export const VMS_PER_NETWORK = 250;

export interface BenchVm {
  id: string;
  network: string;
  ip: string;
  mac: string;
  hostname: string;
  user_data: string;
  public_keys: Record<string, string>;
  meta: Record<string, string>;
}

export function networkId(k: number): string {
  return `b${k}`;
}

export function vmOf(k: number, i: number): BenchVm {
  const n = k * VMS_PER_NETWORK + i;
  return {
    id: `b0000000-0000-4000-8000-${String(n).padStart(12, '0')}`,
    network: networkId(k),
    ip: `198.51.100.${3 + i}`,
    mac: `52:54:00:${(k >> 8).toString(16).padStart(2, '0')}:${(k & 255).toString(16).padStart(2, '0')}:${(3 + i).toString(16).padStart(2, '0')}`,
    hostname: `vm-${k}-${i}`,
    user_data: `#cloud-config\nhostname: vm-${k}-${i}\npackages: [nginx]\nruncmd:\n  - [sh, -c, "echo booted ${n}"]\n`,
    public_keys: { default: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${String(n).padStart(10, '0')}bench bench@imds` },
    meta: { role: i % 2 === 0 ? 'web' : 'db', index: String(n) },
  };
}

export function networks(count: number): { id: string; cidr: string; service_ip: string; gateway: string }[] {
  return Array.from({ length: count }, (_, k) => ({ id: networkId(k), cidr: CIDR, service_ip: SERVICE_IP, gateway: GATEWAY }));
}

export function vms(networkCount: number, perNetwork = VMS_PER_NETWORK): BenchVm[] {
  const out: BenchVm[] = [];
  for (let k = 0; k < networkCount; k++) for (let i = 0; i < perNetwork; i++) out.push(vmOf(k, i));
  return out;
}

export interface GuestRef {
  vm: BenchVm;
  netns: string;
}

/** MAC of the namespace end of a network's veth (imds0). */
async function serviceMac(sb: Sandbox, network: string): Promise<string> {
  const out = await sh(['ip', '-n', `${sb.nsPrefix}${network}`, '-j', 'link', 'show', 'imds0']);
  return (JSON.parse(out.stdout) as { address: string }[])[0]?.address as string;
}

/**
 * Creates guest namespaces for the given VMs on their networks' bridges: a few `ip -batch` calls for
 * the namespaces and the veths, then one per guest for its address and route.
 *
 * Neighbour entries are made permanent on both sides (guest -> service address, service namespace
 * -> every guest). Otherwise a storm's first packets are a thousand simultaneous ARP broadcasts,
 * each flooded to every port of the bridge, which overflow the kernel's per-CPU packet backlog and
 * drop SYNs: an artefact of starting every simulated VM in the same microsecond, the same for every
 * server under test, and not what the benchmark is about.
 */
export async function addGuests(sb: Sandbox, list: BenchVm[], tag = 'g', serviceIp = SERVICE_IP): Promise<GuestRef[]> {
  const macs = new Map<string, string>();
  for (const network of new Set(list.map((v) => v.network))) macs.set(network, await serviceMac(sb, network));
  const refs = list.map((vm, j) => ({ vm, netns: `${sb.base}${tag}${j}` }));
  await sh(['ip', '-batch', '-'], { stdin: `${refs.map((r) => `netns add ${r.netns}`).join('\n')}\n` });
  const hostLines: string[] = [];
  refs.forEach((r, j) => {
    const end = `${tag}${j}`.slice(0, 15);
    hostLines.push(
      `link add ${end} type veth peer name eth0 netns ${r.netns}`,
      `link set ${end} master imdsb-${r.vm.network}`,
      `link set ${end} up`,
    );
  });
  await sb.hvRun(['ip', '-batch', '-'], { stdin: `${hostLines.join('\n')}\n` });
  const concurrency = 8;
  for (let start = 0; start < refs.length; start += concurrency) {
    await Promise.all(
      refs.slice(start, start + concurrency).map((r) =>
        sh(['ip', '-n', r.netns, '-batch', '-'], {
          stdin:
            [
              'link set lo up',
              `link set eth0 address ${r.vm.mac}`,
              `addr add ${r.vm.ip}/24 dev eth0`,
              'link set eth0 up',
              `route add 169.254.169.254/32 via ${serviceIp}`,
              `neigh replace ${serviceIp} lladdr ${macs.get(r.vm.network)} dev eth0 nud permanent`,
            ].join('\n') + '\n',
        }),
      ),
    );
  }
  const byNetwork = new Map<string, GuestRef[]>();
  for (const r of refs) byNetwork.set(r.vm.network, [...(byNetwork.get(r.vm.network) ?? []), r]);
  for (const [network, group] of byNetwork) {
    const lines = group.map((r) => `neigh replace ${r.vm.ip} lladdr ${r.vm.mac} dev imds0 nud permanent`);
    await sh(['ip', '-n', `${sb.nsPrefix}${network}`, '-batch', '-'], { stdin: `${lines.join('\n')}\n` });
  }
  return refs;
}

/** cloud-init's OpenStack datasource request sequence (clients.md §5), for the storm client. */
export const CLOUD_INIT_SEQUENCE = [
  '/openstack',
  '/openstack',
  '/openstack/2018-08-27/meta_data.json',
  '/openstack/2018-08-27/user_data',
  '/openstack/2018-08-27/vendor_data.json',
  '/openstack/2018-08-27/vendor_data2.json',
  '/openstack/2018-08-27/network_data.json',
  '/latest/meta-data/',
  '/latest/meta-data/block-device-mapping/',
  '/latest/meta-data/placement/',
  '/latest/meta-data/public-keys/',
  '/latest/meta-data/block-device-mapping/ami',
  '/latest/meta-data/block-device-mapping/root',
  '/latest/meta-data/placement/availability-zone',
  '/latest/meta-data/public-keys/0/openssh-key',
  '/latest/meta-data/ami-id',
  '/latest/meta-data/ami-launch-index',
  '/latest/meta-data/ami-manifest-path',
  '/latest/meta-data/hostname',
  '/latest/meta-data/instance-action',
  '/latest/meta-data/instance-id',
  '/latest/meta-data/instance-type',
  '/latest/meta-data/local-hostname',
  '/latest/meta-data/local-ipv4',
  '/latest/meta-data/public-hostname',
  '/latest/meta-data/reservation-id',
  '/latest/meta-data/security-groups',
];

export function writeStormFiles(dir: string, guests: GuestRef[]): { guestsFile: string; pathsFile: string } {
  mkdirSync(dir, { recursive: true });
  const guestsFile = join(dir, `guests-${guests.length}.txt`);
  const pathsFile = join(dir, 'paths.txt');
  writeFileSync(guestsFile, `${guests.map((g) => `/run/netns/${g.netns}`).join('\n')}\n`);
  writeFileSync(pathsFile, `${CLOUD_INIT_SEQUENCE.join('\n')}\n`);
  return { guestsFile, pathsFile };
}
