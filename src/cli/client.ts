// The CLI's client of the admin API: HTTP over the daemon's Unix socket.
import { request } from 'node:http';
import { ImdsError, type ErrorCode, ERROR_CODES } from '../errors.ts';

export const DEFAULT_ADMIN_SOCKET = '/run/imds/admin.sock';

export function adminSocketOf(flag: string | undefined): string {
  return flag ?? process.env['IMDS_ADMIN_SOCKET'] ?? DEFAULT_ADMIN_SOCKET;
}

export class AdminClient {
  readonly socketPath: string;

  constructor(socketPath: string) {
    this.socketPath = socketPath;
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, body: raw } = await this.exchange(method, path, body);
    const text = raw.toString('utf8');
    const parsed: unknown = text === '' ? undefined : JSON.parse(text);
    if (status >= 400) throw errorOf(status, parsed);
    return parsed as T;
  }

  /** A binary answer (config drive images): the body as bytes; errors as `call` reports them. */
  async download(path: string): Promise<Buffer> {
    const { status, body } = await this.exchange('GET', path, undefined);
    if (status >= 400) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        parsed = undefined;
      }
      throw errorOf(status, parsed);
    }
    return body;
  }

  private async exchange(method: string, path: string, body: unknown): Promise<{ status: number; body: Buffer }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<{ status: number; body: Buffer }>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          method,
          path,
          headers: payload === undefined ? {} : { 'content-type': 'application/json', 'content-length': payload.length },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        },
      );
      req.on('error', (err: NodeJS.ErrnoException) => {
        const why =
          err.code === 'ENOENT'
            ? 'no such socket'
            : err.code === 'ECONNREFUSED'
              ? 'connection refused'
              : err.code === 'EACCES'
                ? 'permission denied (are you root or in admin_group?)'
                : err.message;
        reject(
          new ImdsError(
            'DAEMON_UNREACHABLE',
            `cannot reach the daemon at ${this.socketPath}: ${why}; is it running (imds serve, systemctl status imds)? Use --admin-socket or IMDS_ADMIN_SOCKET for another socket`,
            {
              cause: err,
            },
          ),
        );
      });
      req.end(payload);
    });
  }
}

function errorOf(status: number, parsed: unknown): ImdsError {
  const e = (parsed ?? {}) as { code?: string; message?: string; field?: string; details?: Record<string, unknown> };
  const code = (e.code !== undefined && e.code in ERROR_CODES ? e.code : 'INTERNAL') as ErrorCode;
  return new ImdsError(code, e.message ?? `HTTP ${status}`, {
    ...(e.field === undefined ? {} : { field: e.field }),
    ...(e.details === undefined ? {} : { details: e.details }),
  });
}
