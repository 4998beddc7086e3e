// The host side of the networks, pure: the one bridge table imds keeps in the hypervisor namespace
// for all of them (L2 interception of registered VMs' metadata traffic, the uplink fence), and the
// script that replaces one network's guest set in it. The bridges and their veths are a few `ip`
// lines of the planner (src/controller/plan.ts); the bridges' ports are src/bridge/ports.ts.
import { bridgeGuestSetName, METADATA_IP, OUTER_VETH_PREFIX } from '../model/names.ts';
import { guestKey, renderTable, replaceElements, type ChainSpec, type GuestAddress, type RenderedTable } from '../netns/nft.ts';

export interface BridgeTableInput {
  /** Table name (bridgeTableName). */
  table: string;
  /** MAC of the namespace end of every network's veth pair (the same on every bridge). */
  innerMac: string;
  /** The declared networks (their order does not matter). */
  networks: readonly { id: string; uplink: string | undefined }[];
}

/** The regular chain holding one steering rule per network. */
export const STEER_CHAIN = 'steer';

/**
 * The bridge table of all networks. Frames a registered VM sends to 169.254.169.254:80 are steered
 * to its network's namespace whatever MAC they were sent to (a guest with only a default route
 * sends them to its gateway): the kernel's bridge families cannot all match a frame's bridge
 * (`meta ibrname` needs nft_meta_bridge), so the VM's MAC and address pair, in its network's set,
 * identifies the network, and every imds0 has the same MAC, so each bridge delivers to its own.
 *
 * Every frame of every bridge on the host passes this table, the tenants' own traffic included, so
 * its base chains test the cheapest thing first and hold the same few rules whatever the number of
 * networks: a frame not to 169.254.169.254 fails on the destination address (or the veth name)
 * and is done; only metadata frames not already sent to imds0 jump to the per-network rules.
 * Uplinks are fenced off from the namespaces: nothing passes between an uplink and a network's veth,
 * and ARP for 169.254.169.254 neither comes in nor goes out, so hypervisors on one segment never
 * answer for each other. The fence matches the veths by their name prefix: a frame leaving one
 * bridge can only reach that bridge's uplink.
 */
export function renderBridgeTable(input: BridgeTableInput): RenderedTable {
  const mac = input.innerMac;
  const networks = [...input.networks].sort((a, b) => a.id.localeCompare(b.id));
  const uplinks = [...new Set(networks.flatMap((n) => (n.uplink === undefined ? [] : [n.uplink])))].sort();
  const fenced = uplinks.length === 0 ? '' : `{ ${uplinks.map((u) => `"${u}"`).join(', ')} }`;
  const prerouting: string[] = [];
  if (fenced !== '') {
    prerouting.push(`arp daddr ip ${METADATA_IP} iifname ${fenced} counter drop`, `ip daddr ${METADATA_IP} iifname ${fenced} counter drop`);
  }
  prerouting.push(`ip daddr ${METADATA_IP} tcp dport 80 ether daddr != ${mac} jump ${STEER_CHAIN}`);
  const chains: ChainSpec[] = [
    { name: 'prerouting', hook: 'type filter hook prerouting priority dstnat; policy accept;', rules: prerouting },
    {
      name: STEER_CHAIN,
      hook: '',
      rules: networks.map((n) => `ether saddr . ip saddr @${bridgeGuestSetName(n.id)} ether daddr set ${mac} counter accept`),
    },
  ];
  if (fenced !== '') {
    chains.push({
      name: 'forward',
      hook: 'type filter hook forward priority filter; policy accept;',
      rules: [
        `iifname "${OUTER_VETH_PREFIX}*" oifname ${fenced} counter drop`,
        `oifname "${OUTER_VETH_PREFIX}*" iifname ${fenced} counter drop`,
        `arp daddr ip ${METADATA_IP} oifname ${fenced} counter drop`,
      ],
    });
  }
  const sets = networks.map((n) => ({ name: bridgeGuestSetName(n.id), type: 'ether_addr . ipv4_addr' }));
  return renderTable('bridge', input.table, chains, sets);
}

/** `nft -f` lines that replace one network's guest set in the bridge table (one transaction when loaded alone). */
export function renderBridgeGuestElements(table: string, network: string, guests: readonly GuestAddress[]): string {
  const lines: string[] = [];
  replaceElements(lines, 'bridge', table, bridgeGuestSetName(network), [...new Set(guests.map(guestKey))].sort());
  return `${lines.join('\n')}\n`;
}
