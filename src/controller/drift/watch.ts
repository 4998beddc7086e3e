// Self-healing, put together: the event sources (host links with the bridges' ports, host
// nftables, each namespace's events, the namespace watch with the periodic check, guest sets through
// attribution of nftables transactions) feed typed causes to one scheduler, which has the network
// repaired by a targeted reconcile (or a guest-set comparison) and reports it (docs/architecture.md,
// decision 10).
import { messageOf } from '../../errors.ts';
import type { Logger } from '../../log.ts';
import {
  HOST_EVENTS_RCVBUF,
  NETLINK_NETFILTER,
  NETLINK_ROUTE,
  NFNLGRP_NFTABLES,
  openEventSocket,
  parseRtMessage,
  RTNLGRP_LINK,
  type EventSocket,
} from '../../netns/netlink.ts';
import { NETNS_RUN_DIR } from '../../netns/run.ts';
import type { DesiredNetwork } from '../desired.ts';
import type { ReconcileSummary } from '../reconciler.ts';
import { BridgePortTracker } from './bridge-ports.ts';
import type { Cause } from './causes.ts';
import { systemClock, type Clock } from './clock.ts';
import { HostLinkSource, linkOwners } from './host-links.ts';
import { hostNftRules } from './host-nft.ts';
import { inodeOf, NamespaceEvents } from './namespace-events.ts';
import { NamespaceWatch } from './namespace-watch.ts';
import { NftSource } from './nft-source.ts';
import type { OwnProcesses } from './own-processes.ts';
import { repairNetwork, type GuestSetChecker } from './repair.ts';
import { RepairScheduler, type SchedulerReports } from './scheduler.ts';

export interface DriftWatchDeps {
  log: Logger;
  /** Where repairs are logged and counted (RepairLog, shared with NetworkServices). */
  repairs: SchedulerReports;
  /** Desired state of every declared network (the same array while the list is unchanged). */
  networks(): readonly DesiredNetwork[];
  /** A targeted reconcile of one network. */
  reconcile(network: string): Promise<ReconcileSummary>;
  /** Guest sets: compared with the VMs, rewritten and reported when they differ (NetworkServices). */
  guestSets: GuestSetChecker;
  /** The processes imds started (the runner's `onStarted`): their nftables transactions are ours. */
  ownProcesses: OwnProcesses;
  /** Ports of the named bridges now (bridge/ports.ts bridgePorts). */
  bridgePorts(bridges: string[]): Promise<Map<string, { index: number; ports: string[] }> | undefined>;
  /** Puts ports back on a bridge imds recreated (bridge/ports.ts reattachPorts). */
  reattach(bridge: string, ports: string[]): Promise<string[]>;
  /** The periodic check (what sends no event: a namespace's name removed), ms. */
  intervalMs: number;
  /** Coalescing window for a burst of causes, ms. */
  settleMs?: number;
  clock?: Clock;
}

export class DriftWatch {
  private readonly deps: DriftWatchDeps;
  private readonly scheduler: RepairScheduler;
  private readonly ports: BridgePortTracker;
  private readonly hostLinks: HostLinkSource;
  private readonly hostNft: NftSource;
  private readonly namespaces: NamespaceEvents;
  private readonly namespaceWatch: NamespaceWatch;
  private hostSockets: EventSocket[] = [];
  private stopped = false;

  constructor(deps: DriftWatchDeps) {
    this.deps = deps;
    const { log, ownProcesses: own } = deps;
    const clock = deps.clock ?? systemClock;
    const networks = () => deps.networks();
    const owner = linkOwners(networks);
    const bridgeOf = (network: string) => networks().find((d) => d.id === network)?.bridge;
    this.ports = new BridgePortTracker({ read: (bridges) => deps.bridgePorts(bridges), owner, log });
    this.scheduler = new RepairScheduler({
      repair: repairNetwork({ ...deps, bridgeOf, portsOf: (bridge) => this.ports.portsOf(bridge) }),
      reports: deps.repairs,
      clock,
      ...(deps.settleMs === undefined ? {} : { settleMs: deps.settleMs }),
    });
    const emit = (cause: Cause) => this.scheduler.add(cause);
    this.hostLinks = new HostLinkSource({ owner, ports: this.ports, emit, log });
    this.hostNft = new NftSource({ rules: hostNftRules(networks), emit, own, clock });
    this.namespaces = new NamespaceEvents({ emit, own, clock, log });
    this.namespaceWatch = new NamespaceWatch({
      dir: NETNS_RUN_DIR,
      namespaces: () => this.namespaces.namespaces(),
      inodeOf,
      emit,
      intervalMs: deps.intervalMs,
    });
  }

  /** Subscribes to the hypervisor namespace's events; namespaces are added as networks converge. */
  start(): void {
    try {
      this.hostSockets.push(
        openEventSocket({
          protocol: NETLINK_ROUTE,
          groups: [RTNLGRP_LINK],
          rcvbuf: HOST_EVENTS_RCVBUF,
          onMessages: (msgs) => this.hostLinks.onMessages(msgs.map(parseRtMessage)),
          onError: (err) => this.eventsLost('link', err),
        }),
      );
      this.hostSockets.push(
        openEventSocket({
          protocol: NETLINK_NETFILTER,
          groups: [NFNLGRP_NFTABLES],
          rcvbuf: HOST_EVENTS_RCVBUF,
          onMessages: (msgs) => this.hostNft.onMessages(msgs),
          onError: (err) => this.eventsLost('nftables', err),
        }),
      );
    } catch (err) {
      for (const s of this.hostSockets) s.close();
      this.hostSockets = [];
      const msg = 'cannot subscribe to kernel events: kernel drift is noticed by the periodic check only';
      this.deps.log.warn({ err: messageOf(err) }, msg);
    }
    this.namespaceWatch.start();
  }

  /** Stops noticing and repairing; resolves once a repair in flight has ended (shutdown closes the listeners next). */
  stop(): Promise<void> {
    this.stopped = true;
    this.namespaceWatch.stop();
    for (const s of this.hostSockets) s.close();
    this.hostSockets = [];
    this.hostNft.close();
    this.namespaces.stop();
    return this.scheduler.stop();
  }

  /** No repair until `resume()` (a hand-over: the successor's changes are not drift); resolves once a running repair ended. */
  pause(): Promise<void> {
    return this.scheduler.pause();
  }

  /** Repairs again, starting with a check of every network (what changed while paused is unknown). */
  resume(): void {
    this.scheduler.resume();
    for (const d of this.deps.networks()) this.scheduler.add({ kind: 'repair-resumed', network: d.id });
  }

  /** Watches the network (its bridge's ports, its namespace: again if it was rebuilt). Called when the network serves. */
  watch(d: DesiredNetwork): void {
    if (this.stopped) return;
    this.ports.track(d);
    this.namespaces.watch(d);
  }

  /** Stops watching a network's namespace (it is being removed or rebuilt). */
  unwatch(network: string): void {
    this.namespaces.unwatch(network);
  }

  /**
   * A host event socket reported an error: what was missed is unknown, so every network is checked.
   * (Overruns do not get here: the sockets are set not to report them, see netlink.ts.)
   */
  private eventsLost(events: 'link' | 'nftables', err: Error): void {
    this.deps.log.warn({ events, err: messageOf(err) }, 'kernel event socket error; checking every network');
    for (const d of this.deps.networks()) this.scheduler.add({ kind: 'events-lost', network: d.id, events, where: 'host' });
  }
}
