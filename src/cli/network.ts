// `imds network add|list|show|set|rm`: clients of the admin API.
import { Command } from '@commander-js/extra-typings';
import { ImdsError } from '../errors.ts';
import { AdminClient, adminSocketOf } from './client.ts';
import { collect, defined, integer, jsonObject } from './input.ts';
import { printFields, printJson, printTable } from './output.ts';

interface NetworkView {
  id: string;
  cidr: string;
  service_ip: string;
  gateway?: string;
  bridge: string;
  uplink?: string;
  mtu?: number;
  domain?: string;
  dhcp?: boolean;
  dns?: string[];
  ntp?: string[];
  dhcp_lease_time?: number;
  dhcp_server?: { state: string; pid?: number; restarts: number; last_error?: string };
  origin: string;
  vms: number;
  state: string;
  reason?: string;
}

/** The flags `network add` and `network set` share, as commander parses them. */
type NetworkFlags = Partial<
  Record<'cidr' | 'serviceIp' | 'gateway' | 'bridge' | 'uplink' | 'domain' | 'vendorData', string> &
    Record<'mtu' | 'dhcpLeaseTime', number> &
    Record<'dns' | 'ntp', string[]> & { dhcp: boolean }
>;

const CLEARABLE = ['gateway', 'bridge', 'uplink', 'mtu', 'domain', 'dhcp', 'dns', 'ntp', 'dhcp-lease-time', 'vendor-data'];

export function clientOf(cmd: { optsWithGlobals(): Record<string, unknown> }): AdminClient {
  return new AdminClient(adminSocketOf(cmd.optsWithGlobals()['adminSocket'] as string | undefined));
}

export function printNetworks(rows: NetworkView[]): void {
  printTable(rows, {
    ID: (n) => n.id,
    CIDR: (n) => n.cidr,
    SERVICE_IP: (n) => n.service_ip,
    GATEWAY: (n) => n.gateway,
    BRIDGE: (n) => n.bridge,
    MTU: (n) => n.mtu,
    VMS: (n) => n.vms,
    STATE: (n) => (n.reason === undefined ? n.state : `${n.state}: ${n.reason}`),
  });
}

/** The API body for the flags given (only those), with the id when creating. */
function networkBody(opts: NetworkFlags, id?: string): Record<string, unknown> {
  return defined({
    id,
    cidr: opts.cidr,
    service_ip: opts.serviceIp,
    gateway: opts.gateway,
    bridge: opts.bridge,
    uplink: opts.uplink,
    mtu: opts.mtu,
    domain: opts.domain,
    dhcp: opts.dhcp,
    dns: opts.dns,
    ntp: opts.ntp,
    dhcp_lease_time: opts.dhcpLeaseTime,
    vendor_data: jsonObject(opts.vendorData, '--vendor-data'),
  });
}

function pathOf(id: string): string {
  return `/v1/networks/${encodeURIComponent(id)}`;
}

export function networkCommand(): Command {
  const network = new Command('network').description("manage networks (through the daemon's admin API)");
  const subcommands = [addNetworkCommand, listNetworksCommand, showNetworkCommand, setNetworkCommand, rmNetworkCommand];
  for (const register of subcommands) register(network);
  return network;
}

