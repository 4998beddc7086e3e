// `imds host list` (with a registry): the hypervisors registered in etcd, whether each one's daemon is
// live (it holds its leased alive key), its imds version and its VMs; and `--allow-unknown-host`,
// which lets a write place a VM on a host that has not registered yet.
import { Command, Option } from '@commander-js/extra-typings';
import type { RegistryHost } from '../daemon/registry-side.ts';
import { ImdsError } from '../errors.ts';
import { clientOf } from './client.ts';
import { emit, table, withOutput } from './output.ts';

export function allowUnknownHostOption() {
  return new Option(
    '--allow-unknown-host',
    'with a registry: place the VM on a host that has not registered yet (its daemon never started); refused otherwise, to catch a typo',
  );
}

/** The admin API path with `allow_unknown_host=true` added when asked for. */
export function withAllowUnknownHost(path: string, allow: boolean | undefined): string {
  if (allow !== true) return path;
  return `${path}${path.includes('?') ? '&' : '?'}allow_unknown_host=true`;
}

function hostsTable(hosts: readonly RegistryHost[]): string {
  return table(hosts, {
    HOST: (h) => (h.registered ? h.host_id : `${h.host_id} (not registered)`),
    LIVE: (h) => (h.live ? 'yes' : 'no'),
    VMS: (h) => h.vms,
    VERSION: (h) => (h.version === '' ? undefined : h.version),
    STARTED: (h) => (h.started_at === '' ? undefined : h.started_at),
  });
}

export function hostCommand(): Command {
  const host = new Command('host').description('the hypervisors of the registry (with a registry)');
  withOutput(
    host
      .command('list')
      .description('list the hosts registered in the registry: live (its daemon runs and reaches etcd) or not, its VMs, its imds version'),
  ).action(async (opts, cmd) => {
    const s = await clientOf(cmd).call<{ daemon: { registry?: { hosts?: RegistryHost[] } } }>('GET', '/v1/status');
    const hosts = s.daemon.registry?.hosts;
    if (hosts === undefined) throw new ImdsError('VALIDATION_FAILED', 'this daemon has no registry (configuration: registry and host_id)');
    emit(opts, hosts, (h) => hostsTable(h));
  });
  return host;
}
