// Deterministic kernel object names. Everything imds creates is recognisable by name prefix and,
// for links in the hypervisor namespace, by an ifalias ownership mark.
import { createHash } from 'node:crypto';

export const METADATA_IP = '169.254.169.254';

/** Default prefix of the per-network namespaces (config key `namespace_prefix`). */
export const DEFAULT_NAMESPACE_PREFIX = 'imds-';

/** Name of the veth end inside every network namespace. */
export const INNER_LINK = 'imds0';

/** The nftables table imds owns inside each network namespace (family ip). */
export const NFT_TABLE = 'imds';

/**
 * The bridge-family nftables table imds owns in the hypervisor namespace for each network: named
 * like the network's namespace, so the prefix marks both as this daemon's.
 */
export function bridgeTableName(namespacePrefix: string, networkId: string): string {
  return namespaceName(namespacePrefix, networkId);
}

/**
 * MAC address of the inner veth end of every network: one per daemon (namespace prefix), known
 * before any link exists. The same on every bridge on purpose: VMs on different networks may share
 * a MAC and an address (separate tenants, same plan), so the rule that steers a VM's metadata
 * frames cannot know which bridge it is on; with one address for every imds0, each bridge delivers
 * to its own. Locally administered unicast (02:…); it never leaves the host (uplinks are fenced).
 */
export function innerMac(namespacePrefix: string): string {
  const digest = createHash('sha256').update(`imds0:${namespacePrefix}`).digest();
  return ['02', ...[...digest.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** ifalias written on every link imds creates in the hypervisor namespace: `imds:<network>:<role>`. */
export const OWNER_ALIAS_PREFIX = 'imds:';

export type LinkRole = 'bridge' | 'veth';

export function namespaceName(prefix: string, networkId: string): string {
  return `${prefix}${networkId}`;
}

export function defaultBridgeName(networkId: string): string {
  return `imdsb-${networkId}`;
}

export function bridgeNameOf(net: { id: string; bridge?: string | undefined }): string {
  return net.bridge ?? defaultBridgeName(net.id);
}

export function outerVethName(networkId: string): string {
  return `imdsv-${networkId}`;
}

export function ownerAlias(networkId: string, role: LinkRole): string {
  return `${OWNER_ALIAS_PREFIX}${networkId}:${role}`;
}

export function parseOwnerAlias(alias: string | undefined): { networkId: string; role: LinkRole } | undefined {
  if (alias === undefined || !alias.startsWith(OWNER_ALIAS_PREFIX)) return undefined;
  const [networkId, role] = alias.slice(OWNER_ALIAS_PREFIX.length).split(':');
  if (networkId === undefined || (role !== 'bridge' && role !== 'veth')) return undefined;
  return { networkId, role };
}
