// A batch (an import, the configuration's seed) planned against the inventory as it is: the
// resulting networks and VMs validated as a whole, what each record becomes (created, updated,
// unchanged, deleted), and the one store change that writes it. Pure: the inventory applies the plan,
// a dry run only reports it.
import { isDeepStrictEqual } from 'node:util';
import { ImdsError, listProblems } from '../errors.ts';
import { bridgeNameOf } from '../model/names.ts';
import type { Network, Vm } from '../model/schema.ts';
import { checkVmSet, formatPath, networkProblems, type LabelledVm, type Path, type Problem } from '../model/validate.ts';
import type { BatchChange, Origin, StoredNetwork, StoredVm } from './sqlite-store.ts';

export interface BatchInput {
  networks?: readonly Network[];
  vms?: readonly Vm[];
  /** Passwords to set (replacing any) on VMs of the batch, by VM id. */
  passwords?: ReadonlyMap<string, string>;
  /** VMs of the batch whose password is removed (the registry's password key was deleted). */
  clearPasswords?: ReadonlySet<string>;
}

export interface Changes {
  created: string[];
  updated: string[];
  unchanged: string[];
  deleted: string[];
}

export interface BatchResult {
  networks: Changes;
  vms: Changes;
}

export interface BatchOptions {
  origin: Origin;
  /** Delete records of this origin that the batch no longer declares (seed_mode: authoritative, import --prune). */
  pruneOrigin?: Origin;
  /** With pruneOrigin: prune only VMs on these networks, and no network (import --prune=vms). */
  pruneNetworks?: ReadonlySet<string>;
  /** Prefix for problem paths, e.g. the configuration file's top level. */
  root?: Path;
  /** Validate and report, change nothing. */
  dryRun?: boolean;
}

/** The inventory as the plan sees it. */
export interface Current {
  networks: ReadonlyMap<string, StoredNetwork>;
  vms: ReadonlyMap<string, StoredVm>;
  passwords: ReadonlyMap<string, string>;
}

export interface BatchPlan {
  result: BatchResult;
  /** What the store writes (unchanged records are not written). */
  change: BatchChange;
  /** Every network and VM once the batch is applied. */
  networks: StoredNetwork[];
  vms: StoredVm[];
  /** Networks whose VMs change. */
  touched: Set<string>;
  /** VMs taken away from a network: pruned, or moved to another one (their per-VM state there can go). */
  gone: VmPlace[];
}

/** A VM on a network. */
export type VmPlace = { id: string; network: string };

/** The first problems spelled out in one error message, the rest counted (all are in details). */
export function validationError(problems: Problem[], context?: string): ImdsError {
  const first = problems[0];
  const lines = listProblems(problems, (p) => `${formatPath(p.path)}: ${p.message}`);
  const body = problems.length === 1 ? (lines[0] as string) : `${problems.length} problems:\n  ${lines.join('\n  ')}`;
  return new ImdsError('VALIDATION_FAILED', context === undefined ? body : `${context}: ${body}`, {
    ...(first === undefined ? {} : { field: formatPath(first.path) }),
    details: { problems: problems.map((p) => ({ field: formatPath(p.path), message: p.message })) },
  });
}

function duplicateNetworks(inNets: readonly Network[], root: Path, problems: Problem[]): Map<string, number> {
  const seen = new Map<string, number>();
  inNets.forEach((n, i) => {
    const first = seen.get(n.id);
    if (first !== undefined)
      problems.push({ path: [...root, 'networks', i, 'id'], message: `duplicate network id "${n.id}" (also networks[${first}])` });
    else seen.set(n.id, i);
  });
  return seen;
}

/** Ids of records of `options.pruneOrigin` the batch does not declare, within the prune's scope. */
function pruned(current: Current, batch: BatchInput, options: BatchOptions): { networks: string[]; vms: string[] } {
  const origin = options.pruneOrigin;
  if (origin === undefined) return { networks: [], vms: [] };
  const netIds = new Set((batch.networks ?? []).map((n) => n.id));
  const vmIds = new Set((batch.vms ?? []).map((v) => v.id));
  const scope = options.pruneNetworks;
  const networks =
    scope !== undefined
      ? []
      : [...current.networks.values()].filter((n) => n.origin === origin && !netIds.has(n.network.id)).map((n) => n.network.id);
  const vms = [...current.vms.values()]
    .filter((v) => v.origin === origin && !vmIds.has(v.vm.id) && (scope === undefined || scope.has(v.vm.network)))
    .map((v) => v.vm.id);
  return { networks, vms };
}

function networkSetProblems(resultNets: ReadonlyMap<string, Network>, inNets: readonly Network[], seen: Map<string, number>, root: Path) {
  const netLabels = new Map<string, string>();
  inNets.forEach((n, i) => netLabels.set(n.id, `networks[${i}]`));
  const userOf = (match: (n: Network) => boolean, self: string): string | undefined => {
    for (const n of resultNets.values()) if (n.id !== self && match(n)) return netLabels.get(n.id) ?? `network "${n.id}"`;
    return undefined;
  };
  const lookups = {
    bridgeUser: (bridge: string, self: string) => userOf((n) => bridgeNameOf(n) === bridge, self),
    uplinkUser: (uplink: string, self: string) => userOf((n) => n.uplink === uplink, self),
  };
  const problems: Problem[] = [];
  inNets.forEach((n, i) => {
    if (seen.get(n.id) === i) problems.push(...networkProblems(n, lookups, (f) => [...root, 'networks', i, f]));
  });
  return problems;
}

