// The hypervisor side of the path (pure): the bridge, the VM's port on it (its MAC in the bridge's
// forwarding table), and the shared bridge table that steers registered VMs' metadata frames to
// their namespace (the network's `MAC . address` set in it, and the rule that looks it up).
import { STEER_CHAIN } from '../bridge/bridge-table.ts';
import { GUEST_SET, guestKey, tableMatches } from '../netns/nft.ts';
import type { Vm } from '../model/schema.ts';
import type { NetworkEvidence, TableEvidence, VmEvidence } from './evidence.ts';
import { ago, count, fail, pass, REPAIR_FIX, type Hop } from './hop.ts';

export function bridgeHop(ev: NetworkEvidence): Hop {
  const name = ev.desired.bridge;
  const link = ev.hostLinks.get(name);
  const declared = ev.network.bridge !== undefined;
  if (link === undefined) {
    const why = ev.errors.get('host links');
    return fail(
      'bridge',
      why === undefined ? `bridge ${name} does not exist` : `bridge ${name} could not be read: ${why}`,
      declared ? `create the bridge ${name} (the network names it; imds uses it as it is), then ${REPAIR_FIX}` : REPAIR_FIX,
    );
  }
  if (link.kind !== 'bridge')
    return fail(
      'bridge',
      `${name} is a ${link.kind ?? 'plain device'}, not a bridge`,
      `free the name ${name}, or name another bridge in the network (imds network set ${ev.network.id} --bridge NAME)`,
    );
  if (!link.up) return fail('bridge', `bridge ${name} is down`, `ip link set ${name} up (${REPAIR_FIX})`);
  const up = ev.desired.uplink;
  if (up !== undefined && ev.hostLinks.get(up)?.master !== name) {
    const uplink = ev.hostLinks.get(up);
    const where = uplink === undefined ? 'does not exist' : uplink.master === undefined ? 'is on no bridge' : `is on ${uplink.master}`;
    const fix =
      uplink === undefined
        ? `bring back the device ${up}, or name another uplink (imds network set ${ev.network.id} --uplink IF, or --clear uplink)`
        : `ip link set ${up} master ${name} (${REPAIR_FIX})`;
    return fail('bridge', `the network's uplink ${up} ${where}, not on ${name}: guests reach nothing beyond the host`, fix);
  }
  const ports = [...new Set(ev.fdb.filter((e) => e.master === name).map((e) => e.port))].sort();
  const ageing = ev.bridgeAgeingS === undefined ? '' : `, forwarding entries age out after ${ev.bridgeAgeingS} s`;
  return pass('bridge', `${name} is up${ageing}; ports in its forwarding table: ${ports.length === 0 ? 'none' : ports.join(', ')}`);
}

/**
 * The VM's MAC in the bridge's forwarding table: the port its frames arrive on. Entries age out
 * (`ageing_time`), so a VM silent for longer is not found there; that is a failure only if it was
 * heard from more recently than that, or never.
 */
export function bridgePortHop(ev: NetworkEvidence, vmEv: VmEvidence): Hop {
  const { vm, contact, now } = vmEv;
  const bridge = ev.desired.bridge;
  const entry = ev.fdb.find((e) => e.mac === vm.mac && e.master === bridge);
  if (entry !== undefined)
    return pass('bridge-port', `${vm.mac} is on port ${entry.port} of ${bridge}${entry.state === '' ? '' : ` (${entry.state})`}`);
  const neighbour = ev.neighbours.find((n) => n.ip === vm.ip && n.mac !== undefined && n.mac !== vm.mac);
  const other = neighbour === undefined ? undefined : ev.fdb.find((e) => e.mac === neighbour.mac && e.master === bridge);
  const seenAs = other === undefined ? '' : `; ${vm.ip} was seen from ${other.mac} on port ${other.port}`;
  const ageingS = ev.bridgeAgeingS ?? 300;
  if (contact !== undefined && now - contact.lastSeen > ageingS * 1000) {
    return pass(
      'bridge-port',
      `${vm.mac} is not in ${bridge}'s forwarding table now: the VM has been silent longer than its ageing time ` +
        `(${ageingS} s; last request ${ago(contact.lastSeen, now)})${seenAs}`,
    );
  }
  const heard =
    contact === undefined ? 'no request from the VM has ever been recorded' : `its last request was ${ago(contact.lastSeen, now)}`;
  return fail(
    'bridge-port',
    `${vm.mac} is not in ${bridge}'s forwarding table (${heard})${seenAs}`,
    `attach the VM's tap to ${bridge} (ip link set TAP master ${bridge}) and check that the VM runs with MAC ${vm.mac}; ` +
      `if it uses another MAC, register that one (imds vm set ${vm.id} --mac MAC)`,
  );
}

