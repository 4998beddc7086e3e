// Version tables of Nova's metadata API (metadata-api.md §3). Dated versions compare as strings.

export const OPENSTACK_VERSIONS = [
  '2012-08-10', // FOLSOM: meta_data.json, user_data
  '2013-04-04', // GRIZZLY: password, random_seed
  '2013-10-17', // HAVANA: vendor_data.json
  '2015-10-15', // LIBERTY: network_data.json, project_id
  '2016-06-30', // NEWTON_ONE: devices
  '2016-10-06', // NEWTON_TWO: vendor_data2.json
  '2017-02-22', // OCATA: devices[].vlan
  '2018-08-27', // ROCKY: devices[].vf_trusted
  '2020-10-14', // VICTORIA: dedicated_cpus
  '2025-04-04', // EPOXY: devices[] may contain shares
] as const;

export type OpenStackVersion = (typeof OPENSTACK_VERSIONS)[number];

export const OPENSTACK_LATEST: OpenStackVersion = '2025-04-04';

const KNOWN = new Set<string>(OPENSTACK_VERSIONS);

/** `latest` or a dated version -> the dated version it means; undefined for unknown versions. */
export function resolveOpenStackVersion(name: string): OpenStackVersion | undefined {
  if (name === 'latest') return OPENSTACK_LATEST;
  return KNOWN.has(name) ? (name as OpenStackVersion) : undefined;
}

export function atLeast(version: OpenStackVersion, since: OpenStackVersion): boolean {
  return version >= since;
}
