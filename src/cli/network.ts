// `imds network add|list|show|set|rm`: clients of the admin API.
import { Command } from '@commander-js/extra-typings';
import { ImdsError } from '../errors.ts';
import { clientOf } from './client.ts';
import { collect, defined, integer, jsonObject } from './input.ts';
import { emit, fields, table, withOutput } from './output.ts';
import { ifRevisionOption, withIfRevision } from './if-revision.ts';

export { clientOf } from './client.ts';

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

/** The networks table; `-o wide` adds the uplink, DHCP, domain, origin and the DHCP server. */
export function networksTable(rows: readonly NetworkView[], wide: boolean): string {
  return table(
    rows,
    {
      ID: (n) => n.id,
      CIDR: (n) => n.cidr,
      SERVICE_IP: (n) => n.service_ip,
      GATEWAY: (n) => n.gateway,
      BRIDGE: (n) => n.bridge,
      MTU: (n) => n.mtu,
      VMS: (n) => n.vms,
      STATE: (n) => (n.reason === undefined ? n.state : `${n.state}: ${n.reason}`),
    },
    wide,
    {
      UPLINK: (n) => n.uplink,
      DHCP: (n) => (n.dhcp === true ? 'yes' : 'no'),
      DHCP_SERVER: (n) => (n.dhcp_server === undefined ? undefined : `${n.dhcp_server.state} (${n.dhcp_server.restarts} restarts)`),
      DOMAIN: (n) => n.domain,
      ORIGIN: (n) => n.origin,
    },
  );
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
  withOutput(
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
      .option('--vendor-data <@file|json>', "vendor data defaults (a JSON object) for the network's VMs"),
  ).action(async (id, opts, cmd) => {
    const created = await clientOf(cmd, true).call<NetworkView>('POST', '/v1/networks', networkBody(opts, id));
    emit(opts, created, (n) => `network ${n.id} created: ${n.state} (bridge ${n.bridge})`);
  });
}

function listNetworksCommand(parent: Command): void {
  withOutput(parent.command('list').description('list networks with their state')).action(async (opts, cmd) => {
    const rows = await clientOf(cmd).call<NetworkView[]>('GET', '/v1/networks');
    emit(opts, rows, networksTable);
  });
}

function showNetworkCommand(parent: Command): void {
  withOutput(parent.command('show').description('show one network').argument('<id>', 'network id')).action(async (id, opts, cmd) => {
    const n = await clientOf(cmd).call<NetworkView>('GET', pathOf(id));
    emit(opts, n, (v) => fields({ ...v }));
  });
}

function setNetworkCommand(parent: Command): void {
  withOutput(
    parent
      .command('set')
      .description('change a network (its VMs must still fit); --clear FIELD removes an optional field')
      .argument('<id>', 'network id')
      .option('--cidr <cidr>', 'new IPv4 subnet (every VM must still fit), e.g. 198.51.100.0/24')
      .option('--service-ip <ip>', "the namespace's address in the subnet")
      .option('--gateway <ip>', "the subnet's router (--clear gateway removes it)")
      .option('--bridge <name>', 'bridge to use (created if absent; --clear bridge: back to imdsb-<id>)')
      .option('--uplink <if>', 'interface to enslave to the bridge (--clear uplink removes it)')
      .option('--mtu <n>', 'MTU of the veth pair (and the bridge imds owns)', integer('--mtu'))
      .option('--domain <domain>', 'domain appended to bare host names')
      .option('--dhcp', 'VMs get their address by DHCP (--clear dhcp turns it off)')
      .option('--dns <ip>', 'DNS server; repeatable (replaces the list)', collect)
      .option('--ntp <ip>', 'NTP server; repeatable (replaces the list)', collect)
      .option('--dhcp-lease-time <seconds>', 'DHCP lease time', integer('--dhcp-lease-time'))
      .option('--vendor-data <@file|json>', 'vendor data defaults (JSON object)')
      .option('--clear <field>', `clear an optional field (${CLEARABLE.join(', ')}); repeatable`, collect)
      .addOption(ifRevisionOption()),
  ).action(async (id, opts, cmd) => {
    const body = networkBody(opts);
    for (const field of opts.clear ?? []) {
      if (!CLEARABLE.includes(field))
        throw new ImdsError('VALIDATION_FAILED', `--clear: "${field}" is not one of ${CLEARABLE.join(', ')}`, { field: '--clear' });
      body[field.replace(/-/g, '_')] = null;
    }
    const n = await clientOf(cmd, true).call<NetworkView>('PATCH', withIfRevision(pathOf(id), opts.ifRevision), body);
    emit(opts, n, (v) => `network ${v.id} updated: ${v.state}`);
  });
}

function rmNetworkCommand(parent: Command): void {
  withOutput(
    parent
      .command('rm')
      .description('delete a network and its kernel objects (refused while it has VMs, unless --force)')
      .argument('<id>', 'network id')
      .option('--force', 'also delete its VMs')
      .addOption(ifRevisionOption()),
  ).action(async (id, opts, cmd) => {
    const r = await clientOf(cmd, true).call<{ deleted: string; vms_deleted: number }>(
      'DELETE',
      withIfRevision(`${pathOf(id)}${opts.force ? '?force=true' : ''}`, opts.ifRevision),
    );
    emit(opts, r, (d) => `network ${d.deleted} deleted${d.vms_deleted > 0 ? ` with ${d.vms_deleted} VMs` : ''}`);
  });
}
