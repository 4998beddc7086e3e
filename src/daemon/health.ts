// What "degraded" means, in one place: a network is degraded when the kernel side does not serve
// it (its last reconcile failed) or, on a DHCP network, when its dnsmasq does not serve. Read by
// the admin API (network views, /v1/health: 503), `imds status` (exit 1), systemd's STATUS= line
// and the metrics.
import type { NetworkStatus } from '../controller/reconciler.ts';
import type { KernelSide } from './kernel-side.ts';
import type { Inventory } from '../store/inventory.ts';
import type { RegistryStatus } from '../registry/sync.ts';

export interface Health {
  /** The network's effective status (DHCP included); undefined before its first reconcile. */
  statusOf(network: string): NetworkStatus | undefined;
  /** One line for systemd's STATUS= (and the ready log). */
  line(): string;
  /** Whether every network serves (and the registry, when configured, is connected). */
  ok(): boolean;
  /** The registry's state; undefined without a registry. */
  registry(): RegistryStatus | undefined;
}

export function health(kernel: KernelSide, inventory: Inventory, registry?: { status(): RegistryStatus }): Health {
  const statusOf = (network: string): NetworkStatus | undefined => {
    const status = kernel.reconciler.statusOf(network);
    if (status === undefined || status.state !== 'serving') return status;
    if (inventory.getNetwork(network)?.network.dhcp !== true) return status;
    const dhcp = kernel.dhcp.statusOf(network);
    if (dhcp?.healthy === true) return status;
    const why = dhcp === undefined ? 'not started' : `${dhcp.state}${dhcp.last_error === undefined ? '' : `: ${dhcp.last_error}`}`;
    return { ...status, state: 'degraded', reason: `DHCP server ${why}` };
  };
  const states = (): { network: string; status: NetworkStatus | undefined }[] =>
    inventory.networkList().map((n) => ({ network: n.id, status: statusOf(n.id) }));
  return {
    statusOf,
    registry: () => registry?.status(),
    ok: () => registry?.status().connected !== false && states().every((s) => s.status?.state === 'serving'),
    line: () => {
      const base = networksLine();
      return registry === undefined || registry.status().connected ? base : `${base}; registry disconnected (serving the local copy)`;
    },
  };
  function networksLine(): string {
    const all = states();
    const serving = all.filter((s) => s.status?.state === 'serving').length;
    const degraded = all.filter((s) => s.status?.state === 'degraded').map((s) => s.network);
    const base = `serving ${serving}/${all.length} networks, ${inventory.vmCount()} VMs`;
    return degraded.length === 0 ? base : `${base}; degraded: ${degraded.join(', ')}`;
  }
}
