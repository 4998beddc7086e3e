// The namespace side of the path (pure): the namespace itself, the veth pair between it and the
// bridge, the addresses on its end, and what its neighbour table says of the VM (the MAC the
// kernel really saw with the VM's address).
import type { NetworkEvidence, VmEvidence } from './evidence.ts';
import { fail, pass, REPAIR_FIX, type Hop } from './hop.ts';

export function namespaceHop(ev: NetworkEvidence): Hop {
  const netns = ev.desired.netns;
  if (ev.namespaceInode === undefined) return fail('namespace', `namespace ${netns} does not exist (/run/netns/${netns})`, REPAIR_FIX);
  const why = ev.errors.get('namespace links');
  if (ev.nsLinks === undefined)
    return fail('namespace', `namespace ${netns} exists but its links could not be read${why === undefined ? '' : `: ${why}`}`, REPAIR_FIX);
  return pass('namespace', `${netns} exists (inode ${ev.namespaceInode})`);
}

export function vethHop(ev: NetworkEvidence): Hop {
  const { outer, inner, bridge, innerMac } = ev.desired;
  const o = ev.hostLinks.get(outer);
  if (o === undefined) return fail('veth', `${outer} (the veth end on the bridge) does not exist`, REPAIR_FIX);
  if (o.kind !== 'veth') return fail('veth', `${outer} is a ${o.kind ?? 'plain device'}, not a veth`, REPAIR_FIX);
  if (o.master !== bridge)
    return fail(
      'veth',
      `${outer} is ${o.master === undefined ? 'on no bridge' : `on ${o.master}`}, not on ${bridge}`,
      `ip link set ${outer} master ${bridge} (${REPAIR_FIX})`,
    );
  if (!o.up) return fail('veth', `${outer} is down`, `ip link set ${outer} up (${REPAIR_FIX})`);
  if (ev.nsLinks === undefined) return fail('veth', `${inner} in ${ev.desired.netns} could not be read`, REPAIR_FIX);
  const i = ev.nsLinks.get(inner);
  if (i === undefined) return fail('veth', `${inner} does not exist in ${ev.desired.netns}`, REPAIR_FIX);
  if (!i.up) return fail('veth', `${inner} in ${ev.desired.netns} is down`, REPAIR_FIX);
  if (i.mac !== undefined && i.mac.toLowerCase() !== innerMac) {
    return fail('veth', `${inner} has MAC ${i.mac}, not ${innerMac} (the MAC the bridge table steers frames to)`, REPAIR_FIX);
  }
  return pass('veth', `${outer} up on ${bridge}; ${inner} up in ${ev.desired.netns} with MAC ${innerMac}`);
}

export function addressesHop(ev: NetworkEvidence): Hop {
  const { inner, netns, addresses } = ev.desired;
  const have = ev.nsLinks?.get(inner)?.addresses ?? [];
  const missing = addresses.filter((a) => !have.includes(a));
  if (missing.length > 0) {
    return fail(
      'addresses',
      `${inner} in ${netns} lacks ${missing.join(' and ')} (has ${have.length === 0 ? 'none' : have.join(', ')})`,
      REPAIR_FIX,
    );
  }
  return pass('addresses', `${inner} has ${addresses.join(' and ')}`);
}

/**
 * What the kernel saw: the namespace's neighbour entry for the VM's address, and any address its
 * MAC was seen with. A VM registered with the wrong MAC (the most common mistake) shows here with
 * both MACs: the guard drops its traffic as spoofed.
 */
export function neighbourHop(ev: NetworkEvidence, vmEv: VmEvidence): Hop {
  const { vm } = vmEv;
  const netns = ev.desired.netns;
  const spoofed = ev.nsTable?.counters.named.get('spoofed');
  const n = ev.neighbours.find((e) => e.ip === vm.ip);
  if (n?.mac !== undefined && n.mac !== vm.mac) {
    return fail(
      'neighbour',
      `the kernel saw ${vm.ip} from ${n.mac} (neighbour table of ${netns}, ${n.state.join(' ') || 'no state'}), ` +
        `but the VM is registered with ${vm.mac}: ` +
        `the guard drops its requests as spoofed (${spoofed ?? '?'} packets counted on the network)`,
      `if ${n.mac} is the VM's real MAC, register it: imds vm set ${vm.id} --mac ${n.mac}; ` +
        `otherwise another machine uses the VM's address ${vm.ip}`,
    );
  }
  const elsewhere = ev.neighbours.find((e) => e.mac === vm.mac && e.ip !== vm.ip);
  if (elsewhere !== undefined) {
    return fail(
      'neighbour',
      `the kernel saw the VM's MAC ${vm.mac} with address ${elsewhere.ip} (neighbour table of ${netns}), ` +
        `but the VM is registered with ${vm.ip}: its requests are not the VM's`,
      `if ${elsewhere.ip} is the VM's real address, register it: imds vm set ${vm.id} --ip ${elsewhere.ip}; ` +
        "otherwise fix the guest's address",
    );
  }
  if (n === undefined)
    return pass(
      'neighbour',
      `no entry for ${vm.ip} in ${netns}'s neighbour table (none is made until the VM and the namespace exchange packets; entries expire)`,
    );
  if (n.mac === undefined) {
    return fail(
      'neighbour',
      `${netns} asked for ${vm.ip} and got no answer (neighbour state ${n.state.join(' ')})`,
      `check that the VM runs with address ${vm.ip} on the network's bridge ${ev.desired.bridge}`,
    );
  }
  return pass('neighbour', `${vm.ip} is at ${n.mac} (${n.state.join(' ') || 'no state'}), the VM's registered MAC`);
}
