// Desired kernel state per network, derived from the declared networks (pure).
import { parseCidr } from '../model/ipv4.ts';
import { bridgeNameOf, INNER_LINK, METADATA_IP, namespaceName, outerVethName } from '../model/names.ts';
import type { Network } from '../model/schema.ts';
import { renderNatTable, type RenderedTable } from '../netns/nft.ts';

export interface DesiredNetwork {
  id: string;
  netns: string;
  bridge: string;
  uplink: string | undefined;
  mtu: number | undefined;
  outer: string;
  inner: string;
  /** Addresses on the inner veth end, `A.B.C.D/N`. */
  addresses: string[];
  nft: RenderedTable;
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
    networks.set(net.id, {
      id: net.id,
      netns: namespaceName(input.namespacePrefix, net.id),
      bridge: bridgeNameOf(net),
      uplink: net.uplink,
      mtu: net.mtu,
      outer: outerVethName(net.id),
      inner: INNER_LINK,
      addresses: [`${net.service_ip}/${parsed.cidr.prefix}`, `${METADATA_IP}/32`],
      nft,
    });
  }
  return { namespacePrefix: input.namespacePrefix, networks };
}
