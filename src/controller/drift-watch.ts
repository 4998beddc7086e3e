// Notices kernel drift at once and has it repaired. Sources, all in-process:
//  - rtnetlink link events in the hypervisor namespace (the bridge, the outer veth, the uplink);
//  - nftables events (NFNLGRP_NFTABLES) in the hypervisor namespace (the bridge tables);
//  - per network, rtnetlink link/address events and nftables events inside its namespace, on
//    sockets opened there through the addon;
//  - the namespace itself: a watch on /run/netns plus a cheap periodic stat (the kernel sends no
//    event when a namespace's name goes, and the daemon's socket keeps the namespace alive).
// A trigger schedules a check of that network only: a targeted reconcile (observe, plan, apply the
// difference). Our own changes also trigger checks; they find nothing to do. Repairs that fail back
// off (0.5 s doubling to 30 s); a repair is logged once with what was wrong and what was done.
// Set-element events of a network's tables that are not our own guest-set writes lead to a
// comparison of its guest sets with its VMs, and a rewrite when they differ.
import { existsSync, statSync, watch, type FSWatcher } from 'node:fs';
import { createRequire } from 'node:module';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { addonIfAvailable, tuneNetlinkSocket } from '../netns/listen-in-netns.ts';
import { NETNS_RUN_DIR, netnsPath } from '../netns/run.ts';
import { NFT_TABLE } from '../model/names.ts';
import type { Stats } from '../stats.ts';
import type { DesiredNetwork } from './desired.ts';
import type { AppliedStep, ReconcileSummary } from './reconciler.ts';

const NETLINK_NETFILTER = 12;
const NFNLGRP_NFTABLES = 7;
const NFNL_SUBSYS_NFTABLES = 10;
const NFT_MSG_NEWSETELEM = 12;
const NFT_MSG_DELSETELEM = 14;
const NFT_MSG_NEWGEN = 15;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_DELADDR = 21;
/** Link messages of this family are the bridge's view of a port (a DELLINK means "left the bridge"). */
const AF_BRIDGE = 7;

interface RawMessage {
  type: number;
  data: Buffer;
}
interface RawSocket {
  addMembership(group: number): void;
  address(): { port: number };
  on(event: 'message', listener: (msgs: RawMessage | RawMessage[]) => void): void;
  on(event: 'error', listener: (err: Error) => void): void;
  close(): void;
  unref?(): void;
}
/** A parsed rtnetlink message, with the message type the library's rt socket drops. */
interface RtMessage {
  type: number;
  data?: { family?: number; index?: number; flags?: { up?: boolean } };
  attrs?: { ifname?: string; mtu?: number; master?: number; ifalias?: string };
}
interface NetlinkModule {
  createNetlink(protocol: number): RawSocket;
  rt: { parseMessage(type: number, data: Buffer): Omit<RtMessage, 'type'> };
}
const NETLINK_ROUTE = 0;
const RTNLGRP_LINK = 1;
const RTNLGRP_IPV4_IFADDR = 5;

/** A raw rtnetlink socket subscribed to `groups`, delivering parsed messages with their type. */
/**
 * Receive buffers of the event sockets: a burst (a host starting many VMs, a network being built)
 * must fit while the daemon is busy. What still overflows is dropped without an error (see
 * eventSocket).
 */
const HOST_EVENTS_RCVBUF = 4 * 1024 * 1024;
const NAMESPACE_EVENTS_RCVBUF = 1024 * 1024;

/** A raw netlink socket for events, made safe against overruns (tuneNetlinkSocket). */
function eventSocket(mod: NetlinkModule, protocol: number, rcvbuf: number, onError: (err: Error) => void): RawSocket {
  const sock = mod.createNetlink(protocol);
  tuneNetlinkSocket(sock, rcvbuf);
  sock.on('error', onError);
  return sock;
}

