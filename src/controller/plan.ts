// diff(desired, observed) -> steps. Pure: no I/O, so every case is unit-tested, and a plan can be
// printed as a dry run. Applying a plan and planning again yields no steps.
import { ownerAlias, parseOwnerAlias, type LinkRole } from '../model/names.ts';
import type { LinkState } from '../netns/iproute.ts';
import { tableMatches } from '../netns/nft.ts';
import type { DesiredNetwork, DesiredState } from './desired.ts';
import type { ObservedNamespace, ObservedState } from './observe.ts';

export type Step =
  | { kind: 'netns-add'; network: string; netns: string; why: string }
  | { kind: 'netns-del'; network: string; netns: string; why: string }
  /** `ip -batch -` in the hypervisor namespace (netns undefined) or `ip -n NETNS -batch -`. */
  | {
      kind: 'ip';
      network: string;
      netns: string | undefined;
      lines: string[];
      why: string;
      /** Its failure does not stop the plan (a link that may vanish on its own meanwhile). */
      bestEffort?: boolean;
    }
  /** `nft -f -` in the network's namespace, or in the hypervisor namespace when netns is undefined. */
  | { kind: 'nft'; network: string; netns: string | undefined; script: string; why: string };

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
}

export function isEmpty(plan: Plan): boolean {
  return plan.removals.length === 0 && plan.networks.every((n) => n.steps.length === 0 && n.conflict === undefined);
}

export function plan(desired: DesiredState, observed: ObservedState): Plan {
  const networks = [...desired.networks.values()].map((d) => planNetwork(d, observed));
  return { removals: planRemovals(desired, observed), networks };
}

function isOwnedBy(link: LinkState, network: string, role: LinkRole): boolean {
  const owner = parseOwnerAlias(link.alias);
  return owner !== undefined && owner.networkId === network && owner.role === role;
}

