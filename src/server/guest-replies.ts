// The Fastify app's ways of answering a guest, shared by its routes: who is calling (network of
// the socket + source address), what stands before the answer (guards), the GET resolver shared
// with the fast path, and the refusal of methods that are not served.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { METADATA_IP } from '../model/names.ts';
import type { Logger } from '../log.ts';
import type { Stats } from '../stats.ts';
import type { MetadataIndex, VmEntry } from '../store/metadata-index.ts';
import { NETWORK, type TaggedSocket } from './connection.ts';
import { answerGet, CONTENT_TYPE, PROBE_HEADER, probedVmId, type Answer } from './guest-api.ts';
import { admit, checkToken, TOKEN_HEADER, type GuestGuard } from './guest-guard.ts';
import type { RequestLog } from './request-log.ts';

export const PASSWORD_PATH = /^openstack\/[^/]+\/password\/?$/;

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
  /** Where answered requests are logged; default: debug lines on `log`. */
  requests?: RequestLog;
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

export function badRequest(reply: FastifyReply, why: string): FastifyReply {
  return reply.code(400).header('content-type', CONTENT_TYPE.text).send(`400 Bad Request\n\n${why}\n`);
}

export function send(reply: FastifyReply, a: Answer): FastifyReply {
  if (a.allow !== undefined) reply.header('allow', a.allow);
  if (a.retryAfter !== undefined) reply.header('retry-after', String(a.retryAfter));
  return reply.code(a.status).header('content-type', a.type).send(a.body);
}

export function headerOf(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** A method other than GET and HEAD where none is served: 400 at the password (as Nova), else 405. */
export function otherMethod(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (PASSWORD_PATH.test(request.url.replace(/^\/+/, '').split('?')[0] ?? '')) return badRequest(reply, 'GET and POST only are supported.');
  return reply.code(405).header('allow', 'GET, HEAD').header('content-type', CONTENT_TYPE.text).send('405 Method Not Allowed\n');
}

export interface GuestReplies {
  /** Rate limit, endpoint switch and (withToken) the token rules; the daemon's own probes skip the rate limit. */
  refusal: (request: FastifyRequest, vm: VmEntry | undefined, withToken: boolean) => Answer | undefined;
  /** A GET or HEAD: the guards, then the resolver shared with the fast path. */
  answer: (request: FastifyRequest, reply: FastifyReply) => FastifyReply;
}

export function guestReplies(deps: MetadataAppDeps): GuestReplies {
  const { guard } = deps;
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
  const password = (vmId: string): string => deps.passwords.password(vmId);
  return {
    refusal,
    answer: (request, reply) => {
      const vm = callerOf(deps.index(), request);
      return send(reply, refusal(request, vm, true) ?? answerGet(vm, request.url, password, request.method));
    },
  };
}
