// The guest-facing Fastify app: Nova's metadata API (the OpenStack tree, every version, the
// password endpoint) and the EC2-compatible tree. It never listens itself: NetnsListeners feeds it
// connections from every network namespace. Identity is (network of the socket, source IP) -> VM,
// looked up in the in-memory index (guest-replies.ts); bodies are precomputed Buffers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { METADATA_IP } from '../model/names.ts';
import { NETWORK, type RequestHandler, type TaggedSocket } from './connection.ts';
import { CONTENT_TYPE, normalisePath, PROBE_HEADER } from './guest-api.ts';
import { badRequest, callerOf, guestReplies, otherMethod, type MetadataAppDeps } from './guest-replies.ts';
import { otherMethodRoutes, passwordRoute, tokenRoutes } from './guest-routes.ts';
import { RequestLog } from './request-log.ts';

export { CONTENT_TYPE, normalisePath, PROBE_HEADER, callerOf };
export { PASSWORD_MAX } from './guest-routes.ts';
export type { MetadataAppDeps, PasswordStore } from './guest-replies.ts';

export interface MetadataApp {
  app: FastifyInstance;
  handler: RequestHandler;
}

/** Counts every answer and logs it (request-log.ts: debug lines, the access log, unknown callers; never a body). */
function countAndLog(app: FastifyInstance, deps: MetadataAppDeps): void {
  const { stats } = deps;
  const requests = deps.requests ?? new RequestLog(deps.log);
  app.addHook('onResponse', (request, reply, done) => {
    const network = (request.raw.socket as TaggedSocket)[NETWORK] ?? 'none';
    stats?.observeRequest(network, reply.statusCode, reply.elapsedTime / 1000);
    const src = request.raw.socket.remoteAddress;
    const vm = callerOf(deps.index(), request);
    // The daemon's own probes (from 169.254.169.254) are no contact of the VM they speak for.
    if (src !== METADATA_IP) {
      if (vm !== undefined) stats?.contacts.answered(vm.facts.uuid, reply.statusCode, request.method, request.originalUrl);
      else if (reply.statusCode !== 429) stats?.unknownCallers(network);
    }
    if (requests.wants(vm !== undefined)) {
      // The path as the guest sent it (request.url is the normalised one); for the password's POST, only that.
      const bytes = request.method === 'HEAD' ? 0 : Number(reply.getHeader('content-length') ?? 0);
      const record = { at: Date.now(), network, vm: vm?.facts.uuid, src: src ?? '', method: request.method, path: request.originalUrl };
      requests.completed({ ...record, status: reply.statusCode, bytes, ms: reply.elapsedTime });
    }
    done();
  });
}

export async function buildMetadataApp(deps: MetadataAppDeps): Promise<MetadataApp> {
  let handler: RequestHandler | undefined;
  const app = Fastify({
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- tsc types the app by pino's Logger without it
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
  const replies = guestReplies(deps);
  // Routes exist for GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS; any other method (TRACE,
  // PROPFIND, …) lands here and is refused like the routed ones, never answered as a GET.
  app.setNotFoundHandler((request, reply) =>
    request.method === 'GET' || request.method === 'HEAD' ? replies.answer(request, reply) : otherMethod(request, reply),
  );
  app.setErrorHandler((err: { statusCode?: number; message: string }, request, reply) => {
    const status = err.statusCode ?? 500;
    if (status >= 500) {
      request.log.error({ err: err.message, path: request.url }, 'metadata request failed');
      return reply.code(500).header('content-type', CONTENT_TYPE.text).send('500 Internal Server Error\n');
    }
    // Nova never answers 413 or 415: an oversized or odd body is a bad request.
    return badRequest(reply, status === 413 ? 'Request is too large.' : 'Bad request.');
  });
  countAndLog(app, deps);
  // Every GET and HEAD: one resolver (guest-api.ts), shared with the fast path.
  app.get('/', replies.answer);
  app.get('/*', replies.answer);
  passwordRoute(app, deps, replies);
  tokenRoutes(app, deps, replies);
  otherMethodRoutes(app);
  await app.ready();
  if (handler === undefined) throw new Error('fastify did not call serverFactory');
  return { app, handler };
}
