// Desired kernel state per network, derived from the declared networks (pure).
import { parseCidr } from '../model/ipv4.ts';
import { bridgeNameOf, bridgeTableName, INNER_LINK, innerMac, METADATA_IP, namespaceName, outerVethName } from '../model/names.ts';
import type { Network } from '../model/schema.ts';
import { renderBridgeTable } from '../bridge/bridge-table.ts';
import { renderNatTable, type RenderedTable } from '../netns/nft.ts';

export interface DesiredNetwork {
  id: string;
  netns: string;
  bridge: string;
  uplink: string | undefined;
  mtu: number | undefined;
  outer: string;
  inner: string;
  /** MAC address of the inner end (the target of L2 interception). */
  innerMac: string;
  /** Addresses on the inner veth end, `A.B.C.D/N`. */
  addresses: string[];
  /** The `ip imds` table inside the namespace. */
  nft: RenderedTable;
  /** The bridge table in the hypervisor namespace (interception, uplink fence). */
  bridgeTable: RenderedTable;
}

export interface DesiredState {
  namespacePrefix: string;
  networks: Map<string, DesiredNetwork>;
}

export interface DesiredInput {
  namespacePrefix: string;
  listenPort: number;
  networks: readonly Network[];
}

export function desiredState(input: DesiredInput): DesiredState {
  const nft = renderNatTable({ listenPort: input.listenPort });
  const networks = new Map<string, DesiredNetwork>();
  for (const net of input.networks) {
    const parsed = parseCidr(net.cidr);
    if (!parsed.ok) throw new Error(`unvalidated network ${net.id}: ${parsed.reason}`);
    const mac = innerMac(input.namespacePrefix);
    const outer = outerVethName(net.id);
    networks.set(net.id, {
      id: net.id,
      netns: namespaceName(input.namespacePrefix, net.id),
      bridge: bridgeNameOf(net),
      uplink: net.uplink,
      mtu: net.mtu,
      outer,
      inner: INNER_LINK,
      innerMac: mac,
      addresses: [`${net.service_ip}/${parsed.cidr.prefix}`, `${METADATA_IP}/32`],
      nft,
      bridgeTable: renderBridgeTable({ table: bridgeTableName(input.namespacePrefix, net.id), innerMac: mac, outer, uplink: net.uplink }),
    });
  }
  return { namespacePrefix: input.namespacePrefix, networks };
}
