// The EC2-compatible tree (metadata-api.md §8): versions, the meta-data dictionary as Nova's
// get_ec2_metadata builds it, gated by version, and its listings as ec2_md_print prints them.
import { derivedIds, type InstanceFacts } from './instance.ts';

export const EC2_VERSIONS = [
  '1.0',
  '2007-01-19',
  '2007-03-01',
  '2007-08-29',
  '2007-10-10',
  '2007-12-15',
  '2008-02-01',
  '2008-09-01',
  '2009-04-04',
] as const;
export type Ec2Version = (typeof EC2_VERSIONS)[number];
export const EC2_LATEST: Ec2Version = '2009-04-04';

const KNOWN = new Set<string>(EC2_VERSIONS);

export function resolveEc2Version(name: string): Ec2Version | undefined {
  if (name === 'latest') return EC2_LATEST;
  return KNOWN.has(name) ? (name as Ec2Version) : undefined;
}

/** The version each top-level meta-data key appeared in. */
const KEY_SINCE: Record<string, Ec2Version> = {
  'ami-id': '1.0',
  'ami-launch-index': '1.0',
  'ami-manifest-path': '1.0',
  'instance-id': '1.0',
  hostname: '1.0',
  'local-ipv4': '1.0',
  'reservation-id': '1.0',
  'security-groups': '1.0',
  'public-keys': '1.0',
  'local-hostname': '2007-01-19',
  'public-hostname': '2007-01-19',
  'public-ipv4': '2007-01-19',
  'instance-type': '2007-08-29',
  'block-device-mapping': '2007-12-15',
  placement: '2008-02-01',
  'instance-action': '2008-09-01',
};

/** A node of the tree: a leaf string, a list (printed one per line) or a directory. */
export type Ec2Node = string | readonly string[] | Ec2Dir;
export interface Ec2Dir {
  readonly [key: string]: Ec2Node;
}

/** The full (newest) meta-data dictionary of a VM; older versions see a subset of its keys. */
export function ec2MetaData(facts: InstanceFacts): Ec2Dir {
  const vm = facts.vm;
  const ids = derivedIds(facts);
  const root = vm.root_device_name ?? '/dev/vda';
  const md: Record<string, Ec2Node> = {
    'ami-id': ids.ami,
    'ami-launch-index': String(facts.launchIndex),
    'ami-manifest-path': 'FIXME',
    'block-device-mapping': { ami: root.replace(/^\/dev\//, ''), root },
    hostname: facts.hostname,
    'instance-action': 'none',
    'instance-id': ids.ec2Instance,
    'instance-type': vm.instance_type ?? 'm1.small',
    'local-hostname': facts.hostname,
    'local-ipv4': vm.ip,
    placement: { 'availability-zone': facts.availabilityZone },
    'public-hostname': facts.hostname,
    'reservation-id': ids.reservation,
    'security-groups': vm.security_groups ?? ['default'],
  };
  // Nova lists it always: the first floating IP, or 200 with an empty body (metadata-api.md §8.1).
  md['public-ipv4'] = vm.public_ipv4 ?? '';
  const first = facts.publicKeys[0];
  // Nova serves one key (the instance's key pair); `_name` is what the public-keys listing prints.
  if (first !== undefined) md['public-keys'] = { '0': { 'openssh-key': first[1], _name: `0=${first[0]}` } };
  return md;
}

function visibleAt(key: string, version: Ec2Version): boolean {
  const since = KEY_SINCE[key];
  return since !== undefined && (since === '1.0' || version >= since);
}

/** Listing of a directory: sorted keys, directories as `key/` (or their `_name`), `_name` hidden. */
export function listing(dir: Ec2Dir, filter?: (key: string) => boolean): string {
  const lines: string[] = [];
  for (const key of Object.keys(dir).sort()) {
    if (key === '_name' || (filter !== undefined && !filter(key))) continue;
    const value = dir[key] as Ec2Node;
    if (typeof value === 'object' && !Array.isArray(value)) {
      const name = (value as Ec2Dir)['_name'];
      lines.push(typeof name === 'string' ? name : `${key}/`);
    } else {
      lines.push(key);
    }
  }
  return lines.join('\n');
}

/**
 * The body for `meta-data/<segments>` at `version`, or undefined (404): a listing for a directory,
 * the value for a leaf, one item per line for a list. Paths below a leaf, hidden `_name` entries and
 * keys newer than the version are not found.
 */
export function resolveMetaData(md: Ec2Dir, version: Ec2Version, segments: readonly string[]): string | undefined {
  if (segments.length === 0) return listing(md, (k) => visibleAt(k, version));
  const [top, ...rest] = segments as [string, ...string[]];
  if (!visibleAt(top, version)) return undefined;
  let node: Ec2Node | undefined = md[top];
  for (const segment of rest) {
    if (node === undefined || typeof node === 'string' || Array.isArray(node) || segment === '_name') return undefined;
    node = (node as Ec2Dir)[segment];
  }
  if (node === undefined) return undefined;
  if (typeof node === 'string') return node;
  if (Array.isArray(node)) return node.join('\n');
  return listing(node as Ec2Dir);
}

/** `/<version>` listing: meta-data/ and, only when there is user data, user-data. */
export function versionListing(hasUserData: boolean): string {
  return hasUserData ? 'meta-data/\nuser-data' : 'meta-data/';
}

/** The meta-data dictionary at a version, as JSON for the config drive (ec2/<v>/meta-data.json). */
export function metaDataAt(md: Ec2Dir, version: Ec2Version): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(md)) if (visibleAt(key, version)) out[key] = md[key];
  return out;
}
