// The host side of a network, pure: its bridge table in the hypervisor namespace (L2 interception
// of registered VMs' metadata traffic, the uplink fence) and the script that replaces that table's
// guest set. The bridge itself and its veth are a few `ip` lines of the planner
// (src/controller/plan.ts); the bridge's ports are src/bridge/ports.ts.
import { METADATA_IP } from '../model/names.ts';
import { GUEST_SET, guestKey, renderTable, replaceElements, type ChainSpec, type GuestAddress, type RenderedTable } from '../netns/nft.ts';

export interface BridgeTableInput {
  /** Table name (bridgeTableName). */
  table: string;
  /** MAC of the namespace end of the veth pair. */
  innerMac: string;
  /** The veth end on the bridge. */
  outer: string;
  uplink: string | undefined;
}

/**
 * The bridge table of one network. Frames a registered VM sends to 169.254.169.254:80 are steered
 * to the namespace whatever MAC they were sent to (a guest with only a default route sends them to
 * its gateway). The kernel's bridge families cannot all match a frame's bridge (`meta ibrname`
 * needs nft_meta_bridge), so the VM's MAC and address pair identifies the network instead.
 * With an uplink, the namespace is fenced off from it: nothing passes between the two, and ARP for
 * 169.254.169.254 neither comes in nor goes out, so hypervisors on one segment never answer for
 * each other.
 */
export function renderBridgeTable(input: BridgeTableInput): RenderedTable {
  const mac = input.innerMac;
  const prerouting: string[] = [];
  const chains: ChainSpec[] = [];
  const up = input.uplink;
  if (up !== undefined) {
    prerouting.push(
      `iifname "${up}" ether type arp arp daddr ip ${METADATA_IP} counter drop`,
      `iifname "${up}" ip daddr ${METADATA_IP} counter drop`,
    );
  }
  // Cheapest test first: every frame of every bridge on the host passes every network's table (a
  // bridge-family chain cannot be hooked to one bridge), so a tenant's own traffic must fail on the
  // destination address before the set lookup, and a frame already sent to imds0's MAC (a guest
  // that routes 169.254.169.254 via the service address) needs no lookup either.
  prerouting.push(
    `ip daddr ${METADATA_IP} tcp dport 80 ether daddr != ${mac} ether saddr . ip saddr @${GUEST_SET} ether daddr set ${mac} counter`,
  );
  chains.push({ name: 'prerouting', hook: 'type filter hook prerouting priority dstnat; policy accept;', rules: prerouting });
  if (up !== undefined) {
    chains.push({
      name: 'forward',
      hook: 'type filter hook forward priority filter; policy accept;',
      rules: [
        `iifname "${input.outer}" oifname "${up}" counter drop`,
        `iifname "${up}" oifname "${input.outer}" counter drop`,
        `oifname "${up}" ether type arp arp daddr ip ${METADATA_IP} counter drop`,
      ],
    });
  }
  return renderTable('bridge', input.table, chains, [{ name: GUEST_SET, type: 'ether_addr . ipv4_addr' }]);
}

/** `nft -f` script that replaces the bridge table's guest set in one transaction. */
export function renderBridgeGuestElements(table: string, guests: readonly GuestAddress[]): string {
  const lines: string[] = [];
  replaceElements(lines, 'bridge', table, GUEST_SET, [...new Set(guests.map(guestKey))].sort());
  return `${lines.join('\n')}\n`;
}
