// Desired kernel state, derived from the declared networks (pure): per network, and the hypervisor
// namespace's one bridge table they share.
import { parseCidr } from '../model/ipv4.ts';
import {
  bridgeGuestSetName,
  bridgeNameOf,
  bridgeTableName,
  INNER_LINK,
  innerMac,
  METADATA_IP,
  namespaceName,
  outerVethName,
} from '../model/names.ts';
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
  /** The shared bridge table in the hypervisor namespace (interception, uplink fence). */
  bridgeTable: string;
  /** The network's guest set in it. */
  bridgeSet: string;
}

export interface DesiredState {
  namespacePrefix: string;
  networks: Map<string, DesiredNetwork>;
  /** The bridge table every network shares; undefined when no network is declared (then it should not exist). */
  bridgeTable: RenderedTable | undefined;
}

export interface DesiredInput {
  namespacePrefix: string;
  listenPort: number;
  networks: readonly Network[];
}

export function desiredState(input: DesiredInput): DesiredState {
  const nft = renderNatTable({ listenPort: input.listenPort });
  const networks = new Map<string, DesiredNetwork>();
  const mac = innerMac(input.namespacePrefix);
  const table = bridgeTableName(input.namespacePrefix);
  for (const net of input.networks) {
    const parsed = parseCidr(net.cidr);
    if (!parsed.ok) throw new Error(`unvalidated network ${net.id}: ${parsed.reason}`);
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
      bridgeTable: table,
      bridgeSet: bridgeGuestSetName(net.id),
    });
  }
  const bridgeTable =
    networks.size === 0
      ? undefined
      : renderBridgeTable({ table, innerMac: mac, networks: input.networks.map((n) => ({ id: n.id, uplink: n.uplink })) });
  return { namespacePrefix: input.namespacePrefix, networks, bridgeTable };
}
