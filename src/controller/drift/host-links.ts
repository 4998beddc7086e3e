// rtnetlink link events in the hypervisor namespace. An event matters when it is about a link of a
// network (its bridge, outer veth or uplink): deleted, taken off its bridge, or changed in what the
// planner looks at (state, MTU, master, alias, index). Every event also keeps the bridges' port
// lists (BridgePortTracker). The first NEWLINK of a link that is up only records it.
import type { Logger } from '../../log.ts';
import { AF_BRIDGE, RTM_DELLINK, RTM_NEWLINK, type LinkMessage } from '../../netns/netlink.ts';
import type { DesiredNetwork } from '../desired.ts';
import type { BridgePortTracker } from './bridge-ports.ts';
import type { Cause, CauseSink } from './causes.ts';

export interface HostLinkDeps {
  /** The network that owns a link (bridge, outer veth, uplink), if any. */
  owner(link: string): string | undefined;
  ports: BridgePortTracker;
  emit: CauseSink;
  log: Logger;
}

/** The state of a link the planner looks at, as one string. */
function fingerprint(m: LinkMessage): string {
  return `${m.data.index}|${m.data.flags?.up === true}|${m.attrs.mtu}|${m.attrs.master}|${m.attrs.ifalias ?? ''}`;
}

export class HostLinkSource {
  private readonly deps: HostLinkDeps;
  private readonly fingerprints = new Map<string, string>();

  constructor(deps: HostLinkDeps) {
    this.deps = deps;
  }

  onMessages(msgs: readonly LinkMessage[]): void {
    for (const m of msgs) {
      const name = m.attrs.ifname;
      if (name === undefined) continue;
      this.deps.log.trace({ type: m.type, name, index: m.data.index, master: m.attrs.master }, 'host link event');
      this.deps.ports.onLink(m, name);
      const cause = this.causeOf(m, name);
      if (cause !== undefined) this.deps.emit(cause);
    }
  }

  /** Whether the event matters: the cause it leads to. */
  private causeOf(m: LinkMessage, link: string): Cause | undefined {
    const network = this.deps.owner(link);
    if (network === undefined) return undefined;
    if (m.type === RTM_DELLINK) {
      this.fingerprints.delete(link);
      return m.data.family === AF_BRIDGE ? { kind: 'link-left-bridge', network, link } : { kind: 'link-deleted', network, link };
    }
    if (m.type !== RTM_NEWLINK) return undefined;
    const fp = fingerprint(m);
    const before = this.fingerprints.get(link);
    if (before === fp) return undefined;
    this.fingerprints.set(link, fp);
    return before !== undefined || m.data.flags?.up !== true ? { kind: 'link-changed', network, link } : undefined;
  }
}

/** The owner of each link of the networks, rebuilt when the list of networks changes. */
export function linkOwners(networks: () => readonly DesiredNetwork[]): (link: string) => string | undefined {
  let memo: { list: readonly DesiredNetwork[]; owners: Map<string, string> } | undefined;
  return (link) => {
    const list = networks();
    if (memo?.list !== list) {
      const owners = new Map<string, string>();
      for (const d of list) {
        for (const name of [d.bridge, d.outer, ...(d.uplink === undefined ? [] : [d.uplink])])
          if (!owners.has(name)) owners.set(name, d.id);
      }
      memo = { list, owners };
    }
    return memo.owners.get(link);
  };
}
