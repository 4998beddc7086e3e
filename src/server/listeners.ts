// One listening socket per network namespace, each wrapped in its own http.Server (so Node's
// header, request and keep-alive timeouts apply to every guest connection) and all feeding the
// same request handler. Every accepted socket is tagged with the network it arrived on.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { messageOf } from '../errors.ts';
import type { Logger } from '../log.ts';
import { listenInNetns } from '../netns/listen-in-netns.ts';

export const NETWORK = Symbol('imds.network');

export type TaggedSocket = Socket & { [NETWORK]?: string };

export type RequestHandler = (req: IncomingMessage, res: ServerResponse) => void;

export interface Timeouts {
  requestTimeoutMs: number;
  headersTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

interface Listener {
  netns: string;
  server: Server;
}

export class NetnsListeners {
  private readonly open = new Map<string, Listener>();

  private readonly handler: RequestHandler;
  private readonly port: number;
  private readonly timeouts: Timeouts;
  private readonly log: Logger;

  constructor(handler: RequestHandler, port: number, timeouts: Timeouts, log: Logger) {
    this.handler = handler;
    this.port = port;
    this.timeouts = timeouts;
    this.log = log;
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

  /** Opens the network's socket in `netns` (synchronously, through the addon) and starts serving. */
  async listen(network: string, netns: string): Promise<void> {
    if (this.open.has(network)) return;
    const fd = listenInNetns(netns, { port: this.port });
    const server = createServer(
      {
        requestTimeout: this.timeouts.requestTimeoutMs,
        headersTimeout: this.timeouts.headersTimeoutMs,
        keepAliveTimeout: this.timeouts.keepAliveTimeoutMs,
        connectionsCheckingInterval: Math.min(1000, this.timeouts.headersTimeoutMs),
        maxHeaderSize: 8192,
        noDelay: true,
      },
      this.handler,
    );
    server.on('connection', (socket: TaggedSocket) => {
      socket[NETWORK] = network;
    });
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      this.log.debug({ network, err: err.code ?? messageOf(err) }, 'client error');
      if (socket.writable && err.code !== 'ECONNRESET') {
        const status = err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
        socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
      }
      socket.destroy();
    });
    this.open.set(network, { netns, server });
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

  /** Stops accepting, drops the network's connections and releases the socket (and so the namespace). */
  async close(network: string): Promise<void> {
    const listener = this.open.get(network);
    if (listener === undefined) return;
    this.open.delete(network);
    const closed = new Promise<void>((resolve) => listener.server.close(() => resolve()));
    listener.server.closeAllConnections();
    await closed;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.networks().map((n) => this.close(n)));
  }
}
