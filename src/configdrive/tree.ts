// The files of a VM's config drive (metadata-api.md §10), built by the code that answers the HTTP
// tree: every OpenStack file is what `GET /openstack/<version>/<file>` returns to that VM (the one
// resolver, guest-api.ts), so the two channels cannot disagree. The EC2 side is the meta-data
// dictionary as JSON, as Nova's metadata_for_config_drive writes it. No password file.
import { EC2_LATEST, metaDataAt } from '../documents/ec2.ts';
import { pythonJson } from '../documents/python-json.ts';
import { OPENSTACK_VERSIONS } from '../documents/versions.ts';
import { answerGet } from '../server/guest-api.ts';
import type { VmEntry } from '../store/metadata-index.ts';

export interface DriveFile {
  /** Relative, `/`-separated, e.g. `openstack/latest/meta_data.json`. */
  path: string;
  body: Buffer;
}

const OPENSTACK_FILES = ['meta_data.json', 'user_data', 'vendor_data.json', 'network_data.json', 'vendor_data2.json'] as const;

export function configDriveFiles(vm: VmEntry): DriveFile[] {
  const files: DriveFile[] = [];
  const noPassword = (): string => '';
  for (const version of [...OPENSTACK_VERSIONS, 'latest']) {
    for (const file of OPENSTACK_FILES) {
      const a = answerGet(vm, `/openstack/${version}/${file}`, noPassword);
      if (a.status === 200) files.push({ path: `openstack/${version}/${file}`, body: a.body });
    }
  }
  const ec2 = Buffer.from(pythonJson(metaDataAt(vm.ec2(), EC2_LATEST)));
  for (const version of [EC2_LATEST, 'latest']) {
    files.push({ path: `ec2/${version}/meta-data.json`, body: ec2 });
    if (vm.userData !== undefined) files.push({ path: `ec2/${version}/user-data`, body: vm.userData });
  }
  return files;
}
