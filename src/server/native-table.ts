// The native data plane's table for one VM (docs/architecture.md, "The native data plane"): every
// route the loop may answer for it, keyed as native/http_head.c imds_route_key writes a target (no
// query, no trailing '/'), with the answer answerGet (guest-api.ts) gives for it. The loop hands
// every other path to node:http, so what the table does not hold is still answered — by the JS.
// Held: `/openstack` and, for every OpenStack version and `latest`, its directory and its files but
// the password (a value a guest posts, read when asked); for the EC2 versions clients ask for
// (`latest` and 2009-04-04: cloud-init's and cloudbase-init's, clients.md), the version listing,
// user-data and the whole meta-data tree. Not held (the JS answers them): older EC2 versions,
// `/ec2/...`, escapes, dot segments and empty segments (the JS normalises those), the password.
// A VM's table stays at a few kB (routes are one byte each in the addon).
// Pure: the same VM gives the same table; the unit test compares every route with answerGet.
import { EC2_LATEST, resolveEc2Version, resolveMetaData, versionListing, type Ec2Dir, type Ec2Version } from '../documents/ec2.ts';
import { hasFile, OPENSTACK_LISTING, versionDirectory } from '../documents/openstack.ts';
import { OPENSTACK_VERSIONS, resolveOpenStackVersion, type OpenStackVersion } from '../documents/versions.ts';
import type { VmEntry } from '../store/metadata-index.ts';
import { CONTENT_TYPE, NOT_FOUND, type Answer } from './guest-api.ts';

/** A body's bytes, and whether many VMs share them (kept once by the addon) or this VM alone does. */
export interface Segment {
  bytes: Buffer;
  shared: boolean;
}

export interface TableResponse {
  status: number;
  type: string;
  segments: Segment[];
  /** The fresh random seed goes before segments[seedAt] (meta_data.json); undefined: no seed. */
  seedAt: number | undefined;
}

export interface VmTable {
  responses: TableResponse[];
  /** Route key -> index in responses. */
  routes: Map<string, number>;
}

/** The addon's content type codes (native/dp.h DP_TYPE_*). */
export const TYPE_CODE: Readonly<Record<string, number>> = { [CONTENT_TYPE.json]: 0, [CONTENT_TYPE.text]: 1, [CONTENT_TYPE.html]: 2 };

const sharedTexts = new Map<string, Buffer>();
/** Bytes of a text many VMs answer alike (listings): one Buffer per text. */
export function sharedText(text: string): Buffer {
  let buf = sharedTexts.get(text);
  if (buf === undefined) {
    if (sharedTexts.size > 10_000) sharedTexts.clear();
    sharedTexts.set(text, (buf = Buffer.from(text)));
  }
  return buf;
}

/** The EC2 versions held (the others are rare: node:http answers them). */
export const NATIVE_EC2_VERSIONS = ['latest', EC2_LATEST] as const;

const OS_FILES = ['meta_data.json', 'user_data', 'vendor_data.json', 'vendor_data2.json', 'network_data.json'] as const;

class TableBuilder {
  readonly responses: TableResponse[] = [];
  readonly routes = new Map<string, number>();
  private readonly byBody = new Map<Buffer | string, number>();

  /** A route answered 200 (or with `answer`'s status) with one body; equal bodies share a response. */
  add(key: string, status: number, type: string, bytes: Buffer, shared: boolean, dedupe: Buffer | string = bytes): void {
    let at = this.byBody.get(dedupe);
    const known = at === undefined ? undefined : this.responses[at];
    if (known === undefined || known.status !== status || known.type !== type) {
      at = this.responses.push({ status, type, segments: [{ bytes, shared }], seedAt: undefined }) - 1;
      this.byBody.set(dedupe, at);
    }
    this.routes.set(key, at as number);
  }

  addAnswer(key: string, answer: Answer, shared: boolean): void {
    this.add(key, answer.status, answer.type, answer.body, shared);
  }