export function planNetwork(d: DesiredNetwork, observed: ObservedState): NetworkPlan {
  const network = d.id;
  const host = observed.hostLinks;
  const nsExists = observed.namespaces.has(d.netns);
  const inside: ObservedNamespace = (nsExists ? observed.inside.get(d.netns) : undefined) ?? { links: new Map(), table: undefined };
  const conflict = (message: string): NetworkPlan => ({ network, steps: [], fresh: false, rollback: [], conflict: message });

  const bridge = host.get(d.bridge);
  const outer = host.get(d.outer);
  const inner = inside.links.get(d.inner);
  const fresh = !nsExists && outer === undefined && (bridge === undefined || !isOwnedBy(bridge, network, 'bridge'));

  if (bridge !== undefined && bridge.kind !== 'bridge') {
    return conflict(`"${d.bridge}" exists but is ${bridge.kind ? `a ${bridge.kind} device` : 'not a bridge'}`);
  }
  if (outer !== undefined && (outer.kind !== 'veth' || parseOwnerAlias(outer.alias)?.networkId !== network)) {
    return conflict(`"${d.outer}" exists but is not the veth imds created for network ${network}`);
  }
  let uplink: LinkState | undefined;
  if (d.uplink !== undefined) {
    uplink = host.get(d.uplink);
    if (uplink === undefined) return conflict(`uplink "${d.uplink}" does not exist`);
  }

  const steps: Step[] = [];
  const hostLines: string[] = [];
  const insideLines: string[] = [];
  const why: string[] = [];

  if (!nsExists) {
    steps.push({ kind: 'netns-add', network, netns: d.netns, why: 'namespace missing' });
  }

  // Bridge: create and own it, adopt the one we own, or use the operator's as it is.
  if (bridge === undefined) {
    hostLines.push(`link add ${d.bridge} type bridge`, `link set ${d.bridge} alias ${ownerAlias(network, 'bridge')}`);
    if (d.mtu !== undefined) hostLines.push(`link set ${d.bridge} mtu ${d.mtu}`);
    hostLines.push(`link set ${d.bridge} up`);
    why.push('bridge missing');
  } else if (parseOwnerAlias(bridge.alias)?.role === 'bridge') {
    if (!isOwnedBy(bridge, network, 'bridge')) {
      hostLines.push(`link set ${d.bridge} alias ${ownerAlias(network, 'bridge')}`);
      why.push('bridge owner mark');
    }
    if (d.mtu !== undefined && bridge.mtu !== d.mtu) {
      hostLines.push(`link set ${d.bridge} mtu ${d.mtu}`);
      why.push('bridge mtu');
    }
    if (!bridge.up) {
      hostLines.push(`link set ${d.bridge} up`);
      why.push('bridge down');
    }
  }

  if (uplink !== undefined && d.uplink !== undefined) {
    if (uplink.master !== d.bridge) {
      hostLines.push(`link set ${d.uplink} master ${d.bridge}`);
      why.push('uplink not on the bridge');
    }
    if (!uplink.up) {
      hostLines.push(`link set ${d.uplink} up`);
      why.push('uplink down');
    }
  }

  // veth pair: both ends must exist, the outer one on the bridge, the inner one in the namespace.
  const halfPair = (outer === undefined) !== (inner === undefined);
  const createVeth = outer === undefined || inner === undefined;
  if (halfPair && inner !== undefined) {
    steps.push({ kind: 'ip', network, netns: d.netns, lines: [`link del ${d.inner}`], why: 'half veth pair (inner end alone)' });
  }
  // The outer end alone: its peer's namespace is gone (the kernel removes the pair once nothing
  // holds that namespace, which may happen while this plan runs), so its removal may find nothing.
  const outerAlone = halfPair && outer !== undefined;
  if (createVeth) {
    hostLines.push(
      `link add ${d.outer}${d.mtu === undefined ? '' : ` mtu ${d.mtu}`} type veth peer name ${d.inner} address ${d.innerMac}${d.mtu === undefined ? '' : ` mtu ${d.mtu}`} netns ${d.netns}`,
      `link set ${d.outer} alias ${ownerAlias(network, 'veth')}`,
      `link set ${d.outer} master ${d.bridge}`,
      `link set ${d.outer} up`,
    );
    why.push('veth missing');
  } else if (outer !== undefined) {
    if (outer.master !== d.bridge) {
      hostLines.push(`link set ${d.outer} master ${d.bridge}`);
      why.push('veth not on the bridge');
    }
    if (d.mtu !== undefined && outer.mtu !== d.mtu) {
      hostLines.push(`link set ${d.outer} mtu ${d.mtu}`);
      why.push('veth mtu');
    }
    if (!outer.up) {
      hostLines.push(`link set ${d.outer} up`);
      why.push('veth down');
    }
  }

  // Inside the namespace: loopback up, the inner end up with exactly the desired addresses.
  const lo = inside.links.get('lo');
  if (lo === undefined || !lo.up) insideLines.push('link set lo up');
  const innerNow = createVeth ? undefined : inner;
  if (innerNow !== undefined && d.mtu !== undefined && innerNow.mtu !== d.mtu) insideLines.push(`link set ${d.inner} mtu ${d.mtu}`);
  if (innerNow !== undefined && innerNow.mac?.toLowerCase() !== d.innerMac) insideLines.push(`link set ${d.inner} address ${d.innerMac}`);
  if (innerNow === undefined || !innerNow.up) insideLines.push(`link set ${d.inner} up`);
  const have = new Set(innerNow?.addresses ?? []);
  for (const addr of d.addresses) if (!have.has(addr)) insideLines.push(`addr add ${addr} dev ${d.inner}`);
  for (const addr of have) if (!d.addresses.includes(addr)) insideLines.push(`addr del ${addr} dev ${d.inner}`);

  if (outerAlone)
    steps.push({
      kind: 'ip',
      network,
      netns: undefined,
      lines: [`link del ${d.outer}`],
      why: 'half veth pair (outer end alone)',
      bestEffort: true,
    });
  if (hostLines.length > 0) steps.push({ kind: 'ip', network, netns: undefined, lines: hostLines, why: why.join(', ') });
  if (insideLines.length > 0) steps.push({ kind: 'ip', network, netns: d.netns, lines: insideLines, why: 'namespace links and addresses' });
  if (!tableMatches(inside.table, d.nft)) {
    steps.push({
      kind: 'nft',
      network,
      netns: d.netns,
      script: d.nft.script,
      why: inside.table === undefined ? 'nft table missing' : 'nft table differs',
    });
  }
  const bridgeTable = observed.bridgeTables.get(d.bridgeTable.name);
  if (!tableMatches(bridgeTable, d.bridgeTable)) {
    steps.push({
      kind: 'nft',
      network,
      netns: undefined,
      script: d.bridgeTable.script,
      why: bridgeTable === undefined ? 'bridge table missing' : 'bridge table differs',
    });
  }
  const rollback: Step[] = [];
  if (fresh) {
    const undo = [`link del ${d.outer}`, ...(bridge === undefined ? [`link del ${d.bridge}`] : [])];
    rollback.push(
      ...undo.map((line): Step => ({ kind: 'ip', network, netns: undefined, lines: [line], why: 'roll back a failed new network' })),
    );
    if (bridgeTable === undefined) {
      rollback.push({
        kind: 'nft',
        network,
        netns: undefined,
        script: deleteTableScript(d.bridgeTable.name),
        why: 'roll back a failed new network',
      });
    }
    rollback.push({ kind: 'netns-del', network, netns: d.netns, why: 'roll back a failed new network' });
  }
  return { network, steps, fresh, rollback, conflict: undefined };
}

