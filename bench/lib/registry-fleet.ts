// The registry bench's fleet (bench/registry.ts): N VMs on networks that all use the TEST-NET
// 203.0.113.0/24 (overlapping tenant networks, each in its own namespace on each host), at most 222
// VMs per network (.3–.224), each network's VMs spread round-robin over the hosts (every host builds
// every network: the realistic cloud case). Addresses above .224 are the bench's own: sample VMs that
// are written during the run, with a guest namespace waiting for each. Documents as a controller
// writes them to etcd (docs/registry.md: the admin API's body plus `host`, user data as base64).
import type { BenchVm } from './topology.ts';

export const CIDR = '203.0.113.0/24';
export const SERVICE_IP = '203.0.113.2';
export const GATEWAY = '203.0.113.1';
/** VMs per network at most: .3 to .224. */
export const PER_NETWORK = 222;
/** First address of the bench's own sample VMs (.230 …). */
const SAMPLE_BASE = 230;

export interface FleetNetwork {
  id: string;
  cidr: string;
  service_ip: string;
  gateway: string;
}

/** A VM and the host it is placed on. */
export interface FleetVm extends BenchVm {
  host: string;
}

export interface Fleet {
  networks: FleetNetwork[];
  vms: FleetVm[];
}

export function networkOf(k: number): FleetNetwork {
  return { id: `r${k}`, cidr: CIDR, service_ip: SERVICE_IP, gateway: GATEWAY };
}

function hex2(n: number): string {
  return n.toString(16).padStart(2, '0');
}

/** A MAC unique per network: the network's number and the address's last byte. */
function macOf(k: number, lastByte: number): string {
  return `52:54:00:${hex2(k >> 8)}:${hex2(k & 255)}:${hex2(lastByte)}`;
}

/** A lower-case UUID (version 4 layout) from a one-letter class and a number. */
export function uuidOf(kind: 'a' | 'c' | 'e' | 'f', n: number): string {
  return `${kind}0000000-0000-4000-8000-${String(n).padStart(12, '0')}`;
}

function vmBody(id: string, k: number, lastByte: number, host: string, name: string): FleetVm {
  return {
    id,
    network: `r${k}`,
    ip: `203.0.113.${lastByte}`,
    mac: macOf(k, lastByte),
    hostname: name,
    user_data: `#cloud-config\nhostname: ${name}\npackages: [nginx]\nruncmd:\n  - [sh, -c, "echo booted ${id}"]\n`,
    public_keys: { default: `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${id.slice(-10)}bench bench@imds` },
    meta: { role: lastByte % 2 === 0 ? 'web' : 'db', index: id.slice(-6) },
    host,
  };
}

/** `count` VMs on ceil(count / 222) networks, VM n on network n mod networks, hosts round-robin within each network. */
export function fleet(count: number, hosts: readonly string[]): Fleet {
  const nets = Math.max(1, Math.ceil(count / PER_NETWORK));
  const vms: FleetVm[] = [];
  for (let n = 0; n < count; n++) {
    const k = n % nets;
    const j = Math.floor(n / nets);
    const host = hosts[(j + k) % hosts.length] as string;
    vms.push(vmBody(uuidOf('a', n), k, 3 + j, host, `vm-${k}-${j}`));
  }
  return { networks: Array.from({ length: nets }, (_, k) => networkOf(k)), vms };
}

/**
 * A sample VM of the bench (not in the seeded fleet): on network r0 at 203.0.113.<230 + slot>, so
 * that a guest namespace with that address and MAC can wait on a host's bridge for it.
 */
export function sampleVm(slot: number, serial: number, host: string, kind: 'c' | 'e' | 'f' = 'e'): FleetVm {
  const lastByte = SAMPLE_BASE + slot;
  if (lastByte > 254) throw new Error(`sample slot ${slot} is past 203.0.113.254`);
  return vmBody(uuidOf(kind, serial), 0, lastByte, host, `sample-${slot}-${serial}`);
}

/** The VM document a controller writes (docs/registry.md): the admin API's body, user data as base64, `host`. */
export function vmDocument(vm: FleetVm): string {
  const { user_data, ...rest } = vm;
  return JSON.stringify({ ...rest, user_data_b64: Buffer.from(user_data).toString('base64') });
}

/** A VM of `hostname`'s fleet on this host (the first one, of network r0): its guest shows the host serves. */
export function firstVmOn(f: Fleet, host: string): FleetVm {
  const vm = f.vms.find((v) => v.host === host && v.network === 'r0');
  if (vm === undefined) throw new Error(`no VM of network r0 on ${host}`);
  return vm;
}
