// A VM named on the command line or in /v1/vms/{ref}: by its id (UUID), host name, display name,
// address or MAC; `NET/REF` looks only in one network (the same address may exist on two networks).
// An id wins outright; anything else must match exactly one VM, else AMBIGUOUS lists the candidates.
import { ImdsError } from '../../errors.ts';
import type { Vm } from '../../model/schema.ts';
import type { StoredVm } from '../../store/sqlite-store.ts';
import type { AdminDeps, AdminRouter, VmRefLookups } from './deps.ts';

export type { VmRefLookups } from './deps.ts';

/**
 * The registry's VMs first, then the local store's it does not know: a daemon started while etcd is
 * down has read nothing from the registry yet but serves (and must show) its local copy.
 */
export function withFallback(first: VmRefLookups, then: VmRefLookups): VmRefLookups {
  return {
    byId: (id) => first.byId(id) ?? then.byId(id),
    all: function* () {
      const seen = new Set<string>();
      for (const vm of first.all()) {
        seen.add(vm.id);
        yield vm;
      }
      for (const vm of then.all()) if (!seen.has(vm.id)) yield vm;
    },
  };
}

function matches(vm: Vm, ref: string): boolean {
  const lower = ref.toLowerCase();
  return vm.hostname.toLowerCase() === lower || vm.name === ref || vm.ip === ref || vm.mac.toLowerCase() === lower.replace(/-/g, ':');
}

/** The id of the VM a reference names; NOT_FOUND when none (the message says how VMs are named), AMBIGUOUS when several. */
export function resolveVmRef(ref: string, lookups: VmRefLookups): string {
  const direct = lookups.byId(ref.toLowerCase());
  if (direct !== undefined) return direct.id;
  const slash = ref.indexOf('/');
  const network = slash > 0 ? ref.slice(0, slash) : undefined;
  const key = slash > 0 ? ref.slice(slash + 1) : ref;
  const found: Vm[] = [];
  for (const vm of lookups.all()) if ((network === undefined || vm.network === network) && matches(vm, key)) found.push(vm);
  const [only] = found;
  if (found.length === 0)
    throw new ImdsError(
      'NOT_FOUND',
      `no VM ${ref} (a VM is named by its id, host name, display name, address or MAC; NET/REF in one network)`,
      {
        field: 'id',
      },
    );
  if (found.length === 1 && only !== undefined) return only.id;
  const candidates = found.map((v) => ({ id: v.id, network: v.network, ip: v.ip, mac: v.mac, hostname: v.hostname }));
  throw new ImdsError(
    'AMBIGUOUS',
    `"${ref}" names ${found.length} VMs: ${candidates.map((c) => `${c.id} (${c.network} ${c.ip} ${c.mac} ${c.hostname})`).join(', ')}; ` +
      `name one by its id${network === undefined ? ' or as NETWORK/REF' : ''}`,
    { field: 'id', details: { candidates } },
  );
}

/** Resolves `:id` of every /v1/vms/:id route to the VM's id before the handler runs. */
export function resolveVmRefs(app: AdminRouter, lookups: VmRefLookups): void {
  app.addHook('preHandler', (req, _reply, next) => {
    const params = req.params as { id?: unknown } | undefined;
    try {
      if (params !== undefined && typeof params.id === 'string') params.id = resolveVmRef(params.id, lookups);
      next();
    } catch (err) {
      next(err as Error);
    }
  });
}

/** A VM this host serves; with a registry, a VM placed on another host is NOT_FOUND naming that host (where to look instead). */
export function requireServedVm(deps: AdminDeps, id: string): StoredVm {
  const stored = deps.inventory.getVm(id);
  if (stored !== undefined) return stored;
  const host = deps.registry?.hostOf(id);
  if (host === undefined || deps.registry === undefined) return deps.inventory.requireVm(id);
  throw new ImdsError('NOT_FOUND', `VM ${id} is placed on host ${host}, not on this one (${deps.registry.hostId}): ask ${host}'s daemon`, {
    field: 'id',
    details: { host },
  });
}
