// The guest-facing Fastify app. It never listens itself: NetnsListeners feeds it connections from
// every network namespace. Identity is (network of the socket, source IP) -> VM, looked up in the
// in-memory index; bodies are precomputed Buffers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { materialise } from '../documents/meta-data.ts';
import { resolveOpenStackVersion } from '../documents/versions.ts';
import type { Logger } from '../log.ts';
import type { Metrics } from '../metrics.ts';
import { METADATA_IP } from '../model/names.ts';
import type { MetadataIndex, VmEntry } from '../store/metadata-index.ts';
import { NETWORK, type RequestHandler, type TaggedSocket } from './listeners.ts';

export const CONTENT_TYPE = {
  json: 'application/json',
  text: 'text/plain; charset=UTF-8',
} as const;

const NOT_FOUND = Buffer.from('404 Not Found\n\nThe resource could not be found.\n');

/** Header naming the VM a probe impersonates; honoured only on connections the daemon itself opens. */
export const PROBE_HEADER = 'x-imds-probe-vm';

export interface MetadataAppDeps {
  /** The current index; replaced wholesale on reload. */
  index: () => MetadataIndex;
  log: Logger;
  metrics?: Metrics;
}

export interface MetadataApp {
  app: FastifyInstance;
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

function notFound(reply: FastifyReply): FastifyReply {
  return reply.code(404).header('content-type', CONTENT_TYPE.text).send(NOT_FOUND);
}

export async function buildMetadataApp(deps: MetadataAppDeps): Promise<MetadataApp> {
  let handler: RequestHandler | undefined;
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'metadata' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true },
    bodyLimit: 4096,
    return503OnClosing: false,
    serverFactory: (h: (req: IncomingMessage, res: ServerResponse) => void) => {
      handler = h;
      return createServer();
    },
  });

  app.setNotFoundHandler((_request, reply) => notFound(reply));
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
  app.setErrorHandler((err: { statusCode?: number; message: string }, request, reply) => {
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) request.log.error({ err: err.message, path: request.url }, 'metadata request failed');
    return reply.code(status).header('content-type', CONTENT_TYPE.text).send(`${status}\n`);
  });

  app.get<{ Params: { version: string } }>('/openstack/:version/meta_data.json', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const version = resolveOpenStackVersion(request.params.version);
    if (vm === undefined || version === undefined) return notFound(reply);
    const doc = vm.metaData.get(version);
    if (doc === undefined) return notFound(reply);
    return reply.header('content-type', CONTENT_TYPE.json).send(materialise(doc));
  });

  app.get<{ Params: { version: string } }>('/openstack/:version/user_data', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    if (vm === undefined || vm.userData === undefined || resolveOpenStackVersion(request.params.version) === undefined) {
      return notFound(reply);
    }
    return reply.header('content-type', CONTENT_TYPE.text).send(vm.userData);
  });

  await app.ready();
  if (handler === undefined) throw new Error('fastify did not call serverFactory');
  return { app, handler };
}