function rtEvents(
  mod: NetlinkModule,
  groups: number[],
  rcvbuf: number,
  onMessages: (msgs: RtMessage[]) => void,
  onError: (err: Error) => void,
): RawSocket {
  const sock = eventSocket(mod, NETLINK_ROUTE, rcvbuf, onError);
  for (const g of groups) sock.addMembership(g);
  sock.on('message', (raw) => {
    const out: RtMessage[] = [];
    for (const m of Array.isArray(raw) ? raw : [raw]) {
      try {
        out.push({ type: m.type, ...mod.rt.parseMessage(m.type, m.data) });
      } catch {
        out.push({ type: m.type });
      }
    }
    onMessages(out);
  });
  return sock;
}

let netlinkModule: NetlinkModule | null | undefined;
function netlink(): NetlinkModule | undefined {
  if (netlinkModule === undefined) {
    try {
      netlinkModule = createRequire(import.meta.url)('netlink') as NetlinkModule;
    } catch {
      netlinkModule = null;
    }
  }
  return netlinkModule ?? undefined;
}

/** The table an nftables event is about: attribute 1 is the table name in every table, chain, rule, set and element message. */
export function nftEventTable(msg: RawMessage): string | undefined {
  if (msg.type >> 8 !== NFNL_SUBSYS_NFTABLES) return undefined;
  const data = msg.data;
  let off = 4; // struct nfgenmsg
  while (off + 4 <= data.length) {
    const len = data.readUInt16LE(off);
    const type = data.readUInt16LE(off + 2) & 0x3fff;
    if (len < 4) return undefined;
    if (type === 1) {
      const raw = data.subarray(off + 4, off + len);
      const nul = raw.indexOf(0);
      return (nul === -1 ? raw : raw.subarray(0, nul)).toString();
    }
    off += (len + 3) & ~3;
  }
  return undefined;
}

/** Whether an nftables event adds or removes set elements. */
export function nftSetElementEvent(msg: RawMessage): boolean {
  if (msg.type >> 8 !== NFNL_SUBSYS_NFTABLES) return false;
  const t = msg.type & 0xff;
  return t === NFT_MSG_NEWSETELEM || t === NFT_MSG_DELSETELEM;
}

/**
 * Whether an nftables event can mean damage to a table's structure (a targeted reconcile). Set
 * elements change with every VM change (our own writes): they go to a guest-set check instead
 * (setsChanged), and not at all while we write. Generation messages close every transaction.
 */
export function nftEventMatters(msg: RawMessage): boolean {
  if (msg.type >> 8 !== NFNL_SUBSYS_NFTABLES) return false;
  const t = msg.type & 0xff;
  return t !== NFT_MSG_NEWSETELEM && t !== NFT_MSG_DELSETELEM && t !== NFT_MSG_NEWGEN;
}

/** What kind of damage a repair fixed, from its steps (for logs and the repairs metric). */
export function repairKinds(steps: readonly AppliedStep[]): string[] {
  const kinds = new Set<string>();
  for (const s of steps) {
    if (s.kind === 'netns-add') kinds.add('namespace');
    else if (s.kind === 'nft') kinds.add(s.where === 'host' ? 'bridge_table' : 'nft_table');
    else if (s.kind === 'ip') kinds.add(s.where === 'host' ? 'host_links' : 'namespace_links');
  }
  return [...kinds];
}

export interface DriftWatchDeps {
  log: Logger;
  stats: Stats;
  /** Desired state of every declared network (names of its kernel objects). */
  networks(): DesiredNetwork[];
  /** A targeted reconcile of one network. */
  repair(network: string): Promise<ReconcileSummary>;
  /** Puts ports back on a bridge imds recreated (they were on it when it was deleted). */
  reattach(bridge: string, ports: string[]): Promise<string[]>;
  /** Ports of the named bridges now (initial state for re-attaching). */
  ports(bridges: string[]): Promise<Map<string, { index: number; ports: string[] }> | undefined>;
  /**
   * The guest sets (NetworkServices): set-element events that are not our own writes lead to a
   * comparison with the VMs and a rewrite when they differ.
   */
  guestSets?: {
    own(network: string, where: 'bridge' | 'inner'): boolean;
    check(network: string, where: 'bridge' | 'inner'): Promise<string | undefined>;
  };
  /** Fallback period for what sends no event (a namespace's name removed). */
  intervalMs: number;
  /** Coalescing window for a burst of events, ms. */
  settleMs?: number;
}

