// `metrics_listen`: GET /metrics over TCP for Prometheus, in the daemon's own (host) namespace,
// beside /metrics on the admin socket. Deliberately small: /metrics and / (a link to it), 404 for
// any other path, 405 for any other method; short timeouts and a cap on connections; a failing
// render answers 500 and is logged. Nothing a client sends can reach the rest of the daemon.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { ImdsError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { formatListenAddress, type ListenAddress } from '../model/listen-address.ts';

export interface MetricsSource {
  /** The Prometheus text. */
  render(): Promise<string>;
  contentType: string;
}

/** At most this many connections at once: a scraper needs one, an operator's curl another. */
const MAX_CONNECTIONS = 32;
const INDEX = '<html><head><title>imds</title></head><body><h1>imds</h1><p><a href="/metrics">Metrics</a></p></body></html>\n';

function reply(res: ServerResponse, status: number, type: string, body: string, head: boolean, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
  res.end(head ? undefined : body);
}

function handler(source: MetricsSource, log: Logger): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const head = req.method === 'HEAD';
    if (req.method !== 'GET' && !head) return reply(res, 405, 'text/plain', '405 Method Not Allowed\n', false, { allow: 'GET, HEAD' });
    const path = (req.url ?? '').split('?')[0];
    if (path === '/') return reply(res, 200, 'text/html; charset=utf-8', INDEX, head);
    if (path !== '/metrics') return reply(res, 404, 'text/plain', '404 Not Found\n', head);
    source
      .render()
      .then(
        (body) => reply(res, 200, source.contentType, body, head),
        (err: unknown) => {
          log.error({ err: (err as Error).message }, 'metrics: rendering failed');
          reply(res, 500, 'text/plain', '500 Internal Server Error\n', head);
        },
      )
      .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'metrics: the answer could not be written'));
  };
}

export class MetricsListener {
  private server: Server | undefined;
  private readonly address: ListenAddress;
  private readonly source: MetricsSource;
  private readonly log: Logger;

  constructor(address: ListenAddress, source: MetricsSource, log: Logger) {
    this.address = address;
    this.source = source;
    this.log = log.child({ component: 'metrics-listener' });
  }

  /** Listens; METRICS_LISTEN_FAILED (nothing left open) when the address cannot be had. */
  async listen(): Promise<void> {
    if (this.server !== undefined) return;
    const server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxHeaderSize: 8192 });
    server.maxConnections = MAX_CONNECTIONS;
    server.on('request', handler(this.source, this.log));
    server.on('clientError', (_err, socket) => socket.destroy());
    const where = formatListenAddress(this.address);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) => {
        server.close();
        reject(
          new ImdsError('METRICS_LISTEN_FAILED', `metrics_listen: cannot listen on ${where}: ${err.message}`, {
            field: 'metrics_listen',
            cause: err,
          }),
        );
      });
      server.listen({ host: this.address.host, port: this.address.port, exclusive: true }, () => resolve());
    });
    server.on('error', (err) => this.log.error({ err: err.message }, 'metrics listener error'));
    this.server = server;
    this.log.info({ address: where }, 'serving metrics over TCP');
  }

  /**
   * Listens again after a failed hand-over: the successor that had the address may still be exiting,
   * so it is retried for a while; a failure is logged, never thrown (guests and the admin API serve on).
   */
  async relisten(retryForMs = 5000): Promise<void> {
    const deadline = Date.now() + retryForMs;
    for (;;) {
      try {
        return await this.listen();
      } catch (err) {
        if (Date.now() >= deadline) {
          this.log.error({ err: (err as Error).message }, 'metrics listener not reopened');
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    }
  }

  /** Stops listening and drops its connections (stop, or a hand-over: the successor listens next). */
  close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server === undefined) return Promise.resolve();
    return new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