/** Plans the batch; throws VALIDATION_FAILED (naming every problem) when the result would break a rule. */
export function planBatch(current: Current, batch: BatchInput, options: BatchOptions): BatchPlan {
  const root = options.root ?? [];
  const inNets = batch.networks ?? [];
  const inVms = batch.vms ?? [];
  const passwords = batch.passwords ?? new Map<string, string>();
  const problems: Problem[] = [];
  const seen = duplicateNetworks(inNets, root, problems);
  const prune = pruned(current, batch, options);
  const batchNetIds = new Set(inNets.map((n) => n.id));
  const batchVmIds = new Set(inVms.map((v) => v.id));

  // The resulting networks: current ones, replaced or added by the batch, minus pruned ones.
  const prunedNets = new Set(prune.networks);
  const resultNets = new Map<string, Network>();
  for (const { network } of current.networks.values()) if (!prunedNets.has(network.id)) resultNets.set(network.id, network);
  for (const n of inNets) resultNets.set(n.id, n);
  problems.push(...networkSetProblems(resultNets, inNets, seen, root));

  // The resulting VMs: kept ones first, so a clash is reported on the batch entry.
  const prunedVms = new Set(prune.vms);
  const labelled: LabelledVm[] = [];
  for (const { vm } of current.vms.values()) {
    if (batchVmIds.has(vm.id) || prunedVms.has(vm.id)) continue;
    labelled.push({ vm, path: ['existing VM', vm.id], label: `VM ${vm.id}` });
  }
  inVms.forEach((vm, i) => labelled.push({ vm, path: [...root, 'vms', i], label: `vms[${i}]` }));
  problems.push(...checkVmSet([...resultNets.values()], labelled));
  const clear = batch.clearPasswords ?? new Set<string>();
  for (const id of [...passwords.keys(), ...clear])
    if (!batchVmIds.has(id)) problems.push({ path: [...root, 'passwords', id], message: `VM ${id} is not in the batch` });
  for (const id of clear)
    if (passwords.has(id)) problems.push({ path: [...root, 'passwords', id], message: `VM ${id}: a password both set and cleared` });
  if (problems.length > 0) throw validationError(problems, 'batch rejected, nothing was changed');

  const { origin } = options;
  const result: BatchResult = {
    networks: { created: [], updated: [], unchanged: [], deleted: prune.networks },
    vms: { created: [], updated: [], unchanged: [], deleted: prune.vms },
  };
  const writeNets = inNets.filter((n) => sort(result.networks, n.id, current.networks.get(n.id), (c) => isSame(c, n, origin)));
  const writeVms = inVms.filter((v) =>
    sort(result.vms, v.id, current.vms.get(v.id), (c) => isSame(c, v, origin) && samePassword(current, passwords, clear, v.id)),
  );
  const originOf = <T>(id: string, inBatch: boolean, from: ReadonlyMap<string, { origin: Origin } & T>): Origin =>
    inBatch ? origin : (from.get(id) as { origin: Origin }).origin;
  return {
    result,
    change: {
      deleteVms: prune.vms,
      deleteNetworks: prune.networks,
      networks: writeNets.map((network) => ({ network, origin })),
      vms: writeVms.map((vm) => ({ vm, origin })),
      passwords,
      clearPasswords: [...clear].filter((id) => current.passwords.has(id)),
    },
    networks: [...resultNets].map(([id, network]) => ({ network, origin: originOf(id, batchNetIds.has(id), current.networks) })),
    vms: labelled.map(({ vm }) => ({ vm, origin: originOf(vm.id, batchVmIds.has(vm.id), current.vms) })),
    touched: touchedNetworks(current, writeVms, prune.vms),
    gone: goneVms(current, writeVms, prune.vms),
  };
}

/** Files `id` under created, updated or unchanged; true when the record is to be written. */
function sort<T>(changes: Changes, id: string, before: T | undefined, same: (before: T) => boolean): boolean {
  if (before === undefined) changes.created.push(id);
  else if (same(before)) {
    changes.unchanged.push(id);
    return false;
  } else changes.updated.push(id);
  return true;
}

function isSame(before: StoredNetwork | StoredVm, next: Network | Vm, origin: Origin): boolean {
  const spec = 'vm' in before ? before.vm : before.network;
  return before.origin === origin && isDeepStrictEqual(spec, next);
}

function samePassword(current: Current, passwords: ReadonlyMap<string, string>, clear: ReadonlySet<string>, id: string): boolean {
  if (clear.has(id)) return !current.passwords.has(id);
  const next = passwords.get(id);
  return next === undefined || current.passwords.get(id) === next;
}

/** Where VMs leave: each pruned VM's network, and the old network of each VM the batch moves. */
function goneVms(current: Current, written: readonly Vm[], prunedVms: readonly string[]): VmPlace[] {
  const from = (id: string): string | undefined => current.vms.get(id)?.vm.network;
  return [
    ...prunedVms.flatMap((id) => {
      const network = from(id);
      return network === undefined ? [] : [{ id, network }];
    }),
    ...written.flatMap((vm) => {
      const network = from(vm.id);
      return network === undefined || network === vm.network ? [] : [{ id: vm.id, network }];
    }),
  ];
}

/** Networks whose VM set changes: where written VMs are and were (a VM may move), and where pruned ones were. */
function touchedNetworks(current: Current, written: readonly Vm[], prunedVms: readonly string[]): Set<string> {
  const touched = new Set<string>();
  for (const vm of written) {
    touched.add(vm.network);
    const before = current.vms.get(vm.id)?.vm.network;
    if (before !== undefined) touched.add(before);
  }
  for (const id of prunedVms) {
    const network = current.vms.get(id)?.vm.network;
    if (network !== undefined) touched.add(network);
  }
  return touched;
}