interface Inner {
  netns: string;
  ino: number;
  sockets: { close(): void }[];
}

interface Pending {
  timer: NodeJS.Timeout | undefined;
  reasons: Set<string>;
  running: boolean;
  again: boolean;
  failures: number;
  notBefore: number;
}

export class DriftWatch {
  private readonly deps: DriftWatchDeps;
  private readonly inner = new Map<string, Inner>();
  private readonly pending = new Map<string, Pending>();
  private readonly fingerprints = new Map<string, string>();
  /** Ports last seen on each network's bridge, kept when the bridge goes so they can be put back. */
  private readonly ports = new Map<string, Set<string>>();
  /** ifindex -> name of the bridges imds uses. */
  private readonly bridgeIndex = new Map<number, string>();
  /** Bridges whose ports are still to be read. */
  private readonly unread = new Map<string, DesiredNetwork>();
  private hostSockets: { close(): void }[] = [];
  /** Guest-set checks waiting to run, by `where|network`. */
  private readonly setChecks = new Map<string, NodeJS.Timeout>();
  private dirWatch: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(deps: DriftWatchDeps) {
    this.deps = deps;
  }

  /** Subscribes to the hypervisor namespace's events; namespaces are added as networks converge. */
  start(): void {
    const mod = netlink();
    if (mod === undefined) {
      this.deps.log.warn('netlink unavailable: kernel drift is noticed by the periodic check only');
    } else {
      try {
        const rt = rtEvents(
          mod,
          [RTNLGRP_LINK],
          HOST_EVENTS_RCVBUF,
          (msgs) => this.onHostLinks(msgs),
          (err) => this.eventsLost('link', err),
        );
        const nf = eventSocket(mod, NETLINK_NETFILTER, HOST_EVENTS_RCVBUF, (err) => this.eventsLost('nftables', err));
        nf.addMembership(NFNLGRP_NFTABLES);
        nf.on('message', (msgs) => this.onHostNft(msgs));
        this.hostSockets = [rt, nf];
      } catch (err) {
        this.deps.log.warn(
          { err: messageOf(err) },
          'cannot subscribe to kernel events: kernel drift is noticed by the periodic check only',
        );
      }
    }
    try {
      this.dirWatch = watch(NETNS_RUN_DIR, () => this.checkNamespaces());
      this.dirWatch.on('error', () => undefined);
    } catch {
      // /run/netns appears with the first namespace; the periodic check covers the gap.
    }
    if (this.deps.intervalMs > 0) {
      this.timer = setInterval(() => {
        this.checkNamespaces();
        if (this.dirWatch === undefined && existsSync(NETNS_RUN_DIR)) {
          try {
            this.dirWatch = watch(NETNS_RUN_DIR, () => this.checkNamespaces());
          } catch {
            // retried next period
          }
        }
      }, this.deps.intervalMs);
      this.timer.unref();
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.dirWatch?.close();
    for (const s of this.hostSockets) s.close();
    this.hostSockets = [];
    for (const network of [...this.inner.keys()]) this.unwatch(network);
    for (const p of this.pending.values()) if (p.timer !== undefined) clearTimeout(p.timer);
    this.pending.clear();
    for (const t of this.setChecks.values()) clearTimeout(t);
    this.setChecks.clear();
  }

  /** Watches the network's namespace (again, if it was rebuilt). Called when the network serves. */
  watch(d: DesiredNetwork): void {
    if (this.stopped) return;
    if (!this.ports.has(d.bridge)) {
      this.ports.set(d.bridge, new Set());
      this.unread.set(d.bridge, d);
      // Networks converge together: one link dump for all their bridges.
      if (this.unread.size === 1) setImmediate(() => this.readPorts());
    }
    const ino = inodeOf(d.netns);
    const current = this.inner.get(d.id);
    if (current !== undefined && current.netns === d.netns && current.ino === ino) return;
    this.unwatch(d.id);
    const mod = netlink();
    const addon = addonIfAvailable();
    if (mod === undefined || addon === undefined || ino === undefined) return;
    const sockets: { close(): void }[] = [];
    const saved = addon.enterNetns(netnsPath(d.netns));
    try {
      const rt = rtEvents(
        mod,
        [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR],
        NAMESPACE_EVENTS_RCVBUF,
        (msgs) => this.onInnerLinks(d.id, msgs),
        () => this.schedule(d.id, 'link events lost in the namespace'),
      );
      sockets.push(rt);
      const nf = eventSocket(mod, NETLINK_NETFILTER, NAMESPACE_EVENTS_RCVBUF, () =>
        this.schedule(d.id, 'nftables events lost in the namespace'),
      );
      nf.addMembership(NFNLGRP_NFTABLES);
      sockets.push(nf);
      nf.on('message', (msgs) => {
        const list = Array.isArray(msgs) ? msgs : [msgs];
        if (list.some(nftEventMatters)) this.schedule(d.id, 'nftables changed in the namespace');
        if (list.some((m) => nftSetElementEvent(m) && nftEventTable(m) === NFT_TABLE)) this.setsChanged(d.id, 'inner');
      });
    } catch (err) {
      for (const s of sockets) s.close();
      this.deps.log.warn({ network: d.id, err: messageOf(err) }, 'cannot watch the namespace for drift');
      return;
    } finally {
      addon.restoreNetns(saved);
    }
    this.inner.set(d.id, { netns: d.netns, ino, sockets });
  }

  private readPorts(): void {
    const batch = new Map(this.unread);
    this.unread.clear();
    if (batch.size === 0) return;
    this.deps.ports([...batch.keys()]).then(
      (m) => {
        for (const [bridge, d] of batch) {
          const b = m?.get(bridge);
          if (b === undefined) continue;
          this.bridgeIndex.set(b.index, bridge);
          for (const p of b.ports) if (p !== d.outer && p !== d.uplink) this.ports.get(bridge)?.add(p);
        }
        this.deps.log.debug({ bridges: batch.size }, 'bridge ports read');
      },
      (err: unknown) => this.deps.log.warn({ err: messageOf(err) }, 'cannot read the bridge ports'),
    );
  }

  /** Stops watching a network's namespace (it is being removed or rebuilt). */
  unwatch(network: string): void {
    const w = this.inner.get(network);
    if (w === undefined) return;
    for (const s of w.sockets) s.close();
    this.inner.delete(network);
  }

  /** Schedules a check of one network. */
  schedule(network: string, reason: string): void {
    if (this.stopped) return;
    let p = this.pending.get(network);
    if (p === undefined)
      this.pending.set(network, (p = { timer: undefined, reasons: new Set(), running: false, again: false, failures: 0, notBefore: 0 }));
    p.reasons.add(reason);
    if (p.running) {
      p.again = true;
      return;
    }
    if (p.timer !== undefined) return;
    const delay = Math.max(this.deps.settleMs ?? 20, p.notBefore - Date.now());
    p.timer = setTimeout(() => void this.check(network), delay);
  }

  private async check(network: string): Promise<void> {
    const p = this.pending.get(network);
    if (p === undefined || this.stopped) return;
    p.timer = undefined;
    p.running = true;
    const reasons = [...p.reasons];
    p.reasons.clear();
    const { log, stats } = this.deps;
    const started = performance.now();
    try {
      const summary = await this.deps.repair(network);
      const steps = summary.applied.get(network) ?? [];
      const status = summary.networks.find((n) => n.network === network);
      if (status === undefined) {
        this.pending.delete(network); // no longer declared
        return;
      }
      if (status.state === 'serving') {
        p.failures = 0;
        p.notBefore = 0;
        if (steps.length > 0) {
          const done = steps.map((s) => `${s.kind} in ${s.where}`);
          const d = this.deps.networks().find((n) => n.id === network);
          if (d !== undefined && steps.some((s) => s.why.includes('bridge missing'))) {
            const back = await this.deps.reattach(d.bridge, [...(this.ports.get(d.bridge) ?? [])]).catch((err: unknown) => {
              log.error({ network, err: messageOf(err) }, 'cannot put the ports back on the recreated bridge');
              return [];
            });
            if (back.length > 0) done.push(`ports back on ${d.bridge}: ${back.join(' ')}`);
          }
          this.reportRepair(network, { noticed: reasons, wrong: steps.map((s) => s.why), done, kinds: repairKinds(steps) }, started);
        }
      } else {
        p.failures++;
        p.notBefore = Date.now() + Math.min(30_000, 500 * 2 ** (p.failures - 1));
        stats.repairFailed(network);
        log.error(
          { network, noticed: reasons, wrong: steps.map((s) => s.why), err: status.reason, retry_in_ms: p.notBefore - Date.now() },
          'kernel drift not repaired',
        );
        p.again = true;
      }
    } catch (err) {
      p.failures++;
      p.notBefore = Date.now() + Math.min(30_000, 500 * 2 ** (p.failures - 1));
      stats.repairFailed(network);
      log.error({ network, err: messageOf(err) }, 'kernel drift check failed');
      p.again = true;
    } finally {
      p.running = false;
      if (p.again && !this.stopped) {
        p.again = false;
        this.schedule(network, 'retry');
      }
    }
  }

  /** A repair is logged once (what was noticed, wrong and done) and counted by kind. */
  private reportRepair(
    network: string,
    what: { noticed: string[]; wrong: string[]; done: string[]; kinds: string[] },
    started: number,
  ): void {
    for (const kind of what.kinds) this.deps.stats.repaired(network, kind);
    this.deps.log.warn({ network, ...what, ms: Math.round(performance.now() - started) }, 'repaired kernel drift');
  }

  /**
   * A host event socket reported an error: what was missed is unknown, so every network is checked.
   * (Overruns do not get here: the sockets are set not to report them, see eventSocket.)
   */
  private eventsLost(kind: string, err: Error): void {
    this.deps.log.warn({ events: kind, err: messageOf(err) }, 'kernel event socket error; checking every network');
    for (const d of this.deps.networks()) this.schedule(d.id, `${kind} events lost`);
  }

  /** Namespaces whose name is gone (or names another namespace now). */
  private checkNamespaces(): void {
    for (const d of this.deps.networks()) {
      const w = this.inner.get(d.id);
      if (w === undefined) continue;
      const ino = inodeOf(d.netns);
      if (ino !== w.ino) this.schedule(d.id, ino === undefined ? 'namespace removed' : 'namespace replaced');
    }
  }

  private owner(link: string): string | undefined {
    for (const d of this.deps.networks()) {
      if (link === d.bridge || link === d.outer || (d.uplink !== undefined && link === d.uplink)) return d.id;
    }
    return undefined;
  }

  /** Keeps the bridges' port lists from link events. */
  private trackPorts(m: RtMessage, name: string): void {
    const index = m.data?.index;
    if (this.ports.has(name)) {
      if (m.type === RTM_NEWLINK && index !== undefined) this.bridgeIndex.set(index, name);
      if (m.type === RTM_DELLINK && m.data?.family !== AF_BRIDGE && index !== undefined) this.bridgeIndex.delete(index);
      return;
    }
    if (m.type === RTM_DELLINK) {
      if (m.data?.family !== AF_BRIDGE) for (const set of this.ports.values()) set.delete(name);
      return;
    }
    const master = m.attrs?.master;
    if (master === undefined) return; // off its bridge: remembered, in case the bridge went
    const bridge = this.bridgeIndex.get(master);
    for (const [b, set] of this.ports) if (b !== bridge) set.delete(name);
    if (bridge !== undefined && this.owner(name) === undefined && this.ports.get(bridge)?.has(name) !== true) {
      this.ports.get(bridge)?.add(name);
      this.deps.log.debug({ bridge, port: name }, 'port seen on a bridge');
    }
  }

  private onHostLinks(msgs: RtMessage[]): void {
    for (const m of msgs) {
      const name = m.attrs?.ifname;
      if (name === undefined) continue;
      this.deps.log.trace({ type: m.type, name, index: m.data?.index, master: m.attrs?.master }, 'host link event');
      this.trackPorts(m, name);
      const network = this.owner(name);
      if (network === undefined) continue;
      if (m.type === RTM_DELLINK) {
        this.fingerprints.delete(name);
        this.schedule(network, m.data?.family === AF_BRIDGE ? `${name} left its bridge` : `${name} deleted`);
      } else if (m.type === RTM_NEWLINK) {
        const fp = `${m.data?.index}|${m.data?.flags?.up === true}|${m.attrs?.mtu}|${m.attrs?.master}|${m.attrs?.ifalias ?? ''}`;
        if (this.fingerprints.get(name) === fp) continue;
        const first = !this.fingerprints.has(name);
        this.fingerprints.set(name, fp);
        if (!first || m.data?.flags?.up !== true) this.schedule(network, `${name} changed`);
      }
    }
  }

  private onHostNft(msgs: RawMessage | RawMessage[]): void {
    for (const m of Array.isArray(msgs) ? msgs : [msgs]) {
      const structural = nftEventMatters(m);
      if (!structural && !nftSetElementEvent(m)) continue;
      const table = nftEventTable(m);
      if (table === undefined) continue;
      const d = this.deps.networks().find((n) => n.bridgeTable.name === table);
      if (d === undefined) continue;
      if (structural) this.schedule(d.id, `bridge table ${table} changed`);
      else this.setsChanged(d.id, 'bridge');
    }
  }

  /**
   * Set elements of a network's table changed. Our own writes (VM changes) are the usual cause and
   * are let be; otherwise the sets are compared with the VMs, shortly after (a hand-made flush
   * comes as a burst of events), and rewritten if they differ.
   */
  private setsChanged(network: string, where: 'bridge' | 'inner'): void {
    const sets = this.deps.guestSets;
    if (sets === undefined || this.stopped || sets.own(network, where)) return;
    const key = `${where}|${network}`;
    if (this.setChecks.has(key)) return;
    const timer = setTimeout(() => {
      this.setChecks.delete(key);
      if (this.stopped) return;
      const started = performance.now();
      sets.check(network, where).then(
        (wrong) => {
          if (wrong === undefined) return;
          const place = where === 'bridge' ? 'the bridge table' : 'the namespace table';
          this.reportRepair(
            network,
            {
              noticed: [`set elements changed in ${place}`],
              wrong: [wrong],
              done: [`guest sets rewritten in ${place}`],
              kinds: ['guest_set'],
            },
            started,
          );
        },
        (err: unknown) => {
          this.deps.stats.repairFailed(network);
          this.deps.log.error({ network, err: messageOf(err) }, 'kernel drift check failed');
        },
      );
    }, this.deps.settleMs ?? 20);
    this.setChecks.set(key, timer);
  }

  private onInnerLinks(network: string, msgs: RtMessage[]): void {
    for (const m of msgs) {
      if (m.type === RTM_DELLINK) this.schedule(network, `${m.attrs?.ifname ?? 'a link'} deleted in the namespace`);
      else if (m.type === RTM_DELADDR) this.schedule(network, 'an address removed in the namespace');
      else if (m.type === RTM_NEWLINK && m.data?.flags?.up === false)
        this.schedule(network, `${m.attrs?.ifname ?? 'a link'} down in the namespace`);
    }
  }
}

function inodeOf(netns: string): number | undefined {
  try {
    return statSync(netnsPath(netns)).ino;
  } catch {
    return undefined;
  }
}
