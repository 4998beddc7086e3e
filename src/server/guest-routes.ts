// The guest app's routes beyond GET and HEAD: the write-once password, IMDSv2 session tokens, and
// the refusal of every other method.
import type { FastifyInstance } from 'fastify';
import { hasFile } from '../documents/openstack.ts';
import { resolveOpenStackVersion } from '../documents/versions.ts';
import { setSocketTtl } from '../netns/addon.ts';
import { TOKEN_TTL_MAX, TOKEN_TTL_MIN } from '../security/tokens.ts';
import { NETWORK, type TaggedSocket } from './connection.ts';
import { CONTENT_TYPE } from './guest-api.ts';
import { BAD_TTL, FORBIDDEN, reject, TOKEN_TTL_HEADER } from './guest-guard.ts';
import { badRequest, callerOf, headerOf, otherMethod, send, type GuestReplies, type MetadataAppDeps } from './guest-replies.ts';

/** Nova caps a posted password at 4 chunks of 255 characters. */
export const PASSWORD_MAX = 1020;

/** The write-once password (cloudbase-init posts it encrypted to the VM's ssh-rsa key). */
export function passwordRoute(app: FastifyInstance, deps: MetadataAppDeps, replies: GuestReplies): void {
  app.post<{ Params: { version: string }; Body: Buffer | undefined }>('/openstack/:version/password', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const refused = replies.refusal(request, vm, true);
    if (refused !== undefined) return send(reply, refused);
    const version = resolveOpenStackVersion(request.params.version);
    if (vm === undefined || version === undefined || !hasFile(version, 'password')) return replies.answer(request, reply);
    const body = request.body ?? Buffer.alloc(0);
    if (body.length > PASSWORD_MAX) return badRequest(reply, 'Request is too large.');
    if (!deps.passwords.setPasswordOnce(vm.facts.uuid, body.toString('utf8'))) {
      return reply.code(409).header('content-type', CONTENT_TYPE.text).send('409 Conflict\n\nA password has already been set.\n');
    }
    return reply.header('content-type', CONTENT_TYPE.html).send('');
  });
}

/**
 * IMDSv2: a session token for the calling VM, as EC2 issues it. Forwarded requests (a proxy in the
 * guest) are refused; the answer leaves with IP TTL = the VM's hop limit, so it dies one hop behind
 * the guest (a container behind NAT) unless the operator raised the limit. A PUT for a token under
 * a dated version (or anything but `latest`): 403, as EC2 answers.
 */
export function tokenRoutes(app: FastifyInstance, deps: MetadataAppDeps, replies: GuestReplies): void {
  const { guard } = deps;
  app.put('/latest/api/token', (request, reply) => {
    const vm = callerOf(deps.index(), request);
    const refused = replies.refusal(request, vm, false);
    if (refused !== undefined) return send(reply, refused);
    const network = (request.raw.socket as TaggedSocket)[NETWORK];
    if (vm === undefined || network === undefined) return replies.answer(request, reply);
    if (request.headers['x-forwarded-for'] !== undefined) return send(reply, reject(guard, network, 'token_forwarded', FORBIDDEN));
    const ttlText = headerOf(request, TOKEN_TTL_HEADER)?.trim();
    const ttl = ttlText !== undefined && /^\d{1,6}$/.test(ttlText) ? Number(ttlText) : NaN;
    if (!(ttl >= TOKEN_TTL_MIN && ttl <= TOKEN_TTL_MAX)) return send(reply, reject(guard, network, 'token_ttl', BAD_TTL));
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
  app.put<{ Params: { '*': string } }>('/*', (request, reply) => {
    const network = (request.raw.socket as TaggedSocket)[NETWORK] ?? 'none';
    if (/^[^/]+\/api\/token\/?$/.test(request.params['*'])) return send(reply, reject(guard, network, 'token_path', FORBIDDEN));
    return otherMethod(request, reply);
  });
}

/** Other methods: the password answers 400 like Nova; elsewhere only GET and HEAD exist. */
export function otherMethodRoutes(app: FastifyInstance): void {
  app.route({ method: ['POST', 'DELETE', 'PATCH', 'OPTIONS'], url: '/*', handler: otherMethod });
}
