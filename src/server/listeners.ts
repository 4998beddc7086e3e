// One listening socket per network namespace, each wrapped in its own http.Server (so Node's
// header, request and keep-alive timeouts apply to every guest connection) and all feeding the
// same request handler. Every accepted socket is tagged with the network it arrived on.
import { closeSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { Socket } from 'node:net';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { ListenSockets } from './listen-sockets.ts';
import type { NativePlane } from './native-plane.ts';
import { NETWORK, type ConnectionFront, type HandOver, type RequestHandler, type TaggedSocket } from './connection.ts';

const METHOD_NOT_ALLOWED_BODY = '405 Method Not Allowed\n';
const METHOD_NOT_ALLOWED =
  `HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Type: text/plain; ` +
  `charset=UTF-8\r\nContent-Length: ${METHOD_NOT_ALLOWED_BODY.length}\r\nConnection: close\r\n\r\n${METHOD_NOT_ALLOWED_BODY}`;

export { NETWORK, type ConnectionFront, type RequestHandler, type TaggedSocket } from './connection.ts';

export interface Timeouts {
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

interface Listener {
  netns: string;
  server: Server;
  /** Every open connection node:http (or the JS fast path) has. */
  sockets: Set<Socket>;
  /** Takes a connection (handed over by the native loop) with the bytes read from it. */
  accept: HandOver;
  /** The listening socket, when the native loop serves it. */
  nativeFd: number | undefined;
}

export class NetnsListeners {
  private readonly open = new Map<string, Listener>();

  private readonly handler: RequestHandler;
  private readonly sockets: ListenSockets;
  private readonly timeouts: Timeouts;
  private readonly log: Logger;
  private readonly front: ConnectionFront | undefined;
  private readonly native: NativePlane | undefined;

  /**
   * `sockets` gives each network its listening socket (adopted from a restart, or opened and
   * stored); `front` (the JS fast path), when given, sees every connection before node:http does.
   * With `native` (data_plane: native), the native loop listens and answers first, and hands what
   * it does not answer to `adopt`: then the front (requests with a session token, say) or node:http.
   */
  constructor(
    handler: RequestHandler,
    sockets: ListenSockets,
    timeouts: Timeouts,
    log: Logger,
    front?: ConnectionFront,
    native?: NativePlane,
  ) {
    this.handler = handler;
    this.sockets = sockets;
    this.timeouts = timeouts;
    this.log = log;
    this.front = front;
    this.native = native;
  }

  has(network: string): boolean {
    return this.open.has(network);
  }

  netnsOf(network: string): string | undefined {
    return this.open.get(network)?.netns;
  }

  networks(): string[] {
    return [...this.open.keys()];
  }

  /** Serves the network on its socket in `netns` (adopted, or opened through the addon). */
  async listen(network: string, netns: string): Promise<void> {
    if (this.open.has(network)) return;
    const fd = this.sockets.acquire(network, netns);
    const { server, sockets, accept } = guestServer(network, this.handler, this.timeouts, this.log, this.front);
    this.open.set(network, { netns, server, sockets, accept, nativeFd: this.native === undefined ? undefined : fd });
    if (this.native !== undefined) {
      try {
        this.native.listen(network, fd);
      } catch (err) {
        this.open.delete(network);
        throw err;
      }
      // node:http starts tracking connections (its header and request timeouts) when its server
      // listens; this one never does (the loop listens), so it is told it does.
      server.emit('listening');
      return;
    }
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ fd }, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      this.open.delete(network);
      throw err;
    });
    server.on('error', (err) => this.log.error({ network, err: messageOf(err) }, 'listener error'));
  }

  /**
   * The network is removed or its namespace rebuilt: stops accepting, drops its connections and
   * releases the socket for good (and so the namespace), in the store too.
   */
  async close(network: string): Promise<void> {
    const listener = this.open.get(network);
    if (listener === undefined) return;
    this.open.delete(network);
    this.sockets.released(network);
    this.native?.unlisten(network, true);
    const closed = new Promise<void>((resolve) => listener.server.close(() => resolve()));
    listener.server.closeAllConnections();
    for (const socket of listener.sockets) socket.destroy();
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2000).unref())]);
  }

  /**
   * The daemon stops: every listener stops accepting (the sockets stay in systemd's store, so
   * connections keep queuing for the next process), idle connections close, requests in flight
   * are answered (up to `drainMs`), then what is left is dropped.
   */
  async stopAll(drainMs = 1000): Promise<void> {
    const listeners = [...this.open.values()];
    for (const network of this.open.keys()) this.native?.unlisten(network, true, true);
    this.open.clear();
    for (const l of listeners) {
      l.server.close();
      l.server.closeIdleConnections();
    }
    const deadline = Date.now() + drainMs;
    const owed = (): boolean => listeners.some((l) => l.sockets.size > 0) || (this.native?.connections() ?? 0) > 0;
    while (owed() && Date.now() < deadline) {
      for (const l of listeners) l.server.closeIdleConnections();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const l of listeners) for (const socket of l.sockets) socket.destroy();
  }

  /**
   * A connection the native loop did not answer, with the bytes it read: node:http takes it as if
   * it had accepted it. Closed when its network is no longer served.
   */
  adopt(network: string | undefined, fd: number, bytes: Buffer): void {
    const listener = network === undefined ? undefined : this.open.get(network);
    if (listener === undefined) {
      closeSync(fd);
      return;
    }
    let socket: Socket;
    try {
      socket = new Socket({ fd, readable: true, writable: true, allowHalfOpen: true });
    } catch (err) {
      this.log.warn({ network, err: messageOf(err) }, 'a connection handed over by the native data plane could not be opened');
      closeSync(fd);
      return;
    }
    listener.accept(socket, bytes);
  }

  /** Each serving network's listening fd (for a hand-over to a new process). */
  fds(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [network, l] of this.open) {
      const fd = l.nativeFd ?? (l.server as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (typeof fd === 'number' && fd >= 0) out.set(network, fd);
    }
    return out;
  }
}

