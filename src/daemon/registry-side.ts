// The daemon's registry side (issue 18), built only when `registry` is configured: the sync that
// keeps the inventory equal to this host's placement, and the writer the admin API uses instead of
// the local store. The etcd client module is imported lazily (and only then).
import type { Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { EtcdApi, EtcdClientFactory, EtcdConnection } from '../registry/etcd-api.ts';
import { PasswordPublisher } from '../registry/password-publisher.ts';
import { RegistrySync, type RegistryStatus, type SyncTarget } from '../registry/sync.ts';
import { RegistryWriter } from '../registry/writer.ts';
import type { VmRefLookups } from '../server/admin/vm-ref.ts';
import type { BatchResult } from '../store/batch-plan.ts';

export interface RegistrySide {
  readonly hostId: string;
  readonly sync: RegistrySync;
  readonly writer: RegistryWriter;
  /** Guests' posted passwords on their way to the registry (retried while etcd is unreachable). */
  readonly passwords: PasswordPublisher;
  readonly vmRefs: VmRefLookups;
  revisionOf(kind: 'network' | 'vm', id: string): number | undefined;
  hostOf(vmId: string): string | undefined;
  status(): RegistryStatus & { host_id: string; prefix: string; endpoints: readonly string[] };
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
  });
  const writer: RegistryWriter = new RegistryWriter({ etcd, keys: sync.keys, sync, hostId, maxTxnOps });
  return {
    hostId,
    sync,
    writer,
    passwords,
    hostOf: (vmId) => sync.state.vms.get(vmId)?.host,
    revisionOf: (kind, id) => sync.state.modRevisions.get(kind === 'vm' ? sync.keys.vm(id) : sync.keys.network(id)),
    vmRefs: { byId: (id) => sync.state.vms.get(id)?.vm, all: () => [...sync.state.vms.values()].map((v) => v.vm) },
    status: () => ({ ...sync.status(), host_id: hostId, prefix, endpoints }),
    close: () => {
      passwords.close();
      return sync.close();
    },
  };
}
