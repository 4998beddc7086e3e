// The guest-facing Fastify app: Nova's metadata API (the OpenStack tree, every version, the
// password endpoint) and the EC2-compatible tree. It never listens itself: NetnsListeners feeds it
// connections from every network namespace. Identity is (network of the socket, source IP) -> VM,
// looked up in the in-memory index; bodies are precomputed Buffers.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyReply, type FastifyRequest } from 'fastify';
import { answerGet, CONTENT_TYPE, normalisePath, PROBE_HEADER, probedVmId } from './guest-api.ts';
import { resolveOpenStackVersion } from '../documents/versions.ts';
import { hasFile } from '../documents/openstack.ts';
import type { Logger } from '../log.ts';
import type { Stats } from '../stats.ts';
import { METADATA_IP } from '../model/names.ts';
import type { MetadataIndex, VmEntry } from '../store/metadata-index.ts';
import { NETWORK, type RequestHandler, type TaggedSocket } from './listeners.ts';
import { admit, BAD_TTL, checkToken, FORBIDDEN, reject, TOKEN_HEADER, TOKEN_TTL_HEADER, type GuestGuard } from './guest-guard.ts';
import { TOKEN_TTL_MAX, TOKEN_TTL_MIN } from '../security/tokens.ts';
import { setSocketTtl } from '../netns/listen-in-netns.ts';
import type { Answer } from './guest-api.ts';

export { CONTENT_TYPE, normalisePath, PROBE_HEADER };

/** Nova caps a posted password at 4 chunks of 255 characters. */
export const PASSWORD_MAX = 1020;
const PASSWORD_PATH = /^openstack\/[^/]+\/password\/?$/;

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
  stats?: Stats;
  guard: GuestGuard;
}

export interface MetadataApp {
  app: ReturnType<typeof Fastify>;
  handler: RequestHandler;
}

/**
 * The VM behind a request: the network its socket arrived on plus its source address. A connection
 * from 169.254.169.254 itself can only come from inside the namespace (the kernel drops packets
 * from outside that carry a local source address), i.e. from the daemon's own probe (`imds vm
 * get`), which names the VM it speaks for in PROBE_HEADER, with the process's secret.
 */
export function callerOf(index: MetadataIndex, request: FastifyRequest): VmEntry | undefined {
  const socket = request.raw.socket as TaggedSocket;
  const network = socket[NETWORK];
  if (network === undefined) return undefined;
  const source = socket.remoteAddress;
  if (source === METADATA_IP) {
    const vmId = probedVmId(request.headers[PROBE_HEADER]);
    return vmId === undefined ? undefined : index.lookupById(network, vmId);
  }
  return index.lookup(network, source);
}

function badRequest(reply: FastifyReply, why: string): FastifyReply {
  return reply.code(400).header('content-type', CONTENT_TYPE.text).send(`400 Bad Request\n\n${why}\n`);
}

