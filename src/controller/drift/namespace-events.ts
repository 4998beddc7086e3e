// Each serving network's namespace, from inside: rtnetlink link and IPv4 address events, and
// nftables events, on sockets opened there (through the addon) and reopened when the namespace is
// rebuilt. A link deleted or down, an address removed, or a change to the `ip imds` table is a
// cause; set elements of its guest sets go through attribution (NftSource).
import { statSync } from 'node:fs';
import { messageOf } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { NFT_TABLE } from '../../model/names.ts';
import { GUEST_SET, VM_IP_SET } from '../../netns/nft.ts';
import {
  NAMESPACE_EVENTS_RCVBUF,
  NETLINK_NETFILTER,
  NETLINK_ROUTE,
  NFNLGRP_NFTABLES,
  openEventSocket,
  parseRtMessage,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_NEWLINK,
  RTNLGRP_IPV4_IFADDR,
  RTNLGRP_LINK,
  type EventSocket,
  type LinkMessage,
} from '../../netns/netlink.ts';
import { netnsPath } from '../../netns/run.ts';
import type { DesiredNetwork } from '../desired.ts';
import type { Cause, CauseSink } from './causes.ts';
import type { Clock } from './clock.ts';
import { NftSource, type NftRules } from './nft-source.ts';
import { NFPROTO_IPV4 } from './nft-events.ts';
import type { OwnProcesses } from './own-processes.ts';

/** Whether a link or address event inside a network's namespace matters: the cause it leads to. */
export function namespaceLinkCause(network: string, m: LinkMessage): Cause | undefined {
  const link = m.attrs.ifname;
  if (m.type === RTM_DELLINK) return { kind: 'namespace-link-deleted', network, link };
  if (m.type === RTM_DELADDR) return { kind: 'namespace-address-removed', network };
  // The package lists only the flags that are set: a link that is down has no `up`.
  if (m.type === RTM_NEWLINK && m.data.flags !== undefined && m.data.flags.up !== true)
    return { kind: 'namespace-link-down', network, link };
  return undefined;
}

/** What matters on a namespace's nftables socket: its `ip imds` table and that table's guest sets. */
export function namespaceNftRules(network: string): NftRules {
  const ours = (family: number, table: string | undefined) => family === NFPROTO_IPV4 && table === NFT_TABLE;
  return {
    structural: (e) => (ours(e.family, e.table) ? { kind: 'namespace-table-changed', network } : undefined),
    guestSet: (e) => (ours(e.family, e.table) && (e.set === GUEST_SET || e.set === VM_IP_SET) ? { network, place: 'inner' } : undefined),
  };
}

/** The inode of a named namespace; undefined when the name is gone. */
export function inodeOf(netns: string): number | undefined {
  try {
    return statSync(netnsPath(netns)).ino;
  } catch {
    return undefined;
  }
}

export interface WatchedNamespace {
  network: string;
  netns: string;
  ino: number;
}

interface Watched extends WatchedNamespace {
  sockets: EventSocket[];
  nft: NftSource;
}

export interface NamespaceEventsDeps {
  emit: CauseSink;
  own: OwnProcesses;
  clock: Clock;
  log: Logger;
}

export class NamespaceEvents {
  private readonly deps: NamespaceEventsDeps;
  private readonly watched = new Map<string, Watched>();

  constructor(deps: NamespaceEventsDeps) {
    this.deps = deps;
  }

  /** Watches the network's namespace, again if it was rebuilt (a new inode). */
  watch(d: DesiredNetwork): void {
    const ino = inodeOf(d.netns);
    const current = this.watched.get(d.id);
    if (current !== undefined && current.netns === d.netns && current.ino === ino) return;
    this.unwatch(d.id);
    if (ino === undefined) return;
    const { emit, own, clock } = this.deps;
    const nft = new NftSource({ rules: namespaceNftRules(d.id), emit, own, clock });
    const sockets: EventSocket[] = [];
    const lost = (events: 'link' | 'nftables') => () => emit({ kind: 'events-lost', network: d.id, events, where: 'namespace' });
    try {
      const common = { rcvbuf: NAMESPACE_EVENTS_RCVBUF, netns: d.netns };
      sockets.push(
        openEventSocket({
          ...common,
          protocol: NETLINK_ROUTE,
          groups: [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR],
          onMessages: (msgs) => this.onLinks(d.id, msgs.map(parseRtMessage)),
          onError: lost('link'),
        }),
      );
      sockets.push(
        openEventSocket({
          ...common,
          protocol: NETLINK_NETFILTER,
          groups: [NFNLGRP_NFTABLES],
          onMessages: (m) => nft.onMessages(m),
          onError: lost('nftables'),
        }),
      );
    } catch (err) {
      for (const s of sockets) s.close();
      this.deps.log.warn({ network: d.id, err: messageOf(err) }, 'cannot watch the namespace for drift');
      return;
    }
    this.watched.set(d.id, { network: d.id, netns: d.netns, ino, sockets, nft });
  }

  /** Stops watching a network's namespace (it is being removed or rebuilt). */
  unwatch(network: string): void {
    const w = this.watched.get(network);
    if (w === undefined) return;
    for (const s of w.sockets) s.close();
    w.nft.close();
    this.watched.delete(network);
  }

  /** The namespaces watched now, with the inode each had. */
  namespaces(): WatchedNamespace[] {
    return [...this.watched.values()].map(({ network, netns, ino }) => ({ network, netns, ino }));
  }

  stop(): void {
    for (const network of [...this.watched.keys()]) this.unwatch(network);
  }

  private onLinks(network: string, msgs: readonly LinkMessage[]): void {
    for (const m of msgs) {
      const cause = namespaceLinkCause(network, m);
      if (cause !== undefined) this.deps.emit(cause);
    }
  }
}
