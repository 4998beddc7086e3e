// The daemon's registry side (issue 18), built only when `registry` is configured: the sync that
// keeps the inventory equal to this host's placement, the writer the admin API uses instead of
// the local store, and this host's registration (hosts/<host_id>, a leased alive/<host_id>).
// The etcd client module is imported lazily (and only then).
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { EtcdApi, EtcdClientFactory, EtcdConnection } from '../registry/etcd-api.ts';
import { HostRegistrar } from '../registry/host-registrar.ts';
import { PasswordPublisher } from '../registry/password-publisher.ts';
import { RegistrySync, type RegistryStatus, type SyncTarget } from '../registry/sync.ts';
import { RegistryWriter } from '../registry/writer.ts';
import type { VmRefLookups } from '../server/admin/vm-ref.ts';
import type { BatchResult } from '../store/batch-plan.ts';
import { VERSION } from '../version.ts';

/** A host registered in the registry, as `imds host list` shows it. */
export interface RegistryHost {
  host_id: string;
  /** Its daemon holds its leased alive key (it runs and reaches etcd). */
  live: boolean;
  /** The imds version of its daemon (the live one's, else the last registered). */
  version: string;
  /** When that daemon started. */
  started_at: string;
  /** VMs placed on it in the registry. */
  vms: number;
  /** Whether it registered (false: VMs are placed on a host whose daemon never started with this registry). */
  registered: boolean;
}

export interface RegistrySide {
  readonly hostId: string;
  readonly sync: RegistrySync;
  readonly writer: RegistryWriter;
  /** Guests' posted passwords on their way to the registry (retried while etcd is unreachable). */
  readonly passwords: PasswordPublisher;
  readonly registrar: HostRegistrar;
  readonly vmRefs: VmRefLookups;
  revisionOf(kind: 'network' | 'vm', id: string): number | undefined;
  hostOf(vmId: string): string | undefined;
  status(): RegistryStatus & { host_id: string; prefix: string; endpoints: readonly string[]; hosts: RegistryHost[] };
  close(): Promise<void>;
}

/** The TLS files given (absent ones left out). */
function definedOnly(tls: NonNullable<EtcdConnection['tls']>): { ca?: string; cert?: string; key?: string } {
  return Object.fromEntries(Object.entries(tls).filter(([, v]) => v !== undefined));
}

/** The etcd client (src/registry/etcd-client.ts, gRPC), imported on first use: a daemon without a registry never loads gRPC. */
export async function loadEtcdClientFactory(): Promise<EtcdClientFactory> {
  const { EtcdClient } = await import('../registry/etcd-client.ts');
  return (c: EtcdConnection) =>
    new EtcdClient({
      endpoints: c.endpoints,
      ...(c.tls === undefined ? {} : { tls: definedOnly(c.tls) }),
    });
}

export interface RegistrySideOptions {
  target: SyncTarget;
  log: Logger;
  /** Called after a placement changed the inventory (networks to build or remove: converge). */
  onApplied?: (result: BatchResult) => void;
  /** Replaces the IMDSv2 token key with the registry's. */
  onTokenKey?: (key: Buffer | undefined) => void;
  /** Tests: another client. */
  factory?: EtcdClientFactory;
  /** Tests: the lease of this host's alive key. Default 10 s. */
  aliveTtlSeconds?: number;
}

export function buildRegistrySide(cfg: Config, options: RegistrySideOptions): RegistrySide | undefined {
  const registry = cfg.registry;
  if (registry === undefined || cfg.host_id === undefined) return undefined;
  const hostId = cfg.host_id;
  const { endpoints, prefix, tls, max_txn_ops: maxTxnOps } = registry.etcd;
  let client: Promise<EtcdApi> | undefined;
  const etcd = (): Promise<EtcdApi> => {
    if (client === undefined) {
      const made = (async () => {
        const factory = options.factory ?? (await loadEtcdClientFactory());
        return factory({ endpoints, ...(tls === undefined ? {} : { tls }) });
      })();
      client = made;
      // A failed creation (a bad TLS file) is tried again next time.
      made.catch(() => {
        if (client === made) client = undefined;
      });
    }
    return client;
  };
  const log = options.log.child({ component: 'registry' });
  const passwords: PasswordPublisher = new PasswordPublisher({
    publish: (vmId: string, value: string): Promise<unknown> => writer.setPassword(vmId, value, false),
    log,
  });
  const sync: RegistrySync = new RegistrySync({
    keepPassword: (vmId: string): boolean => passwords.isPending(vmId),
    etcd,
    prefix,
    hostId,
    target: options.target,
    log,
    ...(options.onApplied === undefined ? {} : { onApplied: options.onApplied }),
    ...(options.onTokenKey === undefined ? {} : { onTokenKey: options.onTokenKey }),
    // The registration starts with the first read (the daemon's sync.start()).
    onStart: () => registrar.start(),
  });
  const writer: RegistryWriter = new RegistryWriter({ etcd, keys: sync.keys, sync, hostId, maxTxnOps });
  const registrar = new HostRegistrar({
    etcd,
    keys: sync.keys,
    hostId,
    version: VERSION,
    log,
    ...(options.aliveTtlSeconds === undefined ? {} : { ttlSeconds: options.aliveTtlSeconds }),
  });
  const hosts = (): RegistryHost[] => {
    const { hosts: registered, alive, vms } = sync.state;
    const placed = new Map<string, number>();
    for (const { host } of vms.values()) placed.set(host, (placed.get(host) ?? 0) + 1);
    const ids = [...new Set([...registered.keys(), ...alive.keys(), ...placed.keys()])].sort();
    return ids.map((id) => {
      const record = alive.get(id) ?? registered.get(id);
      return {
        host_id: id,
        live: alive.has(id),
        version: record?.version ?? '',
        started_at: record?.started_at ?? '',
        vms: placed.get(id) ?? 0,
        registered: registered.has(id),
      };
    });
  };
  return {
    hostId,
    sync,
    writer,
    passwords,
    registrar,
    hostOf: (vmId) => sync.state.vms.get(vmId)?.host,
    revisionOf: (kind, id) => sync.state.modRevisions.get(kind === 'vm' ? sync.keys.vm(id) : sync.keys.network(id)),
    vmRefs: { byId: (id) => sync.state.vms.get(id)?.vm, all: () => [...sync.state.vms.values()].map((v) => v.vm) },
    status: () => ({ ...sync.status(), host_id: hostId, prefix, endpoints, hosts: hosts() }),
    close: async () => {
      passwords.close();
      await registrar.close();
      return sync.close();
    },
  };
}
