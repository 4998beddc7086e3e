// The daemon's registry side (issue 18), built only when `registry` is configured: the sync that
// keeps the inventory equal to this host's placement, and the writer the admin API uses instead of
// the local store. The etcd client module is imported lazily (and only then).
import { extname } from 'node:path';
import type { Config } from '../config.ts';
import { ImdsError, messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { EtcdApi, EtcdClientFactory, EtcdConnection } from '../registry/etcd-api.ts';
import { RegistrySync, type RegistryStatus, type SyncTarget } from '../registry/sync.ts';
import { RegistryWriter } from '../registry/writer.ts';
import type { VmRefLookups } from '../server/admin/vm-ref.ts';
import type { BatchResult } from '../store/batch-plan.ts';

export interface RegistrySide {
  readonly hostId: string;
  readonly sync: RegistrySync;
  readonly writer: RegistryWriter;
  readonly vmRefs: VmRefLookups;
  status(): RegistryStatus & { host_id: string; prefix: string; endpoints: readonly string[] };
  close(): Promise<void>;
}

/** The etcd client module (another file of this tree), loaded on first use; its extension follows this module's (.ts from source, .js built). */
export async function loadEtcdClientFactory(): Promise<EtcdClientFactory> {
  const url = new URL(`../registry/etcd-client${extname(new URL(import.meta.url).pathname)}`, import.meta.url);
  let mod: { createEtcdClient?: EtcdClientFactory; EtcdClient?: new (c: EtcdConnection) => EtcdApi };
  try {
    mod = (await import(url.href)) as typeof mod;
  } catch (err) {
    throw new ImdsError('INTERNAL', `the etcd client cannot be loaded (${url.pathname}): ${messageOf(err)}`, { cause: err });
  }
  if (mod.createEtcdClient !== undefined) return mod.createEtcdClient;
  const Client = mod.EtcdClient;
  if (Client !== undefined) return (c) => new Client(c);
  throw new ImdsError('INTERNAL', `${url.pathname} exports neither createEtcdClient nor EtcdClient`);
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
  const { endpoints, prefix, tls } = registry.etcd;
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
  const sync = new RegistrySync({
    etcd,
    prefix,
    hostId,
    target: options.target,
    log,
    ...(options.onApplied === undefined ? {} : { onApplied: options.onApplied }),
    ...(options.onTokenKey === undefined ? {} : { onTokenKey: options.onTokenKey }),
  });
  const writer = new RegistryWriter({ etcd, keys: sync.keys, sync, hostId });
  return {
    hostId,
    sync,
    writer,
    vmRefs: { byId: (id) => sync.state.vms.get(id)?.vm, all: () => [...sync.state.vms.values()].map((v) => v.vm) },
    status: () => ({ ...sync.status(), host_id: hostId, prefix, endpoints }),
    close: () => sync.close(),
  };
}
