// diff(desired, observed) -> steps. Pure: no I/O, so every case is unit-tested, and a plan can be
// printed as a dry run. Applying a plan and planning again yields no steps. Every step carries a
// typed `target` (what it builds or repairs: the drift watch counts repairs by it, and puts a
// bridge's ports back when a step `createsBridge`); `why` is the text for people.
import { bridgeTableName, legacyBridgeTableName, ownerAlias, parseOwnerAlias, type LinkRole } from '../model/names.ts';
import type { LinkState } from '../netns/iproute.ts';
import { tableMatches } from '../netns/nft.ts';
import type { DesiredNetwork, DesiredState } from './desired.ts';
import type { ObservedNamespace, ObservedState } from './observe.ts';

/** What a step builds or repairs (the kinds of the repairs metric). */
export type StepTarget = 'namespace' | 'host_links' | 'namespace_links' | 'nft_table' | 'bridge_table';

export type Step =
  | { kind: 'netns-add'; target: 'namespace'; network: string; netns: string; why: string }
  | { kind: 'netns-del'; target: 'namespace'; network: string; netns: string; why: string }
  /** `ip -batch -` in the hypervisor namespace (netns undefined) or `ip -n NETNS -batch -`. */
  | {
      kind: 'ip';
      /** host_links with netns undefined, namespace_links inside. */
      target: 'host_links' | 'namespace_links';
      network: string;
      netns: string | undefined;
      lines: string[];
      why: string;
      /** Its failure does not stop the plan (a link that may vanish on its own meanwhile). */
      bestEffort?: boolean;
      /** It creates the network's bridge (ports that were on a deleted one are to be put back). */
      createsBridge?: boolean;
    }
  /** `nft -f -` in the network's namespace, or in the hypervisor namespace when netns is undefined. */
  | { kind: 'nft'; target: 'nft_table' | 'bridge_table'; network: string; netns: string | undefined; script: string; why: string };

export interface NetworkPlan {
  network: string;
  steps: Step[];
  /** Nothing of this network existed before: on failure, remove what the plan created. */
  fresh: boolean;
  /** Steps that undo a failed fresh network (ignore their own failures). */
  rollback: Step[];
  /** Set when the network cannot be built as declared; it then has no steps. */
  conflict: string | undefined;
}

export interface Plan {
  /** Objects to remove first: networks no longer declared and stale owned links. */
  removals: NetworkPlan[];
  networks: NetworkPlan[];
  /** The bridge table all networks share, (re)built when it does not match (none or one step). */
  host: Step[];
}

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

function isOwnedBy(link: LinkState, network: string, role: LinkRole): boolean {
  const owner = parseOwnerAlias(link.alias);
  return owner !== undefined && owner.networkId === network && owner.role === role;
}

/** `ip -batch -` in the hypervisor namespace. */
function hostIp(network: string, lines: string[], why: string): Extract<Step, { kind: 'ip' }> {
  return { kind: 'ip', target: 'host_links', network, netns: undefined, lines, why };
}

/** What the planner looks at for one network. */
interface Seen {
  d: DesiredNetwork;
  nsExists: boolean;
  inside: ObservedNamespace;
  bridge: LinkState | undefined;
  outer: LinkState | undefined;
  inner: LinkState | undefined;
  uplink: LinkState | undefined;
}

/** Why the network cannot be built as declared (a foreign object in the way), if it cannot. */
function conflictOf(s: Seen, host: ReadonlyMap<string, LinkState>): string | undefined {
  const { d, bridge, outer } = s;
  if (bridge !== undefined && bridge.kind !== 'bridge') {
    return `"${d.bridge}" exists but is ${bridge.kind ? `a ${bridge.kind} device` : 'not a bridge'}`;
  }
  if (outer !== undefined && (outer.kind !== 'veth' || parseOwnerAlias(outer.alias)?.networkId !== d.id)) {
    return `"${d.outer}" exists but is not the veth imds created for network ${d.id}`;
  }
  if (d.uplink !== undefined && !host.has(d.uplink)) return `uplink "${d.uplink}" does not exist`;
  return undefined;
}

