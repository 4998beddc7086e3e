// The guest request fast path. A boot storm is a connection storm: cloud-init opens a new TCP
// connection for each of its ~28 requests. Measured on this path (docs/performance.md), node:http +
// Fastify cost several times what the kernel's own share of a connection does, so complete, simple
// requests are answered here, straight from the socket, with the same resolver the Fastify app uses
// (guest-api.ts): a GET or HEAD whose whole head arrived, with no body, no upgrade and nothing
// unusual. Everything else -- a partial head (slow clients), a body, other methods, the daemon's own
// probes, anything this strict reader does not accept -- is handed to node:http and the Fastify app
// with the bytes already read, so their parser, limits and timeouts apply as before.
import type { Socket } from 'node:net';
import type { Logger } from '../log.ts';
import type { Stats } from '../stats.ts';
import { METADATA_IP } from '../model/names.ts';
import type { MetadataIndex } from '../store/metadata-index.ts';
import { answerGet, normalisePath, type Answer } from './guest-api.ts';
import { NETWORK, type HandOver, type TaggedSocket } from './connection.ts';
import { admit, checkToken, type GuestGuard } from './guest-guard.ts';
import { RequestLog } from './request-log.ts';

export interface FastPathDeps {
  index: () => MetadataIndex;
  password: (vmId: string) => string;
  log: Logger;
  stats?: Stats;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
  guard: GuestGuard;
  /** Where answered requests are logged (debug lines, the access log, unknown callers); default: debug lines on `log`. */
  requests?: RequestLog;
}

/** Heads larger than this go to node:http (which enforces maxHeaderSize). */
const MAX_FAST_HEAD = 8192;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const REASON: Record<number, string> = {
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  429: 'Too Many Requests',
};
const TARGET = /^\/[\x21-\x7e]*$/;

interface Head {
  method: 'GET' | 'HEAD';
  target: string;
  keepAlive: boolean;
  /** X-aws-ec2-metadata-token, when sent. */
  token: string | undefined;
}

