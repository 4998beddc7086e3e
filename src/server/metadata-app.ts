// The guest-facing Fastify app: Nova's metadata API (the OpenStack tree, every version, the
// password endpoint) and the EC2-compatible tree. It never listens itself: NetnsListeners feeds it
// connections from every network namespace. Identity is (network of the socket, source IP) -> VM,
// looked up in the in-memory index; bodies are precomputed Buffers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify';
import { EC2_VERSIONS, resolveEc2Version, resolveMetaData, versionListing } from '../documents/ec2.ts';
import { materialise } from '../documents/meta-data.ts';
import { hasFile, OPENSTACK_LISTING, versionDirectory } from '../documents/openstack.ts';
import { resolveOpenStackVersion } from '../documents/versions.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { METADATA_IP } from '../model/names.ts';
import type { MetadataIndex, VmEntry } from '../store/metadata-index.ts';
import { NETWORK, type RequestHandler, type TaggedSocket } from './listeners.ts';

export const CONTENT_TYPE = {
  json: 'application/json',
  text: 'text/plain; charset=UTF-8',
  /** webob's default, which Nova's password handler answers with. */
  html: 'text/html; charset=UTF-8',
} as const;

/** Nova caps a posted password at 4 chunks of 255 characters. */
export const PASSWORD_MAX = 1020;

/** Header naming the VM a probe impersonates; honoured only on connections the daemon itself opens. */
export const PROBE_HEADER = 'x-imds-probe-vm';

const EC2_LISTING = Buffer.from([...EC2_VERSIONS, 'latest'].join('\n'));
const OS_LISTING = Buffer.from(OPENSTACK_LISTING);
const NOT_FOUND = Buffer.from('404 Not Found\n\nThe resource could not be found.\n');

export interface PasswordStore {
  /** The posted password, '' when none. */
  password(vmId: string): string;
  /** Stores it unless one is set; false when one was. */
  setPasswordOnce(vmId: string, value: string): boolean;
}

export interface MetadataAppDeps {
  /** The current index; replaced wholesale on reload. */
  index: () => MetadataIndex;
  passwords: PasswordStore;
  log: Logger;
  metrics?: Metrics;
}

export interface MetadataApp {
  app: ReturnType<typeof Fastify>;
  handler: RequestHandler;
}

/**
 * The VM behind a request: the network its socket arrived on plus its source address. A connection
 * from 169.254.169.254 itself can only come from inside the namespace (the kernel drops packets
 * from outside that carry a local source address), i.e. from the daemon's own probe (`imds vm
 * get`), which names the VM it speaks for in PROBE_HEADER.
 */
export function callerOf(index: MetadataIndex, request: FastifyRequest): VmEntry | undefined {
  const socket = request.raw.socket as TaggedSocket;
  const network = socket[NETWORK];
  if (network === undefined) return undefined;
  const source = socket.remoteAddress;
  if (source === METADATA_IP) {
    const probe = request.headers[PROBE_HEADER];
    return typeof probe === 'string' ? index.lookupById(network, probe) : undefined;
  }
  return index.lookup(network, source);
}

function send(reply: FastifyReply, type: string, body: Buffer | string): FastifyReply {
  return reply.header('content-type', type).send(body);
}

function notFound(reply: FastifyReply): FastifyReply {
  return reply.code(404).header('content-type', CONTENT_TYPE.text).send(NOT_FOUND);
}

function badRequest(reply: FastifyReply, why: string): FastifyReply {
  return reply.code(400).header('content-type', CONTENT_TYPE.text).send(`400 Bad Request\n\n${why}\n`);
}

/**
 * POSIX-style path normalisation as Nova applies it: the query string is dropped, `.` and `..`
 * segments are resolved (never above the root) and percent-escapes decoded. Runs before routing.
 */
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

