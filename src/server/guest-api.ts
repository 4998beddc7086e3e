// What a guest's GET (or HEAD) gets: one function from (caller, path) to an answer, used by both the
// fast path and the Fastify app, so the two cannot disagree. Pure apart from the random seed.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { EC2_VERSIONS, resolveEc2Version, resolveMetaData, versionListing } from '../documents/ec2.ts';
import { hasFile, OPENSTACK_LISTING, versionDirectory } from '../documents/openstack.ts';
import { resolveOpenStackVersion, type OpenStackVersion } from '../documents/versions.ts';
import type { VmEntry } from '../store/metadata-index.ts';

export const CONTENT_TYPE = {
  json: 'application/json',
  text: 'text/plain; charset=UTF-8',
  /** webob's default, which Nova's password handler answers with. */
  html: 'text/html; charset=UTF-8',
} as const;

/**
 * Header of the daemon's own probes (`imds vm get`): `<secret> <vm id>`. Honoured only on a
 * connection from 169.254.169.254 (which only the namespace itself can open: the kernel drops
 * packets from outside that carry a local source address) and only with this process's secret,
 * made when it starts and never written anywhere: identity never comes from what a guest can send.
 */
export const PROBE_HEADER = 'x-imds-probe';
const PROBE_SECRET = randomBytes(32).toString('base64url');
const PROBE_SECRET_BYTES = Buffer.from(PROBE_SECRET);

export function probeHeaderValue(vmId: string): string {
  return `${PROBE_SECRET} ${vmId}`;
}

/** The VM id a probe header speaks for, when it carries this process's secret; else undefined. */
export function probedVmId(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string') return undefined;
  const space = header.indexOf(' ');
  if (space < 0) return undefined;
  const secret = Buffer.from(header.slice(0, space));
  if (secret.length !== PROBE_SECRET_BYTES.length || !timingSafeEqual(secret, PROBE_SECRET_BYTES)) return undefined;
  return header.slice(space + 1);
}

export interface Answer {
  status: 200 | 400 | 401 | 403 | 404 | 405 | 429;
  type: string;
  body: Buffer;
  /** For 405. */
  allow?: string;
  /** For 429: seconds. */
  retryAfter?: number;
}

const EC2_LISTING = Buffer.from([...EC2_VERSIONS, 'latest'].join('\n'));
const OS_LISTING = Buffer.from(OPENSTACK_LISTING);
const EMPTY = Buffer.alloc(0);

export const NOT_FOUND: Answer = {
  status: 404,
  type: CONTENT_TYPE.text,
  body: Buffer.from('404 Not Found\n\nThe resource could not be found.\n'),
};
export const PASSWORD_METHOD: Answer = {
  status: 400,
  type: CONTENT_TYPE.text,
  body: Buffer.from('400 Bad Request\n\nGET and POST only are supported.\n'),
};

const ok = (type: string, body: Buffer): Answer => ({ status: 200, type, body });

const directories = new Map<string, Buffer>();
function directoryOf(version: OpenStackVersion, hasUserData: boolean): Buffer {
  const key = `${version}:${hasUserData}`;
  let buf = directories.get(key);
  if (buf === undefined) directories.set(key, (buf = Buffer.from(versionDirectory(version, hasUserData))));
  return buf;
}

/**
 * The answer to GET (or HEAD) `path` — already normalised: no query, no dot segments — from
 * `vm` (undefined: not a registered VM of that network). `password` reads the posted password.
 */
export function answerGet(vm: VmEntry | undefined, path: string, password: (vmId: string) => string, method = 'GET'): Answer {
  // GET / lists the EC2 versions to anyone (cloudbase-init probes it before it adds a route).
  if (path === '/' || path === '') return ok(CONTENT_TYPE.text, EC2_LISTING);
  if (vm === undefined) return NOT_FOUND;
  const segments = path.split('/').filter((s) => s !== '');
  if (segments[0] === 'openstack') return openstack(vm, segments, password, method);
  return ec2(vm, segments);
}

function openstack(vm: VmEntry, segments: string[], password: (vmId: string) => string, method: string): Answer {
  if (segments.length === 1) return ok(CONTENT_TYPE.text, OS_LISTING);
  const version = resolveOpenStackVersion(segments[1] as string);
  if (version === undefined || segments.length > 3) return NOT_FOUND;
  if (segments.length === 2) return ok(CONTENT_TYPE.text, directoryOf(version, vm.userData !== undefined));
  const file = segments[2] as string;
  if (!hasFile(version, file)) return NOT_FOUND;
  switch (file) {
    case 'meta_data.json':
      return ok(CONTENT_TYPE.json, vm.metaData(version));
    case 'user_data':
      return vm.userData === undefined ? NOT_FOUND : ok(CONTENT_TYPE.text, vm.userData);
    case 'vendor_data.json':
      return ok(CONTENT_TYPE.json, vm.vendorData());
    case 'vendor_data2.json':
      return ok(CONTENT_TYPE.json, vm.vendorData2());
    case 'network_data.json':
      return ok(CONTENT_TYPE.text, vm.networkData());
    case 'password': {
      if (method !== 'GET') return PASSWORD_METHOD;
      const value = password(vm.facts.uuid);
      return ok(CONTENT_TYPE.html, value === '' ? EMPTY : Buffer.from(value));
    }
  }
}

function ec2(vm: VmEntry, segments: string[]): Answer {
  if (segments[0] === 'ec2') segments = segments.slice(1);
  if (segments.length === 0) return ok(CONTENT_TYPE.text, EC2_LISTING);
  const version = resolveEc2Version(segments[0] as string);
  if (version === undefined) return NOT_FOUND;
  if (segments.length === 1) return ok(CONTENT_TYPE.text, Buffer.from(versionListing(vm.userData !== undefined)));
  if (segments[1] === 'user-data' && segments.length === 2)
    return vm.userData === undefined ? NOT_FOUND : ok(CONTENT_TYPE.text, vm.userData);
  if (segments[1] !== 'meta-data') return NOT_FOUND;
  const body = resolveMetaData(vm.ec2(), version, segments.slice(2));
  return body === undefined ? NOT_FOUND : ok(CONTENT_TYPE.text, Buffer.from(body));
}

/** POSIX-style path normalisation, as Nova applies it: query dropped, dot segments resolved (never above the root), escapes decoded. */
export function normalisePath(url: string): string {
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  if (!path.includes('%') && !path.includes('/.')) return path;
  const out: string[] = [];
  for (const raw of path.split('/')) {
    let segment: string;
    try {
      segment = decodeURIComponent(raw);
    } catch {
      return '/%invalid';
    }
    if (segment === '' || segment === '.') continue;
    if (segment === '..') out.pop();
    else out.push(encodeURIComponent(segment));
  }
  return `/${out.join('/')}`;
}
