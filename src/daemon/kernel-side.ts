// The daemon's kernel side, built and connected through constructors: the reconciler (links,
// namespaces, tables), what each serving network needs beyond them (guest sets, dnsmasq), the
// anti-spoofing counters, and the drift watch that has damage repaired.
import type { Config } from '../config.ts';
import { reattachPorts, bridgePorts } from '../bridge/ports.ts';
import { desiredState, type DesiredNetwork } from '../controller/desired.ts';
import type { OwnProcesses } from '../controller/drift/own-processes.ts';
import { RepairLog } from '../controller/drift/report.ts';
import { DriftWatch } from '../controller/drift/watch.ts';
import { NetworkServices, type NetworkHooks } from '../controller/network-services.ts';
import { Reconciler, type ReconcileSummary } from '../controller/reconciler.ts';
import { SpoofWatch } from '../controller/spoof-watch.ts';
import { DhcpServers } from '../dhcp/dhcp-servers.ts';
import type { Logger } from '../log.ts';
import type { Network } from '../model/schema.ts';
import { NftBatcher } from '../netns/nft-batch.ts';
import type { Runner } from '../netns/run.ts';
import type { NetnsListeners } from '../server/listeners.ts';
import type { Stats } from '../stats.ts';
import type { Inventory } from '../store/inventory.ts';

export interface KernelSide {
  reconciler: Reconciler;
  services: NetworkServices;
  dhcp: DhcpServers;
  drift: DriftWatch;
  spoofWatch: SpoofWatch;
  /** Converges every network of the inventory (orphans removed). */
  converge: () => Promise<ReconcileSummary>;
  /** Converges one network (nothing else is looked at). */
  convergeNetwork: (id: string) => Promise<ReconcileSummary>;
}

export interface KernelSideDeps {
  /** The running configuration (replaced by a reload; restart-only keys never change). */
  config: { current: Config };
  runner: Runner;
  inventory: Inventory;
  listeners: NetnsListeners;
  stats: Stats;
  log: Logger;
  /** The pids of our own commands (their nftables transactions are not drift). */
  ownProcesses: OwnProcesses;
}

/** Desired state of every network, computed again only when the network list changed. */
function desiredNetworks(cfg: Config, inventory: Inventory): () => DesiredNetwork[] {
  let memo: { networks: Network[]; desired: DesiredNetwork[] } | undefined;
  return () => {
    const networks = inventory.networkList();
    if (memo === undefined || memo.networks.length !== networks.length || memo.networks.some((n, i) => n !== networks[i])) {
      const desired = desiredState({ namespacePrefix: cfg.namespace_prefix, listenPort: cfg.listen_port, networks });
      memo = { networks, desired: [...desired.networks.values()] };
    }
    return memo.desired;
  };
}

function networkServices(deps: KernelSideDeps, dhcp: DhcpServers, hostNft: NftBatcher, repairs: RepairLog): NetworkServices {
  const { inventory } = deps;
  return new NetworkServices({
    runner: deps.runner,
    hostNft,
    dhcp,
    repairs,
    log: deps.log.child({ component: 'services' }),
    network: (id) => inventory.getNetwork(id)?.network,
    hosts: (network) => inventory.vmList(network).map(({ vm }) => ({ mac: vm.mac, ip: vm.ip, hostname: vm.hostname })),
    defaultDomain: () => deps.config.current.dhcp_domain,
  });
}

export function buildKernelSide(deps: KernelSideDeps): KernelSide {
  const { runner, inventory, stats, log } = deps;
  const cfg = deps.config.current; // restart-only keys
  const dhcp = new DhcpServers({ dir: cfg.dhcp_dir, log: log.child({ component: 'dhcp' }) });
  const hostNft = new NftBatcher(runner);
  const repairs = new RepairLog({ log: log.child({ component: 'drift' }), stats });
  const services = networkServices(deps, dhcp, hostNft, repairs);
  const spoofWatch = new SpoofWatch({
    runner,
    log: log.child({ component: 'spoofing' }),
    stats,
    serving: () => services.servingNetworks(),
    intervalMs: cfg.spoof_check_interval_s * 1000,
  });
  const drift = new DriftWatch({
    log: log.child({ component: 'drift' }),
    repairs,
    networks: desiredNetworks(cfg, inventory),
    reconcile: (id) => reconciler.reconcile(inventory.networkList(), [id]),
    guestSets: services,
    ownProcesses: deps.ownProcesses,
    bridgePorts: (bridges) => bridgePorts(bridges),
    reattach: (bridge, ports) => reattachPorts(runner, bridge, ports),
    intervalMs: cfg.drift_check_interval_s * 1000,
  });
  const hooks: NetworkHooks = {
    converged: async (d, sets) => {
      await services.converged(d, sets);
      drift.watch(d);
    },
    stopping: async (network, options) => {
      drift.unwatch(network);
      await services.stopping(network, options);
    },
    bridgeSetsLoaded: (networks) => services.bridgeSetsLoaded(networks),
  };
  const reconciler = new Reconciler({
    runner,
    hostNft,
    guestsOf: (network) => inventory.vmList(network).map(({ vm }) => ({ mac: vm.mac, ip: vm.ip })),
    listeners: deps.listeners,
    hooks,
    log: log.child({ component: 'controller' }),
    namespacePrefix: cfg.namespace_prefix,
    listenPort: cfg.listen_port,
    onResult: (summary) => {
      stats.reconcileDuration.observe(summary.ms / 1000);
      for (const n of summary.networks) if (n.state !== 'serving') stats.reconcileFailed(n.network);
      for (const f of summary.removalFailures) stats.reconcileFailed(f.network);
    },
  });
  return {
    reconciler,
    services,
    dhcp,
    drift,
    spoofWatch,
    converge: () => reconciler.reconcile(inventory.networkList()),
    convergeNetwork: (id) => reconciler.reconcile(inventory.networkList(), [id]),
  };
}
