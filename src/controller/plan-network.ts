// One network's diff: its namespace, the host batch (bridge, uplink, veth pair), the links and
// addresses inside, its namespace table; a conflict when a foreign object is in the way; the steps
// that undo a failed new network. Pure, like the rest of the planner (plan.ts).
import { ownerAlias, parseOwnerAlias, type LinkRole } from '../model/names.ts';
import type { LinkState } from '../netns/iproute.ts';
import { tableMatches } from '../netns/nft.ts';
import type { DesiredNetwork } from './desired.ts';
import type { ObservedNamespace, ObservedState } from './observe.ts';
import { hostIp, type NetworkPlan, type Step } from './steps.ts';

function isOwnedBy(link: LinkState, network: string, role: LinkRole): boolean {
  const owner = parseOwnerAlias(link.alias);
  return owner !== undefined && owner.networkId === network && owner.role === role;
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
