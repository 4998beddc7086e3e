// The OpenStack tree: version listing, per-version directory listings (fixed order, metadata-api.md
// §3.3), and which files each version has.
import { atLeast, OPENSTACK_VERSIONS, type OpenStackVersion } from './versions.ts';

export type OpenStackFile = 'meta_data.json' | 'user_data' | 'password' | 'vendor_data.json' | 'network_data.json' | 'vendor_data2.json';

/** Files in listing order with the version each appeared in. */
const FILES: readonly [OpenStackFile, OpenStackVersion][] = [
  ['meta_data.json', '2012-08-10'],
  ['user_data', '2012-08-10'],
  ['password', '2013-04-04'],
  ['vendor_data.json', '2013-10-17'],
  ['network_data.json', '2015-10-15'],
  ['vendor_data2.json', '2016-10-06'],
];

export function hasFile(version: OpenStackVersion, file: string): file is OpenStackFile {
  return FILES.some(([f, since]) => f === file && atLeast(version, since));
}

export function versionDirectory(version: OpenStackVersion, hasUserData: boolean): string {
  return FILES.filter(([f, since]) => atLeast(version, since) && (f !== 'user_data' || hasUserData))
    .map(([f]) => f)
    .join('\n');
}

/** `GET /openstack`: every dated version and `latest`. */
export const OPENSTACK_LISTING = [...OPENSTACK_VERSIONS, 'latest'].join('\n');
