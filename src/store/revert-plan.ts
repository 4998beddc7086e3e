// Undoing an import the kernel refused (pure): the records it touched put back as they were at a
// snapshot, and nothing else, so what other callers changed meanwhile stays. The inventory applies
// the plan (one store transaction, then memory and the index), as it applies a batch's plan.
import { isDeepStrictEqual } from 'node:util';
import type { Current, VmPlace } from './batch-plan.ts';
import type { BatchChange, StoredNetwork, StoredVm } from './sqlite-store.ts';

/** The records an import touched: what may be put back. */
export interface RevertScope {
  networks: ReadonlySet<string>;
  vms: ReadonlySet<string>;
  passwords: ReadonlySet<string>;
}

export interface RevertPlan {
  /** What the store writes. */
  change: BatchChange & { passwords: ReadonlyMap<string, string>; clearPasswords: readonly string[] };
  /** Every network and VM once the plan is applied. */
  networks: StoredNetwork[];
  vms: StoredVm[];
  /** Networks whose VMs change, and VMs that leave a network. */
  touched: Set<string>;
  gone: VmPlace[];
}

/** Of `ids`: the records to delete (absent then) and to write back (changed since). */
function back<T>(ids: ReadonlySet<string>, then: ReadonlyMap<string, T>, now: ReadonlyMap<string, T>) {
  return {
    remove: [...ids].filter((id) => !then.has(id) && now.has(id)),
    write: [...ids].flatMap((id) => {
      const record = then.get(id);
      const current = now.get(id);
      return record !== undefined && (current === undefined || !isDeepStrictEqual(current, record)) ? [record] : [];
    }),
  };
}

/** Applies removals and writes to a copy of `now`. */
function after<T>(now: ReadonlyMap<string, T>, remove: readonly string[], write: readonly T[], idOf: (r: T) => string): T[] {
  const out = new Map(now);
  for (const id of remove) out.delete(id);
  for (const r of write) out.set(idOf(r), r);
  return [...out.values()];
}

export function planRevert(now: Current, snapshot: Current, scope: RevertScope): RevertPlan {
  const nets = back(scope.networks, snapshot.networks, now.networks);
  const vms = back(scope.vms, snapshot.vms, now.vms);
  const pwIds = [...scope.passwords].filter((id) => snapshot.vms.has(id));
  const passwords = new Map(
    pwIds.flatMap((id) => {
      const value = snapshot.passwords.get(id);
      return value !== undefined && now.passwords.get(id) !== value ? [[id, value] as const] : [];
    }),
  );
  const clearPasswords = pwIds.filter((id) => !snapshot.passwords.has(id) && now.passwords.has(id));
  const networkOf = (records: ReadonlyMap<string, StoredVm>, id: string) => records.get(id)?.vm.network;
  return {
    change: { deleteVms: vms.remove, deleteNetworks: nets.remove, networks: nets.write, vms: vms.write, passwords, clearPasswords },
    networks: after(now.networks, nets.remove, nets.write, (n) => n.network.id),
    vms: after(now.vms, vms.remove, vms.write, (v) => v.vm.id),
    touched: new Set([...scope.vms].flatMap((id) => [networkOf(now.vms, id), networkOf(snapshot.vms, id)]).filter((n) => n !== undefined)),
    gone: [...scope.vms].flatMap((id) => {
      const network = networkOf(now.vms, id);
      return network !== undefined && networkOf(snapshot.vms, id) !== network ? [{ id, network }] : [];
    }),
  };
}