/**
 * One network's guest server, not yet listening: an http.Server (Node's header, request and
 * keep-alive timeouts; the Fastify handler) whose connections are tagged with the network and go
 * through `front` (the fast path) first. node:http's own connection listener (it attaches the
 * parser) runs only for the connections the front hands over.
 */
export function guestServer(
  network: string,
  handler: RequestHandler,
  timeouts: Timeouts,
  log: Logger,
  front?: ConnectionFront,
): { server: Server; sockets: Set<Socket>; accept: HandOver } {
  const server = createServer(
    {
      requestTimeout: timeouts.requestTimeoutMs,
      headersTimeout: timeouts.headersTimeoutMs,
      keepAliveTimeout: timeouts.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.min(1000, timeouts.headersTimeoutMs),
      maxHeaderSize: 8192,
      noDelay: true,
      // Nova ignores Host; so do the fast path and this (guests always send it anyway).
      requireHostHeader: false,
    },
    handler,
  );
  const httpConnection = server.listeners('connection')[0] as ((socket: Socket) => void) | undefined;
  if (typeof httpConnection !== 'function') throw new Error('node:http registered no connection listener');
  server.removeAllListeners('connection');
  const handOver: HandOver = (socket, pending) => {
    httpConnection.call(server, socket);
    if (pending !== undefined && pending.length > 0) socket.emit('data', pending);
  };
  const sockets = new Set<Socket>();
  const track = (socket: TaggedSocket): void => {
    socket[NETWORK] = network;
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };
  server.on('connection', (socket: TaggedSocket) => {
    track(socket);
    if (front === undefined) handOver(socket, undefined);
    else front(socket, handOver);
  });
  const accept: HandOver = (socket, pending) => {
    track(socket);
    socket.setNoDelay(true);
    if (front === undefined) return handOver(socket, pending);
    // The bytes the native loop read come first, once the front reads.
    if (pending !== undefined && pending.length > 0) socket.unshift(pending);
    front(socket, handOver);
  };
  // CONNECT is not served (node:http would drop the connection without a word): 405, as for every
  // method but GET and HEAD.
  server.on('connect', (_req: IncomingMessage, socket: Socket) => {
    socket.end(METHOD_NOT_ALLOWED);
    socket.destroySoon();
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    log.debug({ network, err: err.code ?? messageOf(err) }, 'client error');
    if (socket.writable && err.code !== 'ECONNRESET') {
      const status =
        err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? '408 Request Timeout'
          : err.code === 'HPE_HEADER_OVERFLOW'
            ? '431 Request Header Fields Too Large'
            : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  });
  return { server, sockets, accept };
}