function addNetworkCommand(parent: Command): void {
  parent
    .command('add')
    .description('create a network; returns once it serves')
    .argument('<id>', 'network id (1-9 characters of a-z, 0-9, -)')
    .requiredOption('--cidr <cidr>', 'IPv4 subnet, e.g. 198.51.100.0/24')
    .requiredOption('--service-ip <ip>', "the namespace's address in the subnet")
    .option('--gateway <ip>', "the subnet's router")
    .option('--bridge <name>', 'bridge to use (created if absent); default imdsb-<id>')
    .option('--uplink <if>', 'interface to enslave to the bridge')
    .option('--mtu <n>', 'MTU of the veth pair (and the bridge imds owns)', integer('--mtu'))
    .option('--domain <domain>', 'domain appended to bare host names')
    .option('--dhcp', 'VMs get their address by DHCP (network_data.json: ipv4_dhcp)')
    .option('--dns <ip>', 'DNS server for the VMs; repeatable', collect)
    .option('--ntp <ip>', 'NTP server announced by DHCP (option 42); repeatable', collect)
    .option('--dhcp-lease-time <seconds>', 'DHCP lease time (default 86400)', integer('--dhcp-lease-time'))
    .option('--vendor-data <@file|json>', "vendor data defaults (a JSON object) for the network's VMs")
    .option('--json', 'print JSON')
    .action(async (id, opts, cmd) => {
      const created = await clientOf(cmd).call<NetworkView>('POST', '/v1/networks', networkBody(opts, id));
      if (opts.json) printJson(created);
      else process.stdout.write(`network ${created.id} created: ${created.state} (bridge ${created.bridge})\n`);
    });
}

function listNetworksCommand(parent: Command): void {
  parent
    .command('list')
    .description('list networks with their state')
    .option('--json', 'print JSON')
    .action(async (opts, cmd) => {
      const rows = await clientOf(cmd).call<NetworkView[]>('GET', '/v1/networks');
      if (opts.json) printJson(rows);
      else printNetworks(rows);
    });
}

function showNetworkCommand(parent: Command): void {
  parent
    .command('show')
    .description('show one network')
    .argument('<id>')
    .option('--json', 'print JSON')
    .action(async (id, opts, cmd) => {
      const n = await clientOf(cmd).call<NetworkView>('GET', pathOf(id));
      if (opts.json) printJson(n);
      else printFields({ ...n });
    });
}

function setNetworkCommand(parent: Command): void {
  parent
    .command('set')
    .description('change a network (its VMs must still fit); --clear FIELD removes an optional field')
    .argument('<id>')
    .option('--cidr <cidr>')
    .option('--service-ip <ip>')
    .option('--gateway <ip>')
    .option('--bridge <name>')
    .option('--uplink <if>')
    .option('--mtu <n>', 'MTU', integer('--mtu'))
    .option('--domain <domain>')
    .option('--dhcp', 'VMs get their address by DHCP')
    .option('--dns <ip>', 'DNS server; repeatable (replaces the list)', collect)
    .option('--ntp <ip>', 'NTP server; repeatable (replaces the list)', collect)
    .option('--dhcp-lease-time <seconds>', 'DHCP lease time', integer('--dhcp-lease-time'))
    .option('--vendor-data <@file|json>', 'vendor data defaults (JSON object)')
    .option('--clear <field>', `clear an optional field (${CLEARABLE.join(', ')}); repeatable`, collect)
    .option('--json', 'print JSON')
    .action(async (id, opts, cmd) => {
      const body = networkBody(opts);
      for (const field of opts.clear ?? []) {
        if (!CLEARABLE.includes(field))
          throw new ImdsError('VALIDATION_FAILED', `--clear: "${field}" is not one of ${CLEARABLE.join(', ')}`, { field: '--clear' });
        body[field.replace(/-/g, '_')] = null;
      }
      const n = await clientOf(cmd).call<NetworkView>('PATCH', pathOf(id), body);
      if (opts.json) printJson(n);
      else process.stdout.write(`network ${n.id} updated: ${n.state}\n`);
    });
}

function rmNetworkCommand(parent: Command): void {
  parent
    .command('rm')
    .description('delete a network and its kernel objects (refused while it has VMs, unless --force)')
    .argument('<id>')
    .option('--force', 'also delete its VMs')
    .option('--json', 'print JSON')
    .action(async (id, opts, cmd) => {
      const r = await clientOf(cmd).call<{ deleted: string; vms_deleted: number }>(
        'DELETE',
        `${pathOf(id)}${opts.force ? '?force=true' : ''}`,
      );
      if (opts.json) printJson(r);
      else process.stdout.write(`network ${r.deleted} deleted${r.vms_deleted > 0 ? ` with ${r.vms_deleted} VMs` : ''}\n`);
    });
}