// Anything unusual in a head sends it to node:http (which answers 400 where it would, as it does
// when the fast path is off): a line without a colon or with whitespace before it (obs-fold), an
// empty or non-token header name, a bare CR or LF, a control character (HT aside), a body, an
// upgrade, an expectation, a content-length other than one `0`, more than one connection header.
const ODD_LINE = /\r\n(?:[^:\r\n]*(?:\r\n|$)|:|[^:\r\n]*[^!#$%&'*+\-.^_`|~0-9A-Za-z:\r\n][^:\r\n]*:)|[^\r]\n|\r(?!\n)/;
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]/;
const BODY_OR_UPGRADE = /\r\n(?:transfer-encoding|upgrade|expect)\s*:/;
const CONTENT_LENGTH = /\r\ncontent-length\s*:([^\r]*)/g;
const ZERO_LENGTH = /^[ \t]*0[ \t]*$/;
const CONNECTION = /\r\nconnection\s*:([^\r]*)/g;
const TOKEN = /\r\nx-aws-ec2-metadata-token[ \t]*:[ \t]*([^\r]*?)[ \t]*(?=\r\n|$)/gi;

/** Parses a complete head strictly; undefined when the request is not for the fast path. */
export function parseHead(text: string): Head | undefined {
  const eol = text.indexOf('\r\n');
  const requestLine = eol === -1 ? text : text.slice(0, eol);
  const sp1 = requestLine.indexOf(' ');
  const sp2 = requestLine.indexOf(' ', sp1 + 1);
  if (sp1 < 0 || sp2 < 0 || requestLine.indexOf(' ', sp2 + 1) !== -1) return undefined;
  const method = requestLine.slice(0, sp1);
  const target = requestLine.slice(sp1 + 1, sp2);
  const version = requestLine.slice(sp2 + 1);
  if ((method !== 'GET' && method !== 'HEAD') || (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') || !TARGET.test(target))
    return undefined;
  let keepAlive = version === 'HTTP/1.1';
  let token: string | undefined;
  if (eol !== -1) {
    if (ODD_LINE.test(text.slice(eol)) || CONTROL.test(text)) return undefined;
    const lower = text.slice(eol).toLowerCase();
    if (BODY_OR_UPGRADE.test(lower)) return undefined;
    const lengths = [...lower.matchAll(CONTENT_LENGTH)];
    if (lengths.length > 1 || (lengths.length === 1 && !ZERO_LENGTH.test(lengths[0]?.[1] as string))) return undefined;
    const connections = [...lower.matchAll(CONNECTION)];
    if (connections.length > 1) return undefined;
    const connection = connections[0]?.[1];
    if (connection !== undefined) {
      if (/(^|,)[ \t]*close[ \t]*(,|$)/.test(connection)) keepAlive = false;
      else if (/(^|,)[ \t]*keep-alive[ \t]*(,|$)/.test(connection)) keepAlive = true;
    }
    const tokens = [...text.slice(eol).matchAll(TOKEN)];
    // Two token headers: node:http would join them (", "), which no token matches; so does this.
    if (tokens.length > 0) token = tokens.map((m) => m[1] as string).join(', ');
  }
  return { method, target, keepAlive, token };
}

let dateSecond = 0;
let dateText = '';
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== dateSecond) {
    dateSecond = second;
    dateText = new Date(now).toUTCString();
  }
  return dateText;
}

/** The whole answer in one buffer, one write (the head is ASCII); closes after it unless kept alive. Returns the body's bytes written. */
function writeAnswer(socket: Socket, head: Head, a: Answer, keepAliveHeader: string): number {
  const close = !head.keepAlive;
  const headText =
    `HTTP/1.1 ${a.status} ${REASON[a.status]}\r\ncontent-type: ${a.type}\r\ncontent-length: ${a.body.length}\r\n` +
    (a.allow === undefined ? '' : `allow: ${a.allow}\r\n`) +
    (a.retryAfter === undefined ? '' : `retry-after: ${a.retryAfter}\r\n`) +
    `Date: ${httpDate()}\r\n${close ? 'Connection: close\r\n\r\n' : keepAliveHeader}`;
  const bodyLength = head.method === 'GET' ? a.body.length : 0;
  const out = Buffer.allocUnsafe(headText.length + bodyLength);
  out.write(headText, 0, 'latin1');
  if (bodyLength > 0) a.body.copy(out, headText.length);
  if (close) socket.end(out);
  else socket.write(out);
  return bodyLength;
}

/** Answers one complete head (guards, then the shared resolver): counted, and logged (request-log.ts). */
function answerHead(deps: FastPathDeps, requests: RequestLog, socket: Socket, network: string, head: Head, keepAliveHeader: string): void {
  const source = socket.remoteAddress;
  const started = performance.now();
  const vm = deps.index().lookup(network, source);
  const path = normalisePath(head.target);
  const answer =
    admit(deps.guard, network, source ?? '', vm) ??
    checkToken(deps.guard, network, vm, path, head.token) ??
    answerGet(vm, path, deps.password, head.method);
  const bytes = writeAnswer(socket, head, answer, keepAliveHeader);
  const ms = performance.now() - started;
  deps.stats?.observeRequest(network, answer.status, ms / 1000);
  if (vm !== undefined) deps.stats?.contacts.answered(vm.facts.uuid, answer.status, head.method, head.target);
  else if (answer.status !== 429) deps.stats?.unknownCallers(network);
  if (requests.wants(vm !== undefined)) {
    const record = { at: Date.now(), network, vm: vm?.facts.uuid, src: source ?? '', method: head.method, path: head.target };
    requests.completed({ ...record, status: answer.status, bytes, ms }, 'fast');
  }
}

export function createFastPath(deps: FastPathDeps): (socket: TaggedSocket, handOver: HandOver) => void {
  const keepAliveHeader = `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(deps.keepAliveTimeoutMs / 1000)}\r\n\r\n`;
  const requests = deps.requests ?? new RequestLog(deps.log);

  return (socket, handOver) => {
    const network = socket[NETWORK] as string;
    let pending: Buffer | undefined;
    socket.on('error', () => undefined);

    const giveUp = (): void => {
      socket.removeListener('data', onData);
      socket.removeListener('timeout', onIdle);
      socket.removeListener('end', onEnd);
      socket.setTimeout(0);
      const rest = pending;
      pending = undefined;
      handOver(socket, rest);
    };
    // No request within headers_timeout: 408, as node:http answers; an idle keep-alive connection
    // is closed after keep_alive_timeout.
    let fresh = true;
    const onIdle = (): void => {
      if (fresh && socket.writable) socket.end('HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
    };

    const onData = (chunk: Buffer): void => {
      pending = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
      for (;;) {
        const end: number = pending.indexOf(CRLFCRLF);
        if (end < 0 || end > MAX_FAST_HEAD) return giveUp();
        const head = parseHead(pending.toString('latin1', 0, end));
        if (head === undefined || socket.remoteAddress === METADATA_IP) return giveUp();
        answerHead(deps, requests, socket, network, head, keepAliveHeader);
        fresh = false;
        if (!head.keepAlive) {
          socket.removeListener('data', onData);
          return;
        }
        pending = end + 4 === pending.length ? undefined : pending.subarray(end + 4);
        if (pending === undefined) {
          socket.setTimeout(deps.keepAliveTimeoutMs);
          return;
        }
      }
    };

    // The client closed its side (cloud-init does after each answer): close ours. (Sockets of an
    // http.Server are half-open capable, so nothing else would.)
    const onEnd = (): void => {
      socket.end();
    };

    socket.setTimeout(deps.headersTimeoutMs);
    socket.on('timeout', onIdle);
    socket.on('data', onData);
    socket.on('end', onEnd);
  };
}
