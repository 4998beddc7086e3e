// The namespace's nft table (pure): the DNAT of 169.254.169.254:80 to the listener, the input
// rules that admit the listener only through it, and the guard that drops a registered VM's
// address from a foreign MAC (its `MAC . address` and address sets).
import { GUEST_SET, guestKey, tableMatches, VM_IP_SET } from '../netns/nft.ts';
import type { Vm } from '../model/schema.ts';
import type { NetworkEvidence } from './evidence.ts';
import { pairDiff } from './host-hops.ts';
import { count, fail, pass, REPAIR_FIX, type Hop } from './hop.ts';

export function nftTableHop(ev: NetworkEvidence): Hop {
  const { netns, nft } = ev.desired;
  const t = ev.nsTable;
  if (t === undefined) {
    const why = ev.errors.get('namespace table');
    return fail(
      'nft-table',
      `table ip imds does not exist in ${netns}${why === undefined ? '' : ` (${why})`}: nothing sends 169.254.169.254:80 to the listener`,
      REPAIR_FIX,
    );
  }
  const dnat = t.counters.rules.find((r) => r.chain === 'prerouting' && r.action === 'dnat');
  if (!tableMatches(t.state, nft)) {
    const ours = t.state.rulesByHash.get(nft.hash) ?? 0;
    const what = dnat === undefined ? 'the DNAT of 169.254.169.254:80 is missing' : 'its rules differ';
    return fail(
      'nft-table',
      `table ip imds in ${netns} is not as imds built it (${t.state.ruleCount} rules, ${ours} of imds's ${nft.ruleCount}): ${what}`,
      REPAIR_FIX,
    );
  }
  const direct = t.counters.rules.find((r) => r.chain === 'input' && r.action === 'drop')?.packets ?? 0;
  return pass(
    'nft-table',
    `table ip imds intact: 169.254.169.254:80 -> :${ev.listenPort} (${count(dnat?.packets ?? 0, 'packet')} DNATed), ` +
      `${count(direct, 'packet')} to :${ev.listenPort} directly dropped`,
  );
}

/** Network level: the guard's sets hold exactly the VMs' pairs and addresses. */
export function guardHop(ev: NetworkEvidence, vms: readonly Vm[]): Hop {
  const t = ev.nsTable;
  if (t === undefined || !tableMatches(t.state, ev.desired.nft))
    return fail('guard', `the guard's table is not whole (see nft-table)`, REPAIR_FIX);
  const pairs = pairDiff(t, vms);
  const ips = t.state.sets.get(VM_IP_SET);
  const missingIps = vms.map((v) => v.ip).filter((ip) => ips?.has(ip) !== true);
  if (pairs === undefined || ips === undefined)
    return fail('guard', `table ip imds lacks set ${pairs === undefined ? GUEST_SET : VM_IP_SET}`, REPAIR_FIX);
  if (pairs.missing.length > 0 || pairs.extra.length > 0 || missingIps.length > 0) {
    const what = [
      ...pairs.missing.map((p) => `missing ${p}`),
      ...pairs.extra.map((p) => `not a VM's: ${p}`),
      ...missingIps.map((ip) => `missing address ${ip}`),
    ];
    return fail(
      'guard',
      `the guard's sets differ from the VMs: ${what.slice(0, 5).join('; ')}${what.length > 5 ? ` and ${what.length - 5} more` : ''}`,
      REPAIR_FIX,
    );
  }
  const spoofed = t.counters.named.get('spoofed') ?? 0;
  return pass('guard', `${vms.length} VM pairs in ${GUEST_SET}; ${count(spoofed, 'packet')} dropped as spoofed`);
}

/** VM level: the VM's address and its pair in the guard's sets. */
export function vmGuardHop(ev: NetworkEvidence, vm: Vm): Hop {
  const t = ev.nsTable;
  if (t === undefined || !tableMatches(t.state, ev.desired.nft))
    return fail('guard', `the guard's table is not whole (see nft-table)`, REPAIR_FIX);
  const key = guestKey(vm);
  const spoofed = t.counters.named.get('spoofed') ?? 0;
  const hasIp = t.state.sets.get(VM_IP_SET)?.has(vm.ip) === true;
  if (t.state.sets.get(GUEST_SET)?.has(key) !== true) {
    return fail(
      'guard',
      `${key} is not in set ${GUEST_SET} of table ip imds` +
        (hasIp
          ? `: ${vm.ip} is a registered address, so the guard drops the VM's own requests as spoofed (${spoofed} packets counted)`
          : ''),
      REPAIR_FIX,
    );
  }
  if (!hasIp) return fail('guard', `${vm.ip} is not in set ${VM_IP_SET}: a guest forging the VM's address is not dropped`, REPAIR_FIX);
  return pass('guard', `${key} allowed; ${count(spoofed, 'packet')} dropped as spoofed on the network`);
}