  addMetaData(key: string, vm: VmEntry, version: OpenStackVersion): void {
    const { segments, seedAt } = vm.metaDataTemplate(version);
    const tail = segments[segments.length - 1] as Buffer;
    let at = this.byBody.get(tail);
    if (at === undefined) {
      // The VM's own head; the separator and the tail are shared by every VM.
      at =
        this.responses.push({
          status: 200,
          type: CONTENT_TYPE.json,
          segments: segments.map((bytes, i) => ({ bytes, shared: i > 0 })),
          seedAt,
        }) - 1;
      this.byBody.set(tail, at);
    }
    this.routes.set(key, at);
  }
}

function openstackRoutes(t: TableBuilder, vm: VmEntry): void {
  t.add('/openstack', 200, CONTENT_TYPE.text, sharedText(OPENSTACK_LISTING), true);
  let networkData: Buffer | undefined;
  for (const name of [...OPENSTACK_VERSIONS, 'latest']) {
    const version = resolveOpenStackVersion(name) as OpenStackVersion;
    const base = `/openstack/${name}`;
    t.add(base, 200, CONTENT_TYPE.text, sharedText(versionDirectory(version, vm.userData !== undefined)), true);
    for (const file of OS_FILES) {
      if (!hasFile(version, file)) continue;
      const key = `${base}/${file}`;
      if (file === 'meta_data.json') t.addMetaData(key, vm, version);
      else if (file === 'user_data') {
        if (vm.userData === undefined) t.addAnswer(key, NOT_FOUND, true);
        else t.add(key, 200, CONTENT_TYPE.text, vm.userData, false);
      } else if (file === 'vendor_data.json') t.add(key, 200, CONTENT_TYPE.json, vm.vendorData(), true);
      else if (file === 'vendor_data2.json') t.add(key, 200, CONTENT_TYPE.json, vm.vendorData2(), true);
      else t.add(key, 200, CONTENT_TYPE.text, (networkData ??= vm.networkData()), false);
    }
  }
}

/** Meta-data leaves most VMs share a value of (kept once, like the listings); the others are the VM's own. */
const COMMON_LEAVES = new Set([
  'ami-launch-index',
  'ami-manifest-path',
  'instance-action',
  'instance-type',
  'security-groups',
  'availability-zone',
  'ami',
  'root',
  'public-ipv4',
]);

/** Every node of the meta-data tree visible at `version`: listings (shared) and leaves (the VM's). */
function metaDataRoutes(t: TableBuilder, md: Ec2Dir, version: Ec2Version, base: string, segments: string[], node: Ec2Dir): void {
  for (const key of Object.keys(node)) {
    if (key === '_name') continue;
    const path = [...segments, key];
    const body = resolveMetaData(md, version, path);
    if (body === undefined) continue;
    const child = node[key];
    const isDir = typeof child === 'object' && !Array.isArray(child);
    const route = `${base}/${path.join('/')}`;
    if (isDir) {
      t.add(route, 200, CONTENT_TYPE.text, sharedText(body), true);
      metaDataRoutes(t, md, version, base, path, child as Ec2Dir);
    } else if (COMMON_LEAVES.has(key)) {
      t.add(route, 200, CONTENT_TYPE.text, sharedText(body), true);
    } else {
      t.add(route, 200, CONTENT_TYPE.text, Buffer.from(body), false, `leaf:${body}`);
    }
  }
}

function ec2Routes(t: TableBuilder, vm: VmEntry): void {
  const md = vm.ec2();
  for (const name of NATIVE_EC2_VERSIONS) {
    const version = resolveEc2Version(name) as Ec2Version;
    t.add(`/${name}`, 200, CONTENT_TYPE.text, sharedText(versionListing(vm.userData !== undefined)), true);
    if (vm.userData === undefined) t.addAnswer(`/${name}/user-data`, NOT_FOUND, true);
    else t.add(`/${name}/user-data`, 200, CONTENT_TYPE.text, vm.userData, false);
    t.add(`/${name}/meta-data`, 200, CONTENT_TYPE.text, sharedText(resolveMetaData(md, version, []) as string), true);
    metaDataRoutes(t, md, version, `/${name}/meta-data`, [], md);
  }
}

/** The VM's table. */
export function vmTable(vm: VmEntry): VmTable {
  const t = new TableBuilder();
  openstackRoutes(t, vm);
  ec2Routes(t, vm);
  return { responses: t.responses, routes: t.routes };
}