/** The network's pairs in a table's guest set, against the VMs': what is missing and what is extra. */
export function pairDiff(table: TableEvidence, vms: readonly Vm[], set = GUEST_SET): { missing: string[]; extra: string[] } | undefined {
  const have = table.state.sets.get(set);
  if (have === undefined) return undefined;
  const want = new Set(vms.map(guestKey));
  return { missing: [...want].filter((k) => !have.has(k)).sort(), extra: [...have].filter((k) => !want.has(k)).sort() };
}

const list = (items: string[]): string =>
  items.length <= 5 ? items.join(', ') : `${items.slice(0, 5).join(', ')} and ${items.length - 5} more`;

/** The shared bridge table missing, not as imds built it, or without the network's set; undefined when it is whole. */
function tableProblem(ev: NetworkEvidence): Hop | undefined {
  const name = `bridge ${ev.desired.bridgeTable}`;
  const t = ev.bridgeTable;
  const want = ev.desiredBridgeTable;
  if (t === undefined)
    return fail('interception', `table ${name} does not exist: frames to 169.254.169.254 are not steered to the namespaces`, REPAIR_FIX);
  if (!tableMatches(t.state, want)) {
    const ours = t.state.rulesByHash.get(want.hash) ?? 0;
    return fail(
      'interception',
      `table ${name} is not as imds built it (${t.state.ruleCount} rules, ${ours} of imds's ${want.ruleCount})`,
      REPAIR_FIX,
    );
  }
  const set = ev.desired.bridgeSet;
  if (!t.state.sets.has(set)) return fail('interception', `table ${name} has no set ${set}`, REPAIR_FIX);
  return undefined;
}

/** Frames the network's steering rule sent to the namespace (the rule that looks its set up). */
const steeredOf = (ev: NetworkEvidence): number =>
  ev.bridgeTable?.counters.rules.find((r) => r.chain === STEER_CHAIN && r.set === ev.desired.bridgeSet)?.packets ?? 0;

/** Network level: the bridge table as imds built it, the network's guest set holding exactly the VMs' pairs. */
export function interceptionHop(ev: NetworkEvidence, vms: readonly Vm[]): Hop {
  const problem = tableProblem(ev);
  if (problem !== undefined) return problem;
  const name = `bridge ${ev.desired.bridgeTable}`;
  const set = ev.desired.bridgeSet;
  const diff = pairDiff(ev.bridgeTable as TableEvidence, vms, set) ?? { missing: [], extra: [] };
  if (diff.missing.length > 0 || diff.extra.length > 0) {
    const parts = [
      diff.missing.length > 0 ? `missing ${list(diff.missing)}` : '',
      diff.extra.length > 0 ? `not a VM's: ${list(diff.extra)}` : '',
    ];
    return fail('interception', `set ${set} of table ${name} differs from the VMs: ${parts.filter(Boolean).join('; ')}`, REPAIR_FIX);
  }
  return pass(
    'interception',
    `table ${name} intact; ${vms.length} VM pairs in ${set}; ${count(steeredOf(ev), 'frame')} steered to the namespace`,
  );
}

/** VM level: the table intact and the VM's own pair in its network's set. */
export function vmInterceptionHop(ev: NetworkEvidence, vm: Vm): Hop {
  const problem = tableProblem(ev);
  if (problem !== undefined) return problem;
  const name = `bridge ${ev.desired.bridgeTable}`;
  const set = ev.desired.bridgeSet;
  const key = guestKey(vm);
  if (ev.bridgeTable?.state.sets.get(set)?.has(key) !== true) {
    return fail(
      'interception',
      `${key} is not in set ${set} of table ${name}: a VM that sends 169.254.169.254 to its gateway is not steered to the namespace`,
      REPAIR_FIX,
    );
  }
  return pass(
    'interception',
    `${key} is in set ${set} of table ${name}; ${count(steeredOf(ev), 'frame')} steered to the namespace (all its network's VMs)`,
  );
}
