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
 * The one bridge-family nftables table imds owns in the hypervisor namespace, shared by every
 * network: a bridge-family chain cannot be hooked to one bridge, so every frame of every bridge on
 * the host passes every such table, and one table keeps that cost the same whatever the number of
 * networks. Its suffix is longer than a network id can be (9 characters), so no network's legacy
 * table (below) can bear its name.
 */
export function bridgeTableName(namespacePrefix: string): string {
  return `${namespacePrefix}interception`;
}

/**
 * The per-network bridge table of imds before the shared one (named like the network's
 * namespace): still recognised, and removed, when a daemon upgrades.
 */
export function legacyBridgeTableName(namespacePrefix: string, networkId: string): string {
  return namespaceName(namespacePrefix, networkId);
}

/** The network's set of `MAC . IPv4` pairs in the shared bridge table. */
export function bridgeGuestSetName(networkId: string): string {
  return `guests_${networkId}`;
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

/** Prefix of the outer veth end of every network (the bridge table's fence matches it). */
export const OUTER_VETH_PREFIX = 'imdsv-';

export function outerVethName(networkId: string): string {
  return `${OUTER_VETH_PREFIX}${networkId}`;
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