function deleteTableScript(name: string): string {
  return `delete table bridge ${name}\n`;
}

/**
 * Everything owned that no declared network accounts for: namespaces and bridge tables with our
 * prefix, and links carrying our owner mark (veths before bridges). Links, tables and namespaces
 * without the mark or the prefix are never touched.
 */
export function planRemovals(desired: DesiredState, observed: ObservedState): NetworkPlan[] {
  const keep = new Set<string>();
  for (const d of desired.networks.values()) keep.add(d.bridge).add(d.outer);
  const byNetwork = new Map<string, { veths: string[]; bridges: string[]; netns: string | undefined; table: string | undefined }>();
  const entry = (network: string) => {
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
  const desiredNamespaces = new Set([...desired.networks.values()].map((d) => d.netns));
  for (const ns of observed.namespaces) {
    if (!desiredNamespaces.has(ns)) entry(ns.slice(desired.namespacePrefix.length)).netns = ns;
  }
  const desiredTables = new Set([...desired.networks.values()].map((d) => d.bridgeTable.name));
  for (const name of observed.bridgeTables.keys()) {
    if (name.startsWith(desired.namespacePrefix) && !desiredTables.has(name))
      entry(name.slice(desired.namespacePrefix.length)).table = name;
  }
  const removals: NetworkPlan[] = [];
  for (const [network, e] of [...byNetwork.entries()].sort(([a], [b]) => a.localeCompare(b))) {
    const steps: Step[] = [];
    const lines = [...e.veths.sort(), ...e.bridges.sort()].map((name) => `link del ${name}`);
    if (e.table !== undefined)
      steps.push({ kind: 'nft', network, netns: undefined, script: deleteTableScript(e.table), why: 'bridge table no network declares' });
    if (lines.length > 0) steps.push({ kind: 'ip', network, netns: undefined, lines, why: 'owned links no network declares' });
    if (e.netns !== undefined) steps.push({ kind: 'netns-del', network, netns: e.netns, why: 'namespace no network declares' });
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
  for (const n of p.networks) emit(n, 'ensure');
  return out.join('\n');
}
