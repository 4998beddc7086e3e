// The model's rules for one write against the registry as this daemon last read it (every host's
// networks and VMs): a network's fields and its uplink, a VM against its network and the addresses
// and MACs of the other VMs there, a host name. Pure; a broken rule is VALIDATION_FAILED naming the field.
import { bridgeNameOf } from '../model/names.ts';
import { hostnameSchema, type Network, type Vm } from '../model/schema.ts';
import { networkProblems, vmProblems, type Problem } from '../model/validate.ts';
import { validationError } from '../store/batch-plan.ts';
import { ImdsError } from '../errors.ts';
import type { RegistryState } from './registry-state.ts';

type Records = Pick<Readonly<RegistryState>, 'networks' | 'vms'>;
type Hosts = Pick<Readonly<RegistryState>, 'hosts' | 'alive'>;

export function checkNetwork(state: Records, network: Network): void {
  const others = [...state.networks.values()].filter((n) => n.id !== network.id);
  // Bridges and uplinks are host objects, but any host may come to serve any two networks (a VM
  // placed or migrated there): a bridge name and an uplink are unique across the registry, as an
  // import checks them too.
  const user = (match: (n: Network) => boolean): string | undefined => {
    const n = others.find(match);
    return n === undefined ? undefined : `network "${n.id}"`;
  };
  const lookups = {
    bridgeUser: (bridge: string) => user((n) => bridgeNameOf(n) === bridge),
    uplinkUser: (uplink: string) => user((n) => n.uplink === uplink),
  };
  const problems = networkProblems(network, lookups, (f) => [f]);
  if (problems.length > 0) throw validationError(problems);
}

export function checkVm(state: Records, vm: Vm, network: Network): void {
  const label = (match: (v: Vm) => boolean, self: string): string | undefined => {
    for (const { vm: other } of state.vms.values()) if (other.id !== self && match(other)) return `VM ${other.id}`;
    return undefined;
  };
  const problems: Problem[] = vmProblems(
    vm,
    {
      network: (id) => (id === network.id ? network : undefined),
      ipUser: (net, ip, self) => label((v) => v.network === net && v.ip === ip, self),
      macUser: (net, mac, self) => label((v) => v.network === net && v.mac === mac, self),
    },
    (f) => [f],
  );
  if (problems.length > 0) throw validationError(problems);
}

export function checkHost(host: string): void {
  if (!hostnameSchema.safeParse(host).success)
    throw new ImdsError('VALIDATION_FAILED', `host: "${host}" is not a host name (a daemon's host_id)`, { field: 'host' });
}

/** The registered hosts, each with whether its daemon is live: `hv1 (live), hv2 (not live)`. */
export function knownHosts(state: Hosts): string {
  const ids = [...state.hosts.keys()].sort();
  return ids.length === 0 ? 'none' : ids.map((id) => `${id} (${state.alive.has(id) ? 'live' : 'not live'})`).join(', ');
}

/**
 * A VM placed on (or moved to) a host that never registered: VALIDATION_FAILED naming the field and
 * the known hosts, unless `allow` (a controller placing VMs before that host's daemon first starts).
 */
export function checkKnownHost(state: Hosts, host: string, self: string, allow: boolean, field = 'host'): void {
  if (allow || host === self || state.hosts.has(host)) return;
  throw new ImdsError(
    'VALIDATION_FAILED',
    `${field}: no host "${host}" is registered (known: ${knownHosts(state)}); a host registers when its daemon first starts ` +
      'with this registry: check the name, or allow it (--allow-unknown-host, allow_unknown_host=true) to place the VM ' +
      'before that daemon starts',
    { field, details: { host, known: [...state.hosts.keys()].sort() } },
  );
}
