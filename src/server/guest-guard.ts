// What stands before a guest's answer, shared by the fast path and the Fastify app: the per-caller
// rate limit, the VM's endpoint switch and its IMDSv2 session-token rules. Returns the refusal, or
// undefined to let the request through. Rejections and token-less requests are counted.
import type { TokenKeys } from '../security/tokens.ts';
import type { Stats } from '../stats.ts';
import type { VmEntry } from '../store/metadata-index.ts';
import { CONTENT_TYPE, type Answer } from './guest-api.ts';

export const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';

/** Per-caller rate limit: 0 when the request may go on, else the seconds to wait (≥ 1). */
export interface CallerLimiter {
  take(network: string, source: string): number;
}

export interface GuestGuard {
  tokens: TokenKeys;
  limiter: CallerLimiter | undefined;
  stats: Stats | undefined;
}

export type RejectReason =
  | 'rate_limited'
  | 'endpoint_disabled'
  | 'token_invalid'
  | 'token_expired'
  | 'token_required'
  | 'token_forwarded'
  | 'token_ttl'
  | 'token_path';

const text = (status: Answer['status'], body: string): Answer => ({ status, type: CONTENT_TYPE.text, body: Buffer.from(body) });
export const UNAUTHORIZED = text(401, '401 Unauthorized\n');
export const FORBIDDEN = text(403, '403 Forbidden\n');
export const DISABLED = text(403, '403 Forbidden\n\nThe metadata endpoint is disabled for this instance.\n');
export const BAD_TTL = text(400, '400 Bad Request\n\nX-aws-ec2-metadata-token-ttl-seconds must be a whole number from 1 to 21600.\n');
export const TOO_MANY = text(429, '429 Too Many Requests\n');

export function reject(guard: GuestGuard, network: string, reason: RejectReason, answer: Answer): Answer {
  guard.stats?.rejected(network, reason);
  return answer;
}

/** The part of the EC2 tree `http_tokens: required` guards: everything but `/` and the OpenStack tree. */
function isEc2Tree(path: string): boolean {
  return path !== '/' && path !== '' && !path.startsWith('/openstack');
}

/** Rate limit and endpoint switch: every request of a caller, whatever its method. */
export function admit(guard: GuestGuard, network: string, source: string, vm: VmEntry | undefined): Answer | undefined {
  const wait = guard.limiter?.take(network, source) ?? 0;
  if (wait > 0) return reject(guard, network, 'rate_limited', { ...TOO_MANY, retryAfter: wait });
  if (vm !== undefined && !vm.access.endpointEnabled) return reject(guard, network, 'endpoint_disabled', DISABLED);
  return undefined;
}

/** Session-token rules for a GET/HEAD/POST of `path` (normalised) carrying `token` (or none). */
export function checkToken(
  guard: GuestGuard,
  network: string,
  vm: VmEntry | undefined,
  path: string,
  token: string | undefined,
): Answer | undefined {
  if (vm === undefined) return undefined; // nothing to guard: the answer is 404
  if (token === undefined) {
    guard.stats?.noToken(network, vm.facts.uuid);
    return vm.access.tokensRequired && isEc2Tree(path) ? reject(guard, network, 'token_required', UNAUTHORIZED) : undefined;
  }
  const check = guard.tokens.check(token, network, vm.facts.uuid);
  if (check === 'valid') return undefined;
  return reject(guard, network, check === 'expired' ? 'token_expired' : 'token_invalid', UNAUTHORIZED);
}
