// diff(desired, observed) -> steps. Pure: no I/O, so every case is unit-tested, and a plan can be
// printed as a dry run. Applying a plan and planning again yields no steps. Every step carries a
// typed `target` (what it builds or repairs: the drift watch counts repairs by it, and puts a
// bridge's ports back when a step `createsBridge`); `why` is the text for people.
import { bridgeTableName, legacyBridgeTableName, parseOwnerAlias } from '../model/names.ts';
import { tableMatches } from '../netns/nft.ts';
import type { DesiredState } from './desired.ts';
import type { ObservedState } from './observe.ts';
import { planNetwork } from './plan-network.ts';
import { hostIp, type NetworkPlan, type Plan, type Step } from './steps.ts';

export type { NetworkPlan, Plan, Step, StepTarget } from './steps.ts';
export { planNetwork } from './plan-network.ts';

export function isEmpty(plan: Plan): boolean {
  return (
    plan.removals.length === 0 && plan.host.length === 0 && plan.networks.every((n) => n.steps.length === 0 && n.conflict === undefined)
  );
}

export function plan(desired: DesiredState, observed: ObservedState): Plan {
  const networks = [...desired.networks.values()].map((d) => planNetwork(d, observed));
  return { removals: planRemovals(desired, observed), networks, host: planBridgeTable(desired, observed) };
}

/** The legacy per-network bridge tables of declared networks that are still there (an upgrade). */
function legacyTables(desired: DesiredState, observed: ObservedState): string[] {
  return [...desired.networks.keys()]
    .map((id) => legacyBridgeTableName(desired.namespacePrefix, id))
    .filter((name) => observed.bridgeTables.has(name))
    .sort();
}

/**
 * The shared bridge table, replaced whole when it does not match (the reconciler loads every
 * network's guest set with it, in the same transaction). The per-network tables an older imds
 * built for declared networks go in that same transaction: interception has no gap on an upgrade.
 * With no network declared, it is removed.
 */
export function planBridgeTable(desired: DesiredState, observed: ObservedState): Step[] {
  const table = desired.bridgeTable;
  if (table === undefined) {
    const name = bridgeTableName(desired.namespacePrefix);
    if (!observed.bridgeTables.has(name)) return [];
    const why = 'bridge table and no network declared';
    return [{ kind: 'nft', target: 'bridge_table', network: name, netns: undefined, script: deleteTableScript(name), why }];
  }
  const seen = observed.bridgeTables.get(table.name);
  const matches = tableMatches(seen, table);
  const legacy = legacyTables(desired, observed);
  if (matches && legacy.length === 0) return [];
  const why = [
    ...(matches ? [] : [seen === undefined ? 'bridge table missing' : 'bridge table differs']),
    ...(legacy.length === 0 ? [] : [`per-network bridge tables of an older imds (${legacy.join(', ')})`]),
  ].join(', ');
  const script = table.script + legacy.map(deleteTableScript).join('');
  return [{ kind: 'nft', target: 'bridge_table', network: table.name, netns: undefined, script, why }];
}

function deleteTableScript(name: string): string {
  return `delete table bridge ${name}\n`;
}

interface Orphans {
  veths: string[];
  bridges: string[];
  netns: string | undefined;
  table: string | undefined;
}

/** Owned objects no declared network accounts for, by the network named in their mark or name. */
function orphansOf(desired: DesiredState, observed: ObservedState): Map<string, Orphans> {
  const keep = new Set<string>();
  for (const d of desired.networks.values()) keep.add(d.bridge).add(d.outer);
  const byNetwork = new Map<string, Orphans>();
  const entry = (network: string): Orphans => {
    let e = byNetwork.get(network);
    if (e === undefined) byNetwork.set(network, (e = { veths: [], bridges: [], netns: undefined, table: undefined }));
    return e;
  };
  for (const link of observed.hostLinks.values()) {
    const owner = parseOwnerAlias(link.alias);
    if (owner === undefined || keep.has(link.name)) continue;
    if (owner.role === 'veth') entry(owner.networkId).veths.push(link.name);
    else entry(owner.networkId).bridges.push(link.name);
  }
  const prefix = desired.namespacePrefix;
  const desiredNamespaces = new Set([...desired.networks.values()].map((d) => d.netns));
  for (const ns of observed.namespaces) {
    if (!desiredNamespaces.has(ns)) entry(ns.slice(prefix.length)).netns = ns;
  }
  // The shared table is planBridgeTable's (built, or removed when no network is declared); a
  // legacy table of a declared network goes with the shared table's load.
  const legacy = new Set(legacyTables(desired, observed));
  for (const name of observed.bridgeTables.keys()) {
    if (name.startsWith(prefix) && name !== bridgeTableName(prefix) && !legacy.has(name)) {
      entry(name.slice(prefix.length)).table = name;
    }
  }
  return byNetwork;
}

/**
 * Everything owned that no declared network accounts for: namespaces and (an older imds's
 * per-network) bridge tables with our prefix, and links carrying our owner mark (veths before
 * bridges). The shared bridge table is planBridgeTable's. Links, tables and namespaces
 * without the mark or the prefix are never touched.
 */
export function planRemovals(desired: DesiredState, observed: ObservedState): NetworkPlan[] {
  const removals: NetworkPlan[] = [];
  for (const [network, e] of [...orphansOf(desired, observed).entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const steps: Step[] = [];
    const lines = [...e.veths.sort(), ...e.bridges.sort()].map((name) => `link del ${name}`);
    if (e.table !== undefined) {
      const script = deleteTableScript(e.table);
      steps.push({ kind: 'nft', target: 'bridge_table', network, netns: undefined, script, why: 'bridge table no network declares' });
    }
    if (lines.length > 0) steps.push(hostIp(network, lines, 'owned links no network declares'));
    if (e.netns !== undefined) {
      steps.push({ kind: 'netns-del', target: 'namespace', network, netns: e.netns, why: 'namespace no network declares' });
    }
    removals.push({ network, steps, fresh: false, rollback: [], conflict: undefined });
  }
  return removals;
}

/** Human-readable dry run. */
export function formatPlan(p: Plan): string {
  const out: string[] = [];
  const emit = (np: NetworkPlan, verb: string) => {
    if (np.conflict !== undefined) out.push(`${verb} ${np.network}: CONFLICT: ${np.conflict}`);
    for (const s of np.steps) {
      const where = s.kind === 'ip' || s.kind === 'nft' ? (s.netns ?? 'host') : s.netns;
      const what =
        s.kind === 'ip'
          ? s.lines.map((l) => `ip ${l}`).join('; ')
          : s.kind === 'nft'
            ? `nft -f (${s.script.startsWith('delete') ? 'delete' : 'replace'} table)`
            : s.kind;
      out.push(`${verb} ${np.network} [${where}] ${what}  # ${s.why}`);
    }
  };
  for (const r of p.removals) emit(r, 'remove');
  emit({ network: 'bridge table', steps: p.host, fresh: false, rollback: [], conflict: undefined }, 'ensure');
  for (const n of p.networks) emit(n, 'ensure');
  return out.join('\n');
}