/** Lines and reasons of the host batch, in order. */
interface HostBatch {
  lines: string[];
  why: string[];
  createsBridge: boolean;
}

/** Bridge: create and own it, adopt the one we own, or use the operator's as it is. */
function planBridge(s: Seen, out: HostBatch): void {
  const { d, bridge } = s;
  if (bridge === undefined) {
    out.lines.push(`link add ${d.bridge} type bridge`, `link set ${d.bridge} alias ${ownerAlias(d.id, 'bridge')}`);
    if (d.mtu !== undefined) out.lines.push(`link set ${d.bridge} mtu ${d.mtu}`);
    out.lines.push(`link set ${d.bridge} up`);
    out.why.push('bridge missing');
    out.createsBridge = true;
  } else if (parseOwnerAlias(bridge.alias)?.role === 'bridge') {
    if (!isOwnedBy(bridge, d.id, 'bridge')) {
      out.lines.push(`link set ${d.bridge} alias ${ownerAlias(d.id, 'bridge')}`);
      out.why.push('bridge owner mark');
    }
    if (d.mtu !== undefined && bridge.mtu !== d.mtu) {
      out.lines.push(`link set ${d.bridge} mtu ${d.mtu}`);
      out.why.push('bridge mtu');
    }
    if (!bridge.up) {
      out.lines.push(`link set ${d.bridge} up`);
      out.why.push('bridge down');
    }
  }
}

function planUplink(s: Seen, out: HostBatch): void {
  const { d, uplink } = s;
  if (uplink === undefined || d.uplink === undefined) return;
  if (uplink.master !== d.bridge) {
    out.lines.push(`link set ${d.uplink} master ${d.bridge}`);
    out.why.push('uplink not on the bridge');
  }
  if (!uplink.up) {
    out.lines.push(`link set ${d.uplink} up`);
    out.why.push('uplink down');
  }
}

/** veth pair: both ends must exist, the outer one on the bridge, the inner one in the namespace. */
function planVeth(s: Seen, out: HostBatch): void {
  const { d, outer } = s;
  const mtu = d.mtu === undefined ? '' : ` mtu ${d.mtu}`;
  if (outer === undefined || s.inner === undefined) {
    out.lines.push(
      `link add ${d.outer}${mtu} type veth peer name ${d.inner} address ${d.innerMac}${mtu} netns ${d.netns}`,
      `link set ${d.outer} alias ${ownerAlias(d.id, 'veth')}`,
      `link set ${d.outer} master ${d.bridge}`,
      `link set ${d.outer} up`,
    );
    out.why.push('veth missing');
    return;
  }
  if (outer.master !== d.bridge) {
    out.lines.push(`link set ${d.outer} master ${d.bridge}`);
    out.why.push('veth not on the bridge');
  }
  if (d.mtu !== undefined && outer.mtu !== d.mtu) {
    out.lines.push(`link set ${d.outer} mtu ${d.mtu}`);
    out.why.push('veth mtu');
  }
  if (!outer.up) {
    out.lines.push(`link set ${d.outer} up`);
    out.why.push('veth down');
  }
}

/** Inside the namespace: loopback up, the inner end up with exactly the desired addresses. */
function insideLines(s: Seen): string[] {
  const { d } = s;
  const lines: string[] = [];
  const lo = s.inside.links.get('lo');
  if (lo === undefined || !lo.up) lines.push('link set lo up');
  const inner = s.outer === undefined ? undefined : s.inner; // recreated with the pair otherwise
  if (inner !== undefined && d.mtu !== undefined && inner.mtu !== d.mtu) lines.push(`link set ${d.inner} mtu ${d.mtu}`);
  if (inner !== undefined && inner.mac?.toLowerCase() !== d.innerMac) lines.push(`link set ${d.inner} address ${d.innerMac}`);
  if (inner === undefined || !inner.up) lines.push(`link set ${d.inner} up`);
  const have = new Set(inner?.addresses ?? []);
  for (const addr of d.addresses) if (!have.has(addr)) lines.push(`addr add ${addr} dev ${d.inner}`);
  for (const addr of have) if (!d.addresses.includes(addr)) lines.push(`addr del ${addr} dev ${d.inner}`);
  return lines;
}

