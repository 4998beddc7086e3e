// The facts about one instance that every document is built from, resolved once per VM change.
import { createHash } from 'node:crypto';
import type { Network, Vm } from '../model/schema.ts';

export interface InstanceFacts {
  uuid: string;
  /** Display name (Nova `name`). */
  name: string;
  /** Host name as served: the VM's host name plus the network's domain, unless it has dots. */
  hostname: string;
  launchIndex: number;
  availabilityZone: string;
  projectId: string;
  meta: Readonly<Record<string, string>> | undefined;
  /** [key name, key text] in declaration order. */
  publicKeys: readonly (readonly [string, string])[];
  userData: Buffer | undefined;
  /** Vendor data: the network's defaults with the VM's values merged over them. */
  vendorData: Readonly<Record<string, unknown>>;
  network: Network;
  vm: Vm;
}

/** Stable identifiers derived from the VM and network ids (Nova would take them from its DB). */
export interface DerivedIds {
  /** Neutron-style port UUID of the VM's interface. */
  port: string;
  /** Host-side device name of that port, as Nova names it (`tap` + 11 characters). */
  tap: string;
  /** Neutron-style network UUID. */
  network: string;
  /** EC2 `i-` + 8 hex digits. */
  ec2Instance: string;
  /** EC2 `r-` + 8 characters of [0-9a-z]. */
  reservation: string;
  /** EC2 `ami-` + 8 hex digits, or Nova's literal `None` without an image. */
  ami: string;
}

export interface Defaults {
  /** Appended to bare host names (Nova's dhcp_domain); "" for none. */
  dhcpDomain: string;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/** Stable project id for a network when the VM names none: 32 hex digits, like a Keystone id. */
export function derivedProjectId(networkId: string): string {
  return digest(`imds-project:${networkId}`).toString('hex').slice(0, 32);
}

/** A stable version-4-shaped UUID derived from a name. */
export function derivedUuid(name: string): string {
  const b = digest(`imds-uuid:${name}`);
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function base36(bytes: Buffer, length: number): string {
  let out = '';
  for (let i = 0; i < length; i++) out += ((bytes[i] as number) % 36).toString(36);
  return out;
}

export function instanceFacts(vm: Vm, network: Network, defaults: Defaults): InstanceFacts {
  const domain = network.domain ?? defaults.dhcpDomain;
  const hostname = vm.hostname.includes('.') || domain === '' ? vm.hostname : `${vm.hostname}.${domain}`;
  const meta = vm.meta !== undefined && Object.keys(vm.meta).length > 0 ? vm.meta : undefined;
  return {
    uuid: vm.id,
    name: vm.name ?? vm.hostname,
    hostname,
    launchIndex: 0,
    availabilityZone: vm.availability_zone ?? 'nova',
    projectId: vm.project_id ?? derivedProjectId(network.id),
    meta,
    publicKeys: Object.entries(vm.public_keys ?? {}),
    userData: vm.user_data,
    vendorData:
      vm.vendor_data === undefined ? (network.vendor_data ?? NO_VENDOR_DATA) : { ...(network.vendor_data ?? {}), ...vm.vendor_data },
    network,
    vm,
  };
}

const NO_VENDOR_DATA: Readonly<Record<string, unknown>> = Object.freeze({});

/** The derived ids, computed when asked (EC2 and network_data.json answers, once or twice per boot). */
export function derivedIds(facts: InstanceFacts): DerivedIds {
  const { vm, network } = facts;
  const port = derivedUuid(`port:${network.id}:${vm.id}`);
  return {
    port,
    tap: `tap${port.slice(0, 11)}`,
    network: derivedUuid(`network:${network.id}`),
    ec2Instance: `i-${digest(`ec2-instance:${vm.id}`).toString('hex').slice(0, 8)}`,
    reservation: `r-${base36(digest(`ec2-reservation:${vm.id}`), 8)}`,
    ami: vm.image_id === undefined ? 'None' : `ami-${digest(`ec2-image:${vm.image_id}`).toString('hex').slice(0, 8)}`,
  };
}
