// Stored records as the admin API shows them: a network with its bridge, state and DHCP server; a
// VM with its user data's size (and the data itself only when asked).
import type { z } from 'zod';
import type { RecentRequest } from '../../contact.ts';
import type { DhcpStatus } from '../../dhcp/dhcp-servers.ts';
import { bridgeNameOf } from '../../model/names.ts';
import type { StoredNetwork, StoredVm } from '../../store/sqlite-store.ts';
import type { AdminDeps } from './deps.ts';
import type { networkView, vmView } from './schemas.ts';

type NetworkView = z.infer<typeof networkView>;
type VmView = z.infer<typeof vmView>;

function dhcpView(s: DhcpStatus | undefined): { dhcp_server?: NonNullable<NetworkView['dhcp_server']> } {
  if (s === undefined) return {};
  return {
    dhcp_server: {
      state: s.state,
      restarts: s.restarts,
      ...(s.pid === undefined ? {} : { pid: s.pid }),
      ...(s.last_error === undefined ? {} : { last_error: s.last_error }),
    },
  };
}

export function networkViewOf(deps: AdminDeps, stored: StoredNetwork): NetworkView {
  const n = stored.network;
  const status = deps.statusOf(n.id);
  return {
    ...n,
    bridge: bridgeNameOf(n),
    origin: stored.origin,
    vms: deps.inventory.vmCount(n.id),
    ...revisionView(deps, 'network', n.id, stored.origin),
    state: status?.state ?? 'pending',
    ...(status?.reason === undefined ? {} : { reason: status.reason }),
    ...dhcpView(deps.dhcpStatusOf?.(n.id)),
  };
}

/** With a registry, a registry record's mod revision (what `if_revision` compares). */
function revisionView(deps: AdminDeps, kind: 'network' | 'vm', id: string, origin: string): { revision?: number } {
  const revision = origin === 'registry' ? deps.registry?.revisionOf(kind, id) : undefined;
  return revision === undefined ? {} : { revision };
}

/** Every network, as listed by GET /v1/networks and GET /v1/status. */
export function networkViews(deps: AdminDeps): NetworkView[] {
  const { inventory } = deps;
  return inventory.networkList().map((n) => networkViewOf(deps, inventory.requireNetwork(n.id)));
}

/** `full`: with the user data itself (GET /v1/vms/{id} only). */
export function vmViewOf(deps: AdminDeps, stored: StoredVm, full: boolean): VmView {
  const { user_data, ...vm } = stored.vm;
  return {
    ...vm,
    user_data_bytes: user_data?.length ?? 0,
    ...(full && user_data !== undefined ? { user_data_b64: user_data.toString('base64') } : {}),
    password_set: deps.inventory.password(vm.id) !== '',
    ...(deps.registry !== undefined && stored.origin === 'registry' && deps.inventory.getVm(vm.id) !== undefined
      ? { host: deps.registry.hostId }
      : {}),
    ...revisionView(deps, 'vm', vm.id, stored.origin),
    origin: stored.origin,
    ...contactView(deps, vm.id, full),
  };
}

const iso = (ms: number): string => new Date(ms).toISOString();

/** The VM's contact; `full` (one VM) with its recent requests. */
function contactView(deps: AdminDeps, vmId: string, full: boolean): Pick<VmView, 'contact'> {
  const c = deps.contactOf?.(vmId);
  if (c === undefined) return {};
  const contact: NonNullable<VmView['contact']> = {
    requests: c.requests,
    first_seen: iso(c.firstSeen),
    last_seen: iso(c.lastSeen),
    last_status: c.lastStatus,
  };
  if (full) contact.recent = recentView(c.recent?.entries() ?? []);
  return { contact };
}

export function recentView(entries: readonly RecentRequest[]): NonNullable<NonNullable<VmView['contact']>['recent']> {
  return entries.map((e) => ({
    at: iso(e.at),
    ...(e.method === undefined ? {} : { method: e.method }),
    ...(e.path === undefined ? {} : { path: e.path }),
    status: e.status,
    requests: e.requests,
    by: e.by,
  }));
}
