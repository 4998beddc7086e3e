// The peer: the seed's zstack design. One lighttpd per network namespace, on the same port behind
// the same nftables DNAT that imds builds, with one `$HTTP["remoteip"] == "<ip>"` block and a
// url.rewrite-once per VM mapping the OpenStack and EC2 paths onto per-VM directories of files.
// The files hold the same documents imds serves (built with imds's own document builders).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { resolveMetaData, versionListing } from '../../src/documents/ec2.ts';
import { OPENSTACK_LISTING } from '../../src/documents/openstack.ts';
import { networkSchema, vmSchema } from '../../src/model/schema.ts';
import { MetadataIndex } from '../../src/store/metadata-index.ts';
import type { BenchVm } from './topology.ts';

export interface PeerNetwork {
  id: string;
  netns: string;
  dir: string;
  process: ChildProcess | undefined;
}

function write(path: string, body: string | Buffer): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, body);
}

/** Writes one VM's directory of files (the same bytes imds serves; a fixed random seed). */
export function writeVmFiles(docroot: string, net: { id: string; cidr: string; service_ip: string; gateway: string }, vm: BenchVm): void {
  const index = MetadataIndex.build([networkSchema.parse(net)], [vmSchema.parse(vm)], { dhcpDomain: 'novalocal' });
  const e = index.lookup(net.id, vm.ip);
  if (e === undefined) throw new Error('peer: VM not indexed');
  const base = join(docroot, vm.ip);
  write(join(base, 'openstack'), OPENSTACK_LISTING);
  write(join(base, 'meta_data.json'), e.metaData('2018-08-27'));
  write(join(base, 'user_data'), e.userData ?? '');
  write(join(base, 'vendor_data.json'), e.vendorData());
  write(join(base, 'vendor_data2.json'), e.vendorData2());
  write(join(base, 'network_data.json'), e.networkData());
  write(join(base, 'user-data'), e.userData ?? '');
  write(join(base, 'version'), versionListing(true));
  const ec2 = e.ec2();
  const md = (segments: string[]) => resolveMetaData(ec2, '2009-04-04', segments) ?? '';
  write(join(base, 'meta-data', 'index'), md([]));
  for (const leaf of [
    'ami-id',
    'ami-launch-index',
    'ami-manifest-path',
    'hostname',
    'instance-action',
    'instance-id',
    'instance-type',
    'local-hostname',
    'local-ipv4',
    'public-hostname',
    'reservation-id',
    'security-groups',
  ]) {
    write(join(base, 'meta-data', leaf), md([leaf]));
  }
  write(join(base, 'meta-data', 'placement', 'index'), md(['placement']));
  write(join(base, 'meta-data', 'placement', 'availability-zone'), md(['placement', 'availability-zone']));
  write(join(base, 'meta-data', 'block-device-mapping', 'index'), md(['block-device-mapping']));
  write(join(base, 'meta-data', 'block-device-mapping', 'ami'), md(['block-device-mapping', 'ami']));
  write(join(base, 'meta-data', 'block-device-mapping', 'root'), md(['block-device-mapping', 'root']));
  write(join(base, 'meta-data', 'public-keys', 'index'), md(['public-keys']));
  write(join(base, 'meta-data', 'public-keys', '0', 'index'), md(['public-keys', '0']));
  write(join(base, 'meta-data', 'public-keys', '0', 'openssh-key'), md(['public-keys', '0', 'openssh-key']));
}

/** lighttpd configuration: the zstack rewrite chain, one else-if block per VM. */
export function lighttpdConfig(docroot: string, port: number, vmIps: string[]): string {
  const blocks = vmIps.map((ip, i) => {
    const rules = [
      ['^/openstack/?$', `/${ip}/openstack`],
      ['^/.*/meta_data.json$', `/${ip}/meta_data.json`],
      ['^/.*/user_data$', `/${ip}/user_data`],
      ['^/.*/vendor_data.json$', `/${ip}/vendor_data.json`],
      ['^/.*/vendor_data2.json$', `/${ip}/vendor_data2.json`],
      ['^/.*/network_data.json$', `/${ip}/network_data.json`],
      ['^/.*/meta-data/(.+)$', `/${ip}/meta-data/$1`],
      ['^/.*/meta-data/?$', `/${ip}/meta-data/`],
      ['^/.*/user-data$', `/${ip}/user-data`],
    ];
    const body = rules.map(([from, to]) => `    "${from}" => "${to}"`).join(',\n');
    return `${i === 0 ? '' : 'else '}$HTTP["remoteip"] == "${ip}" {\n  url.rewrite-once = (\n${body}\n  )\n}`;
  });
  return [
    `server.document-root = "${docroot}"`,
    `server.port = ${port}`,
    'server.bind = "0.0.0.0"',
    'server.modules = ("mod_rewrite")',
    'server.max-fds = 16384',
    'server.max-connections = 8192',
    'server.listen-backlog = 4096',
    'index-file.names = ("index")',
    'mimetype.assign = (".json" => "application/json", "" => "text/plain; charset=UTF-8")',
    `server.errorlog = "${docroot}/../error.log"`,
    ...blocks,
    '',
  ].join('\n');
}

export function writePeer(
  dir: string,
  net: { id: string; cidr: string; service_ip: string; gateway: string },
  vms: BenchVm[],
  port: number,
): string {
  rmSync(dir, { recursive: true, force: true });
  const docroot = join(dir, 'docroot');
  for (const vm of vms) writeVmFiles(docroot, net, vm);
  const conf = join(dir, 'lighttpd.conf');
  writeFileSync(
    conf,
    lighttpdConfig(
      docroot,
      port,
      vms.map((v) => v.ip),
    ),
  );
  return conf;
}

/** Starts lighttpd in the foreground inside the namespace (network only). */
export function startLighttpd(netns: string, conf: string): ChildProcess {
  return spawn('nsenter', [`--net=/run/netns/${netns}`, '--', 'lighttpd', '-D', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
}
