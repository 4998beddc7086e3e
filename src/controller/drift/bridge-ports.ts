// The ports of the bridges imds uses, kept from link events (read once when a network starts
// serving): when imds has to recreate a deleted bridge, the ports that were on it (the guests'
// taps) are put back. The rtnetlink AF_BRIDGE delete means "left the bridge", not "deleted", so a
// port that left a bridge that went is remembered.
import { messageOf } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import { AF_BRIDGE, RTM_DELLINK, RTM_NEWLINK, type LinkMessage } from '../../netns/netlink.ts';
import type { DesiredNetwork } from '../desired.ts';

export interface BridgePortsDeps {
  /** Ports of the named bridges now, with their ifindex (bridge/ports.ts bridgePorts). */
  read(bridges: string[]): Promise<Map<string, { index: number; ports: string[] }> | undefined>;
  /** The network that owns a link (its bridge, outer veth or uplink): those are not guests' ports. */
  owner(link: string): string | undefined;
  log: Logger;
}

export class BridgePortTracker {
  private readonly deps: BridgePortsDeps;
  /** Ports last seen on each tracked bridge, kept when the bridge goes. */
  private readonly ports = new Map<string, Set<string>>();
  /** ifindex -> name of the tracked bridges. */
  private readonly bridgeIndex = new Map<number, string>();
  /** Bridges whose ports are still to be read. */
  private readonly unread = new Set<string>();

  constructor(deps: BridgePortsDeps) {
    this.deps = deps;
  }

  /** Tracks the network's bridge (once); networks converging together share one link dump. */
  track(d: DesiredNetwork): void {
    if (this.ports.has(d.bridge)) return;
    this.ports.set(d.bridge, new Set());
    this.unread.add(d.bridge);
    if (this.unread.size === 1) setImmediate(() => this.readPorts());
  }

  /** The ports last seen on `bridge`. */
  portsOf(bridge: string): string[] {
    return [...(this.ports.get(bridge) ?? [])];
  }

  /** Keeps the port lists from a link event about `name`. */
  onLink(m: LinkMessage, name: string): void {
    const index = m.data.index;
    if (this.ports.has(name)) {
      if (m.type === RTM_NEWLINK && index !== undefined) this.bridgeIndex.set(index, name);
      if (m.type === RTM_DELLINK && m.data.family !== AF_BRIDGE && index !== undefined) this.bridgeIndex.delete(index);
      return;
    }
    if (m.type === RTM_DELLINK) {
      if (m.data.family !== AF_BRIDGE) for (const set of this.ports.values()) set.delete(name);
      return;
    }
    const master = m.attrs.master;
    if (master === undefined) return; // off its bridge: remembered, in case the bridge went
    const bridge = this.bridgeIndex.get(master);
    for (const [b, set] of this.ports) if (b !== bridge) set.delete(name);
    const set = bridge === undefined ? undefined : this.ports.get(bridge);
    if (set !== undefined && !set.has(name) && this.deps.owner(name) === undefined) {
      set.add(name);
      this.deps.log.debug({ bridge, port: name }, 'port seen on a bridge');
    }
  }

  private readPorts(): void {
    const batch = [...this.unread];
    this.unread.clear();
    if (batch.length === 0) return;
    this.deps.read(batch).then(
      (found) => {
        for (const bridge of batch) {
          const b = found?.get(bridge);
          if (b === undefined) continue;
          this.bridgeIndex.set(b.index, bridge);
          for (const p of b.ports) if (this.deps.owner(p) === undefined) this.ports.get(bridge)?.add(p);
        }
        this.deps.log.debug({ bridges: batch.length }, 'bridge ports read');
      },
      (err: unknown) => this.deps.log.warn({ err: messageOf(err) }, 'cannot read the bridge ports'),
    );
  }
}
