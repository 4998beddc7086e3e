// What the admin API needs from the daemon (src/daemon/admin-side.ts builds it); every route plugin gets it as
// its `deps` option.
import type { DriveFormat } from '../../configdrive/image.ts';
import type { NetworkStatus, ReconcileSummary } from '../../controller/reconciler.ts';
import type { DhcpStatus } from '../../dhcp/dhcp-servers.ts';
import type { Contact } from '../../contact.ts';
import type { DoctorDeps } from '../../doctor/doctor.ts';
import type { Logger } from '../../log.ts';
import type { Metrics } from '../../metrics.ts';
import type { Vm } from '../../model/schema.ts';
import type { Inventory } from '../../store/inventory.ts';
import type { RegistryStatus } from '../../registry/sync.ts';
import type { RegistryWriter } from '../../registry/writer.ts';
import type { ProbeResult } from '../probe.ts';
import type { FastifyPluginCallbackZod } from 'fastify-type-provider-zod';

/** Where a VM reference (vm-ref.ts) is looked up: the inventory, or the registry and then the inventory. */
export interface VmRefLookups {
  byId(id: string): Vm | undefined;
  all(): Iterable<Vm>;
}

export interface AdminDeps {
  inventory: Inventory;
  log: Logger;
  metrics: Metrics;
  /** Converges the kernel to the inventory's networks (all of them; orphans removed). */
  converge(): Promise<ReconcileSummary>;
  /** Converges one network only (nothing else is observed). */
  convergeNetwork(id: string): Promise<ReconcileSummary>;
  /** The network's effective status (degraded when its kernel side or its DHCP server does not serve). */
  statusOf(network: string): NetworkStatus | undefined;
  /** The network's DHCP server, when it has one. */
  dhcpStatusOf?(network: string): DhcpStatus | undefined;
  probe(network: string, vmId: string, path: string, method: string): Promise<ProbeResult>;
  info(): Record<string, unknown>;
  /** When the VM last reached the metadata service (counters brought up to date first). */
  contactOf?(vmId: string): Contact | undefined;
  /** Replaces the IMDSv2 token key (persisted first). */
  rotateTokenKey(): void;
  /** The VM's config drive image. */
  configDrive(vmId: string, format: DriveFormat): Promise<Buffer>;
  /**
   * Resolves once VM changes made so far are in the kernel too (the bridge's interception set, the
   * namespace's guard sets, dnsmasq's hosts): a change is answered only then, so every guest —
   * also one reached by interception, or one whose MAC changed — is served when the call returns.
   */
  vmChangesApplied?(): Promise<void>;
  /**
   * Reloads the configuration file (what SIGHUP does): the reason when it was refused (nothing
   * changed then), undefined when it was applied. `imds reload` (systemd's ExecReload) waits for it.
   */
  reload?(): Promise<string | undefined>;
  /** `imds restart` without systemd: hands over to a successor (same command line); its pid. */
  restart?(): Promise<number>;
  /** With `registry` configured: networks and VMs are written to etcd through it (docs/registry.md). */
  registry?: {
    readonly hostId: string;
    readonly writer: RegistryWriter;
    status(): RegistryStatus;
    /** VM references resolve against the whole registry (a VM on another host can be named, e.g. to migrate it). */
    readonly vmRefs: VmRefLookups;
    /** The mod revision of a network's or VM's document as this daemon last read it (what `if_revision` compares). */
    revisionOf(kind: 'network' | 'vm', id: string): number | undefined;
    /** The host a VM is placed on in the registry (undefined: not in the registry). */
    hostOf(vmId: string): string | undefined;
    /** Guests' passwords waiting to be published from this host: a clear drops the VM's. */
    readonly passwords: { cancel(vmId: string): boolean };
  };
  /** What `imds doctor` reads (the kernel through the daemon's runner, DHCP, listeners, contacts). */
  doctor?: DoctorDeps;
}

/** The options every admin route plugin is registered with. */
export interface RouteOptions {
  deps: AdminDeps;
}

/** The Fastify instance a route plugin registers its routes on (zod schemas, typed requests). */
export type AdminRouter = Parameters<FastifyPluginCallbackZod<RouteOptions>>[0];

/** An admin route plugin: registered by buildAdminApp with a prefix and the deps. */
export type AdminPlugin = FastifyPluginCallbackZod<RouteOptions>;
