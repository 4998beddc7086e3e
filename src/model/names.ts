// Deterministic kernel object names. Everything imds creates is recognisable by name prefix and,
// for links in the hypervisor namespace, by an ifalias ownership mark.

export const METADATA_IP = '169.254.169.254';

/** Default prefix of the per-network namespaces (config key `namespace_prefix`). */
export const DEFAULT_NAMESPACE_PREFIX = 'imds-';

/** Name of the veth end inside every network namespace. */
export const INNER_LINK = 'imds0';

/** The nftables table imds owns inside each network namespace (family ip). */
export const NFT_TABLE = 'imds';

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
