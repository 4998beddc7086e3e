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
  network: Network;
  vm: Vm;
}

export interface Defaults {
  /** Appended to bare host names (Nova's dhcp_domain); "" for none. */
  dhcpDomain: string;
}

/** Stable project id for a network when the VM names none: 32 hex digits, like a Keystone id. */
export function derivedProjectId(networkId: string): string {
  return createHash('sha256').update(`imds-project:${networkId}`).digest('hex').slice(0, 32);
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
    network,
    vm,
  };
}