export async function buildMetadataApp(deps: MetadataAppDeps): Promise<MetadataApp> {
  let handler: RequestHandler | undefined;
  const app = Fastify({
    loggerInstance: deps.log.child({ component: 'metadata' }),
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

  const send = (reply: FastifyReply, a: Answer): FastifyReply => {
    if (a.allow !== undefined) reply.header('allow', a.allow);
    if (a.retryAfter !== undefined) reply.header('retry-after', String(a.retryAfter));
    return reply.code(a.status).header('content-type', a.type).send(a.body);
  };
  const { guard } = deps;
  const headerOf = (request: FastifyRequest, name: string): string | undefined => {
    const v = request.headers[name];
    return Array.isArray(v) ? v.join(', ') : v;
  };
  /** Rate limit, endpoint switch, token rules; the daemon's own probes skip the rate limit. */
  const refusal = (request: FastifyRequest, vm: VmEntry | undefined, withToken: boolean): Answer | undefined => {
    const socket = request.raw.socket as TaggedSocket;
    const network = socket[NETWORK];
    if (network === undefined) return undefined;
    const source = socket.remoteAddress ?? '';
    const ownProbe = source === METADATA_IP && probedVmId(request.headers[PROBE_HEADER]) !== undefined;
    return (
      (ownProbe ? undefined : admit(guard, network, source, vm)) ??
      (withToken ? checkToken(guard, network, vm, request.url, headerOf(request, TOKEN_HEADER)) : undefined)
    );
  };
  /** A method other than GET and HEAD where none is served: 400 at the password (as Nova), else 405. */
  const otherMethod = (request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    if (PASSWORD_PATH.test(request.url.replace(/^\/+/, '').split('?')[0] ?? ''))
      return badRequest(reply, 'GET and POST only are supported.');
    return reply.code(405).header('allow', 'GET, HEAD').header('content-type', CONTENT_TYPE.text).send('405 Method Not Allowed\n');
  };
  const answer = (request: FastifyRequest, reply: FastifyReply): FastifyReply => {
    const vm = callerOf(deps.index(), request);
    return send(
      reply,
      refusal(request, vm, true) ?? answerGet(vm, request.url, deps.passwords.password.bind(deps.passwords), request.method),
    );
  };
  // Routes exist for GET, HEAD, POST, PUT, DELETE, PATCH and OPTIONS; any other method (TRACE,
  // PROPFIND, …) lands here and is refused like the routed ones, never answered as a GET.
  app.setNotFoundHandler((request, reply) =>
    request.method === 'GET' || request.method === 'HEAD' ? answer(request, reply) : otherMethod(request, reply),
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

  const { stats } = deps;
  const log = deps.log.child({ component: 'metadata' });
  app.addHook('onResponse', (request, reply, done) => {
    const network = (request.raw.socket as TaggedSocket)[NETWORK] ?? 'none';
    stats?.observeRequest(network, reply.statusCode, reply.elapsedTime / 1000);
    if (log.isLevelEnabled('debug')) {
      const vm = callerOf(deps.index(), request);
      log.debug(
        {
          network,
          vm: vm?.facts.uuid,
          src: request.raw.socket.remoteAddress,
          method: request.method,
          path: request.url,
          status: reply.statusCode,
          ms: Math.round(reply.elapsedTime * 100) / 100,
        },
        'request',
      );
    }
    done();
  });

  // Every GET and HEAD: one resolver (guest-api.ts), shared with the fast path.
  app.get('/', answer);
  app.get('/*', answer);

  // The write-once password (cloudbase-init posts it encrypted to the VM's ssh-rsa key).
  app.post<{ Params: { version: string }; Body: Buffer | undefined }>('/openstack/:version/password', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const refused = refusal(request, vm, true);
    if (refused !== undefined) return send(reply, refused);
    const version = resolveOpenStackVersion(request.params.version);
    if (vm === undefined || version === undefined || !hasFile(version, 'password')) return answer(request, reply);
    const body = request.body ?? Buffer.alloc(0);
    if (body.length > PASSWORD_MAX) return badRequest(reply, 'Request is too large.');
    if (!deps.passwords.setPasswordOnce(vm.facts.uuid, body.toString('utf8'))) {
      return reply.code(409).header('content-type', CONTENT_TYPE.text).send('409 Conflict\n\nA password has already been set.\n');
    }
    return reply.header('content-type', CONTENT_TYPE.html).send('');
  });

  // IMDSv2: a session token for the calling VM, as EC2 issues it. Forwarded requests (a proxy in
  // the guest) are refused; the answer leaves with IP TTL = the VM's hop limit, so it dies one hop
  // behind the guest (a container behind NAT) unless the operator raised the limit.
  app.put('/latest/api/token', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const refused = refusal(request, vm, false);
    if (refused !== undefined) return send(reply, refused);
    const network = (request.raw.socket as TaggedSocket)[NETWORK];
    if (vm === undefined || network === undefined) return answer(request, reply);
    if (request.headers['x-forwarded-for'] !== undefined) return send(reply, reject(guard, 'token_forwarded', FORBIDDEN));
    const ttlText = headerOf(request, TOKEN_TTL_HEADER)?.trim();
    const ttl = ttlText !== undefined && /^\d{1,6}$/.test(ttlText) ? Number(ttlText) : NaN;
    if (!(ttl >= TOKEN_TTL_MIN && ttl <= TOKEN_TTL_MAX)) return send(reply, reject(guard, 'token_ttl', BAD_TTL));
    try {
      setSocketTtl(request.raw.socket as unknown as { _handle?: { fd?: number } }, vm.access.hopLimit);
    } catch (err) {
      request.log.error({ err: (err as Error).message, vm: vm.facts.uuid }, 'cannot set the hop limit; token refused');
      return reply.code(500).header('content-type', CONTENT_TYPE.text).send('500 Internal Server Error\n');
    }
    return reply
      .header(TOKEN_TTL_HEADER, String(ttl))
      .header('content-type', CONTENT_TYPE.text)
      .send(guard.tokens.issue(network, vm.facts.uuid, ttl));
  });
  // A PUT for a token under a dated version (or anything but `latest`): 403, as EC2 answers.
  app.put<{ Params: { '*': string } }>('/*', (request, reply) => {
    if (/^[^/]+\/api\/token\/?$/.test(request.params['*'])) return send(reply, reject(guard, 'token_path', FORBIDDEN));
    return otherMethod(request, reply);
  });

  // Other methods: the password answers 400 like Nova; elsewhere only GET and HEAD exist.
  app.route({ method: ['POST', 'DELETE', 'PATCH', 'OPTIONS'], url: '/*', handler: otherMethod });

  await app.ready();
  if (handler === undefined) throw new Error('fastify did not call serverFactory');
  return { app, handler };
}
