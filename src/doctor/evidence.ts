// What doctor judges on, as plain data: gathered from the kernel and the daemon by gather.ts, judged
// by the pure *-hops.ts modules (unit-tested with evidence made by hand).
import type { Contact, RecentRequest } from '../contact.ts';
import type { BucketState } from '../security/rate-limit.ts';
import type { DesiredNetwork } from '../controller/desired.ts';
import type { NetworkStatus } from '../controller/reconciler.ts';
import type { DhcpStatus } from '../dhcp/dhcp-servers.ts';
import type { Network, Vm } from '../model/schema.ts';
import type { LinkState } from '../netns/iproute.ts';
import type { RenderedTable, TableState } from '../netns/nft.ts';
import type { FdbEntry, Neighbour, TableCounters } from './parse.ts';

/** An nft table as read: undefined when it does not exist. */
export interface TableEvidence {
  state: TableState;
  counters: TableCounters;
}

export interface ListenerEvidence {
  /** The daemon serves the network (it holds a listening socket for it). */
  open: boolean;
  fd: number | undefined;
  /** What the kernel says of that socket; undefined when it could not be asked. */
  socket: { listening: boolean; tcp: boolean; port: number; netnsInode: number } | undefined;
  error: string | undefined;
}

export interface DhcpEvidence {
  status: DhcpStatus | undefined;
  /** The network namespace of the running dnsmasq (/proc/PID/ns/net); undefined when unknown. */
  processNetnsInode: number | undefined;
  hostsPath: string;
  /** The hosts file's text; undefined when it cannot be read. */
  hostsText: string | undefined;
  /** dnsmasq's leases file: `expiry mac ip name clientid` lines. */
  leasesText: string | undefined;
}

export interface NetworkEvidence {
  network: Network;
  desired: DesiredNetwork;
  /** The bridge table every declared network shares, as imds would build it now. */
  desiredBridgeTable: RenderedTable;
  listenPort: number;
  /** The daemon's view (its last reconcile, DHCP included); undefined before the first. */
  status: NetworkStatus | undefined;
  /** The bridge, the outer veth and the uplink as they are (absent ones missing). */
  hostLinks: Map<string, LinkState>;
  bridgeAgeingS: number | undefined;
  /** The bridge's forwarding table (learned and static entries of its ports). */
  fdb: FdbEntry[];
  bridgeTable: TableEvidence | undefined;
  /** /run/netns/<namespace>'s inode; undefined when the name does not exist. */
  namespaceInode: number | undefined;
  /** Links and addresses inside the namespace; undefined when they could not be read. */
  nsLinks: Map<string, LinkState> | undefined;
  nsTable: TableEvidence | undefined;
  /** The namespace's neighbour table on its veth end. */
  neighbours: Neighbour[];
  listener: ListenerEvidence;
  /** Only for DHCP networks. */
  dhcp: DhcpEvidence | undefined;
  /** What could not be read, by what (a command that failed): shown, never guessed around. */
  errors: Map<string, string>;
}

export interface VmEvidence {
  vm: Vm;
  /** The VM's requests (kept across restarts: may predate `startedAt`); undefined: none recorded. */
  contact: Contact | undefined;
  /** Its last requests (this daemon's), newest first. */
  recent: RecentRequest[];
  now: number;
  rateLimit: { perSecond: number; burst: number };
  /**
   * The VM's bucket in the rate limiter, read now: `off` (no limit), `none` (no bucket: it has not
   * asked lately, its whole burst is there), or tokens left and requests refused; undefined when the
   * daemon could not say.
   */
  bucket: BucketState | 'off' | 'none' | undefined;
  /** The daemon's start (ms since the epoch): "never since". */
  startedAt: number;
  /**
   * When the VM's MAC is not on its own bridge: where the host's forwarding tables have it instead
   * (another bridge's port: its NIC is on another network), with that bridge's imds network if any.
   */
  elsewhere?: { port: string; bridge: string; network: string | undefined; own: string };
}