export async function buildMetadataApp(deps: MetadataAppDeps): Promise<MetadataApp> {
  let handler: RequestHandler | undefined;
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'metadata' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 256 },
    rewriteUrl: (req) => normalisePath(req.url ?? '/'),
    bodyLimit: 64 * 1024,
    return503OnClosing: false,
    serverFactory: (h: (req: IncomingMessage, res: ServerResponse) => void) => {
      handler = h;
      return createServer();
    },
  });

  // Bodies are opaque bytes whatever their type (cloudbase-init posts the password without one).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  app.setNotFoundHandler((_request, reply) => notFound(reply));
  app.setErrorHandler((err: { statusCode?: number; message: string }, request, reply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err: err.message, path: request.url }, 'metadata request failed');
      return reply.code(500).header('content-type', CONTENT_TYPE.text).send('500 Internal Server Error\n');
    }
    // Nova never answers 413 or 415: an oversized or odd body is a bad request.
    return badRequest(reply, status === 413 ? 'Request is too large.' : 'Bad request.');
  });

  const { metrics } = deps;
  const log = deps.log.child({ component: 'metadata' });
  app.addHook('onResponse', (request, reply, done) => {
    const network = (request.raw.socket as TaggedSocket)[NETWORK] ?? 'none';
    metrics?.observeRequest(network, reply.statusCode, reply.elapsedTime / 1000);
    if (log.isLevelEnabled('debug')) {
      const vm = callerOf(deps.index(), request);
      log.debug(
        { network, vm: vm?.facts.uuid, src: request.raw.socket.remoteAddress, method: request.method, path: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 100) / 100 },
        'request',
      );
    }
    done();
  });

  // Directory listings depend only on the version and on whether the VM has user data.
  const directories = new Map<string, Buffer>();
  const directoryOf = (version: Parameters<typeof versionDirectory>[0], hasUserData: boolean): Buffer => {
    const key = `${version}:${hasUserData}`;
    let buf = directories.get(key);
    if (buf === undefined) directories.set(key, (buf = Buffer.from(versionDirectory(version, hasUserData))));
    return buf;
  };

  // GET / lists the EC2 versions to anyone (cloudbase-init probes it before it adds a route).
  app.get('/', (_request, reply) => send(reply, CONTENT_TYPE.text, EC2_LISTING));

  app.get('/openstack', (request, reply) => {
    if (callerOf(deps.index(), request) === undefined) return notFound(reply);
    return send(reply, CONTENT_TYPE.text, OS_LISTING);
  });

  app.get<{ Params: { version: string } }>('/openstack/:version', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const version = resolveOpenStackVersion(request.params.version);
    if (vm === undefined || version === undefined) return notFound(reply);
    return send(reply, CONTENT_TYPE.text, directoryOf(version, vm.userData !== undefined));
  });

  app.get<{ Params: { version: string; file: string } }>('/openstack/:version/:file', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const version = resolveOpenStackVersion(request.params.version);
    const file = request.params.file;
    if (vm === undefined || version === undefined || !hasFile(version, file)) return notFound(reply);
    switch (file) {
      case 'meta_data.json':
        return send(reply, CONTENT_TYPE.json, materialise(vm.metaData.get(version) as NonNullable<ReturnType<typeof vm.metaData.get>>));
      case 'user_data':
        return vm.userData === undefined ? notFound(reply) : send(reply, CONTENT_TYPE.text, vm.userData);
      case 'vendor_data.json':
        return send(reply, CONTENT_TYPE.json, vm.vendorData);
      case 'vendor_data2.json':
        return send(reply, CONTENT_TYPE.json, vm.vendorData2);
      case 'network_data.json':
        return send(reply, CONTENT_TYPE.text, vm.networkData);
      case 'password':
        if (request.method !== 'GET') return badRequest(reply, 'GET and POST only are supported.');
        return send(reply, CONTENT_TYPE.html, deps.passwords.password(vm.facts.uuid));
    }
  });

  // The write-once password (cloudbase-init posts it encrypted to the VM's ssh-rsa key).
  app.post<{ Params: { version: string }; Body: Buffer | undefined }>('/openstack/:version/password', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const version = resolveOpenStackVersion(request.params.version);
    if (vm === undefined || version === undefined || !hasFile(version, 'password')) return notFound(reply);
    const body = request.body ?? Buffer.alloc(0);
    if (body.length > PASSWORD_MAX) return badRequest(reply, 'Request is too large.');
    if (!deps.passwords.setPasswordOnce(vm.facts.uuid, body.toString('utf8'))) {
      return reply.code(409).header('content-type', CONTENT_TYPE.text).send('409 Conflict\n\nA password has already been set.\n');
    }
    return send(reply, CONTENT_TYPE.html, '');
  });

  // The EC2 tree: /<version>/..., /ec2, /ec2/<version>/... .
  const ec2 = (request: FastifyRequest, reply: FastifyReply, path: string): FastifyReply => {
    const vm = callerOf(deps.index(), request);
    if (vm === undefined) return notFound(reply);
    const segments = path.split('/').filter((s) => s !== '');
    if (segments[0] === 'ec2') segments.shift();
    else if (segments[0] === 'openstack') return notFound(reply);
    if (segments.length === 0) return send(reply, CONTENT_TYPE.text, EC2_LISTING);
    const version = resolveEc2Version(segments[0] as string);
    if (version === undefined) return notFound(reply);
    if (segments.length === 1) return send(reply, CONTENT_TYPE.text, versionListing(vm.userData !== undefined));
    if (segments[1] === 'user-data' && segments.length === 2) {
      return vm.userData === undefined ? notFound(reply) : send(reply, CONTENT_TYPE.text, vm.userData);
    }
    if (segments[1] !== 'meta-data') return notFound(reply);
    const body = resolveMetaData(vm.ec2, version, segments.slice(2));
    return body === undefined ? notFound(reply) : send(reply, CONTENT_TYPE.text, body);
  };
  app.get<{ Params: { '*': string } }>('/*', (request, reply) => ec2(request, reply, request.params['*']));

  // Other methods: the password answers 400 like Nova; elsewhere only GET and HEAD exist.
  app.route<{ Params: { '*': string } }>({
    method: ['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'],
    url: '/*',
    handler: (request, reply) => {
      if (/^openstack\/[^/]+\/password\/?$/.test(request.params['*'])) return badRequest(reply, 'GET and POST only are supported.');
      return reply.code(405).header('allow', 'GET, HEAD').header('content-type', CONTENT_TYPE.text).send('405 Method Not Allowed\n');
    },
  });

  await app.ready();
  if (handler === undefined) throw new Error('fastify did not call serverFactory');
  return { app, handler };
}