/** The namespace's table, replaced whole when it does not match (the bridge table is planBridgeTable's). */
function tableSteps(s: Seen): Step[] {
  const { d } = s;
  const table = s.inside.table;
  if (tableMatches(table, d.nft)) return [];
  const why = table === undefined ? 'nft table missing' : 'nft table differs';
  return [{ kind: 'nft', target: 'nft_table', network: d.id, netns: d.netns, script: d.nft.script, why }];
}

/**
 * What undoes a failed new network: its links and its namespace. Its set and rule stay in the
 * shared bridge table while it is declared (empty, or steering to a bridge that is not there).
 */
function rollbackSteps(s: Seen): Step[] {
  const { d } = s;
  const why = 'roll back a failed new network';
  const undo = [`link del ${d.outer}`, ...(s.bridge === undefined ? [`link del ${d.bridge}`] : [])];
  const steps: Step[] = undo.map((line) => hostIp(d.id, [line], why));
  steps.push({ kind: 'netns-del', target: 'namespace', network: d.id, netns: d.netns, why });
  return steps;
}

export function planNetwork(d: DesiredNetwork, observed: ObservedState): NetworkPlan {
  const network = d.id;
  const host = observed.hostLinks;
  const nsExists = observed.namespaces.has(d.netns);
  const inside: ObservedNamespace = (nsExists ? observed.inside.get(d.netns) : undefined) ?? { links: new Map(), table: undefined };
  const s: Seen = {
    d,
    nsExists,
    inside,
    bridge: host.get(d.bridge),
    outer: host.get(d.outer),
    inner: inside.links.get(d.inner),
    uplink: d.uplink === undefined ? undefined : host.get(d.uplink),
  };
  const conflict = conflictOf(s, host);
  if (conflict !== undefined) return { network, steps: [], fresh: false, rollback: [], conflict };
  const fresh = !nsExists && s.outer === undefined && (s.bridge === undefined || !isOwnedBy(s.bridge, network, 'bridge'));

  const steps: Step[] = [];
  if (!nsExists) steps.push({ kind: 'netns-add', target: 'namespace', network, netns: d.netns, why: 'namespace missing' });
  const batch: HostBatch = { lines: [], why: [], createsBridge: false };
  planBridge(s, batch);
  planUplink(s, batch);
  planVeth(s, batch);
  // Half a pair: the inner end alone is removed inside; the outer end alone (its peer's namespace is
  // gone, and the kernel removes the pair once nothing holds that namespace, which may happen while
  // this plan runs) is removed best effort.
  if (s.outer === undefined && s.inner !== undefined) {
    const why = 'half veth pair (inner end alone)';
    steps.push({ kind: 'ip', target: 'namespace_links', network, netns: d.netns, lines: [`link del ${d.inner}`], why });
  }
  if (s.outer !== undefined && s.inner === undefined) {
    steps.push({ ...hostIp(network, [`link del ${d.outer}`], 'half veth pair (outer end alone)'), bestEffort: true });
  }
  if (batch.lines.length > 0) {
    const step = hostIp(network, batch.lines, batch.why.join(', '));
    steps.push(batch.createsBridge ? { ...step, createsBridge: true } : step);
  }
  const lines = insideLines(s);
  if (lines.length > 0) {
    steps.push({ kind: 'ip', target: 'namespace_links', network, netns: d.netns, lines, why: 'namespace links and addresses' });
  }
  steps.push(...tableSteps(s));
  return { network, steps, fresh, rollback: fresh ? rollbackSteps(s) : [], conflict: undefined };
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
